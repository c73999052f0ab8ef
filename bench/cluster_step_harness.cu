// What a step of the nonlinear recurrence would pay to split one head's outputs over a thread-block cluster
// (issue 16, small batches): the exchange of h_t alone, without the matvec. Each step every block reads 8 entries
// of the head's d = 64 state vector from its own shared memory, forms its share of the next state from them
// (a dependent chain: step t+1 reads what step t wrote), writes that share into the shared memory of every block of
// its cluster and waits at one barrier:
//   block      one block per head, __syncthreads() (today's kernels: the whole head in one block);
//   cluster N  N blocks per head, each owning 64 / N outputs, distributed-shared-memory stores + cluster.sync().
// Prints us per step (T = 16,384 steps, 12 heads as in `base`, median of 5 timed launches). The split only pays
// if a step's exchange costs less than the matvec work it takes off each block.
// Build and run from the repository root (sm_90):
//   nvcc -O3 -std=c++17 -arch=sm_90 bench/cluster_step_harness.cu -o /tmp/cluster_step_harness
//   /tmp/cluster_step_harness
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace cg = cooperative_groups;

constexpr int kD = 64, kThreads = 128, kHeads = 12, kSteps = 16384;

__device__ __forceinline__ float share_of_next(const float* cur, int tid, float h) {
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < 8; ++k) s += cur[(tid + 8 * k) % kD];
  return 0.5f * h + 1e-3f * s;
}

__global__ void __launch_bounds__(kThreads) block_step(int T, float* out) {
  __shared__ float buf[2][kD];
  const int tid = threadIdx.x;
  float h = 1e-3f * tid;
  if (tid < kD) buf[0][tid] = h;
  __syncthreads();
  for (int t = 0; t < T; ++t) {
    h = share_of_next(buf[t & 1], tid, h);
    if (tid < kD) buf[(t + 1) & 1][tid] = h;
    __syncthreads();
  }
  if (tid < kD) out[blockIdx.x * kD + tid] = h;
}

template <int CL>
__global__ void __cluster_dims__(CL, 1, 1) __launch_bounds__(kThreads) cluster_step(int T, float* out) {
  __shared__ float buf[2][kD];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank()), tid = threadIdx.x;
  constexpr int kOwn = kD / CL;  // outputs of this block: rank * kOwn ..
  float h = 1e-3f * tid;
  if (tid < kD) buf[0][tid] = h;
  cluster.sync();
  for (int t = 0; t < T; ++t) {
    h = share_of_next(buf[t & 1], tid, h);
    if (tid < kOwn) {
      const int idx = rank * kOwn + tid;
#pragma unroll
      for (int r = 0; r < CL; ++r) *cluster.map_shared_rank(&buf[(t + 1) & 1][idx], r) = h;
    }
    cluster.sync();
  }
  if (tid < kOwn) out[(blockIdx.x / CL) * kD + rank * kOwn + tid] = h;
}

template <class Launch>
float median_ms(Launch launch) {
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  launch();
  std::vector<float> ms;
  for (int i = 0; i < 5; ++i) {
    cudaEventRecord(a);
    launch();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float x = 0.0f;
    cudaEventElapsedTime(&x, a, b);
    ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

int main() {
  float* out = nullptr;
  if (cudaMalloc(&out, kHeads * kD * sizeof(float)) != cudaSuccess) return 1;
  std::printf("%-12s%8s%12s%14s\n", "design", "blocks", "ms", "us per step");
  auto report = [&](const char* name, int blocks, float ms) {
    std::printf("%-12s%8d%12.3f%14.3f\n", name, blocks, ms, 1e3f * ms / kSteps);
  };
  report("block", kHeads, median_ms([&] { block_step<<<kHeads, kThreads>>>(kSteps, out); }));
  report("cluster 2", 2 * kHeads, median_ms([&] { cluster_step<2><<<2 * kHeads, kThreads>>>(kSteps, out); }));
  report("cluster 4", 4 * kHeads, median_ms([&] { cluster_step<4><<<4 * kHeads, kThreads>>>(kSteps, out); }));
  report("cluster 8", 8 * kHeads, median_ms([&] { cluster_step<8><<<8 * kHeads, kThreads>>>(kSteps, out); }));
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    std::printf("CUDA error: %s\n", cudaGetErrorString(err));
    return 1;
  }
  return 0;
}
