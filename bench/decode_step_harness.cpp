// The CPU one-token step (kernels/cpu/decode_step.cpp) alone, without Python or torch: DecodeStep<float> on the
// `small` preset's shapes (V 8192, D 256, 4 blocks, d_ffn 704; V and L optionally from the command line) with random
// weights, B = 1, greedy tokens. Prints the median (and min) of 5 runs of n/5 tokens, then one profiled run: the
// phase times summed over the blocks (us/token) and the share of the weights each thread streamed.
// Build and run from the repository root:
//   g++ -O3 -fno-math-errno -fno-trapping-math -std=c++17 -pthread -I kernels bench/decode_step_harness.cpp
//       kernels/cpu/decode_step.cpp -o /tmp/decode_step_harness
//   /tmp/decode_step_harness THREADS [N [V [L]]]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/decode_step.h"

using namespace mmrec::cpu;

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 2, n = argc > 2 ? atoi(argv[2]) : 2000;
  DecodeDims d{};
  d.V = argc > 3 ? atoi(argv[3]) : 8192;
  d.L = argc > 4 ? atoi(argv[4]) : 4;
  d.D = 256, d.N = 4, d.S = 8, d.H = 4, d.Hr = 4, d.C = 32, d.F = 704, d.linear = false, d.eps = 1e-6,
  d.mdi_eps = 1e-4;
  std::mt19937 gen(0);
  std::normal_distribution<float> normal(0, 0.05f);
  std::vector<std::vector<float>> keep;  // every weight, alive until the step has packed them
  auto weights = [&](size_t k) {
    keep.emplace_back(k);
    for (float& x : keep.back()) x = normal(gen);
    return keep.back().data();
  };
  const int64_t D = d.D, W = 4 * D + d.N, F = d.F, hd = D / d.H, I = 1 + d.N + d.S;
  const float *embed = weights(d.V * D), *norm_w = weights(D), *lm_head = weights(d.V * D);
  std::vector<BlockParams<float>> blocks(d.L);
  for (auto& b : blocks)
    b = {weights(D), weights(W * D), weights(W), weights(d.H * hd * hd), weights(D), weights(d.N * D),
         weights(D * D), weights(D), weights(1), weights(D * D), weights(D), weights(2 * F * D), weights(F * D)};
  DecodeStep<float> step(d, embed, norm_w, lm_head, blocks.data());
  keep.clear();

  std::vector<std::vector<float>> mem(d.L, std::vector<float>(I * D)), chunk_sum(d.L, std::vector<float>(D));
  std::vector<float*> mem_p, chunk_sum_p;
  for (int l = 0; l < d.L; ++l) mem_p.push_back(mem[l].data()), chunk_sum_p.push_back(chunk_sum[l].data());
  int64_t pos = 0, token = 5;
  std::vector<float> logits(d.V);
  auto one = [&] {
    step.run(&token, 1, mem_p.data(), chunk_sum_p.data(), &pos, logits.data(), threads);
    token = std::max_element(logits.begin(), logits.end()) - logits.begin();
  };
  for (int i = 0; i < 200; ++i) one();
  std::vector<double> ms;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < n / 5; ++i) one();
    ms.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() / (n / 5) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  printf("median %.3f ms/token (min %.3f)", ms[2], ms[0]);

  step.set_profile(true);
  for (int i = 0; i < n / 5; ++i) one();
  const DecodeProfile p = step.profile();
  const char* names[6] = {"in", "mix", "o", "up", "down", "lm"};
  double per[6] = {0}, total = 0, elems = 0;
  for (size_t i = 0; i < p.phase_ns.size(); ++i) {
    per[i + 1 == p.phase_ns.size() ? 5 : i % 5] += p.phase_ns[i];
    total += p.phase_ns[i];
  }
  printf(" | profiled %.3f ms:", total / p.steps / 1e6);
  for (int k = 0; k < 6; ++k) printf(" %s %.0f", names[k], per[k] / p.steps / 1e3);
  printf(" us; split");
  for (double e : p.worker_elems) elems += e;
  for (double e : p.worker_elems) printf(" %.2f", e / elems);
  printf("\n");
}
