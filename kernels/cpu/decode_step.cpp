// decode_step: MMRecLM's one-token step for B rows (python/mmrec_model/decode.py, step_tensors), per block:
//   [z f q v (g) c] = W_in rms(x) + b_in; h = sigmoid(f) h + z sigmoid(W_g h + b_g | g); m_n += (1 - g_n)(v - m_n);
//   r = read over {h, m, slots}; y = x + W_o r; x = y + W_down swiglu(W_up rms(y)); slots updated on a chunk's
//   last token; logits = W_lm rms(x). Inference only (no backward).
// Threads (decode_step.h): the GEMV tiles of a phase go to whichever thread takes them next from an atomic counter;
// the per-row work between GEMVs (gates, banks, read, slot update) runs on the caller's thread; a thread recomputes
// the RMSNorm / SwiGLU input of a GEMV into its private buffer when it takes its first tile of the phase.
#include "cpu/decode_step.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu/decode_tiles.h"
#include "cpu/scalar.h"

namespace mmrec::cpu {
namespace {

using decode_tiles::Job;
using decode_tiles::kTile;
using decode_tiles::run_tile;
using decode_tiles::warm;

constexpr int64_t kGrain = 16384;  // weights per take of a GEMV phase's tiles (64 KiB of float32: ~4 tiles of K=256)

MMREC_INLINE void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Spins briefly, then yields (a loaded machine may be running the awaited thread on this core), until `a` reaches
// `target`. Spinning 16x longer before the yield was no faster on the loaded 2-core machine (within its noise).
constexpr int kSpins = 2000;
template <class I>
void wait_for(const std::atomic<I>& a, I target) {
  for (int i = 0; a.load(std::memory_order_acquire) < target; ++i) {
    if (i < kSpins) cpu_relax();
    else std::this_thread::yield();
  }
}

// out[b] = x[b] rsqrt(mean(x[b]^2) + eps) * w for B rows of n (decode._rms).
template <class T>
void rms_rows(const T* x, int64_t B, int64_t n, const T* w, T eps, T* out) {
  for (int64_t b = 0; b < B; ++b) {
    const T* xb = x + b * n;
    T ss = T(0);
    for (int64_t i = 0; i < n; ++i) ss += xb[i] * xb[i];
    const T inv = T(1) / std::sqrt(eps + ss / T(n));
    for (int64_t i = 0; i < n; ++i) out[b * n + i] = xb[i] * inv * w[i];
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------- packing
template <class T>
void Packed<T>::add(const T* W, int64_t n_out, int64_t K, int64_t k_off, int64_t n_off) {
  pending_.push_back({W, n_out, K, k_off, n_off});
}

template <class T>
int64_t Packed<T>::size() const {
  int64_t size = 0;
  for (const auto& p : pending_) size += (p.n_out + kTile - 1) / kTile * kTile * p.K;
  return size;
}

template <class T>
void Packed<T>::finish(T* dst) {
  w = dst;
  packed = size();
  int64_t off = 0;
  for (const auto& p : pending_) {
    for (int64_t n0 = 0; n0 < p.n_out; n0 += kTile) {
      const int32_t valid = int32_t(std::min<int64_t>(kTile, p.n_out - n0));
      tiles.push_back({off, int32_t(p.K), int32_t(p.k_off), int32_t(p.n_off + n0), valid});
      for (int64_t k = 0; k < p.K; ++k)
        for (int c = 0; c < kTile; ++c) dst[off + k * kTile + c] = c < valid ? p.W[(n0 + c) * p.K + k] : T(0);
      off += p.K * kTile;
    }
  }
  pending_.clear();
}

namespace {
// `bytes` aligned to 2 MiB and advised into transparent huge pages (this machine's THP mode is `madvise`): the small
// preset's 21.5 MiB of float32 weights span ~5,500 4-KiB pages per token, more than the core's L2 TLB holds.
void* alloc_weights(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  bytes = (std::max<size_t>(bytes, 1) + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, bytes);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, bytes, MADV_HUGEPAGE);  // advice only: 4-KiB pages still work
#endif
  return p;
}
}  // namespace

template <class T>
DecodeStep<T>::DecodeStep(const DecodeDims& d, const T* embed, const T* norm_w, const T* lm_head,
                          const BlockParams<T>* blocks)
    : d_(d), W_(4 * d.D + (d.linear ? d.D : 0) + d.N), embed_(embed, embed + d.V * d.D), norm_w_(norm_w, norm_w + d.D) {
  const int64_t D = d.D, N = d.N, hd = D / d.H;
  blocks_.resize(d.L);
  for (int64_t l = 0; l < d.L; ++l) {
    const BlockParams<T>& p = blocks[l];
    Block& b = blocks_[l];
    b.norm_in.assign(p.norm_in, p.norm_in + D);
    b.norm_ffn.assign(p.norm_ffn, p.norm_ffn + D);
    b.b_in.assign(p.b_in, p.b_in + W_);
    b.sig_base.resize(N * D);
    for (int64_t i = 0; i < N * D; ++i) b.sig_base[i] = sigmoid<T>(p.base[i]);
    b.w_a.assign(p.w_a, p.w_a + D);
    b.b_a = p.b_a[0];
    b.in_proj.add(p.w_in, W_, D, 0, 0);
    if (!d.linear) {
      b.b_g.assign(p.b_g, p.b_g + D);
      for (int64_t h = 0; h < d.H; ++h) b.w_g.add(p.w_g + h * hd * hd, hd, hd, h * hd, h * hd);
    }
    b.w_o.add(p.w_o, D, D, 0, 0);
    b.w_up.add(p.w_up, 2 * d.F, D, 0, 0);
    b.w_down.add(p.w_down, D, d.F, 0, 0);
    b.w_key.add(p.w_key, D, D, 0, 0);
  }
  lm_head_.add(lm_head, d.V, D, 0, 0);
  // one arena in the order of a step's phases (w_key, read only on a chunk's last token, after each block's down)
  std::vector<Packed<T>*> order;
  for (Block& b : blocks_)
    for (Packed<T>* m : {&b.in_proj, &b.w_g, &b.w_o, &b.w_up, &b.w_down, &b.w_key}) order.push_back(m);
  order.push_back(&lm_head_);
  int64_t total = 0;
  for (const Packed<T>* m : order) total += (m->size() + 15) / 16 * 16;  // each matrix 64-byte aligned
  arena_ = std::unique_ptr<T[], void (*)(void*)>(static_cast<T*>(alloc_weights(size_t(total) * sizeof(T))), std::free);
  int64_t off = 0;
  for (Packed<T>* m : order) {
    const int64_t n = m->size();
    m->finish(arena_.get() + off);
    off += (n + 15) / 16 * 16;
  }
}

template <class T>
void DecodeStep<T>::reserve(int64_t B, int threads) {
  if (B <= cap_B_ && threads <= cap_threads_) return;
  cap_B_ = std::max(cap_B_, B);
  cap_threads_ = std::max(cap_threads_, threads);
  const int64_t D = d_.D, F = d_.F, Bc = cap_B_;
  x_.assign(Bc * D, T(0));
  y_.assign(Bc * D, T(0));
  r_.assign(Bc * D, T(0));
  p_.assign(Bc * D, T(0));
  proj_.assign(Bc * W_, T(0));
  gv_.assign(Bc * 2 * F, T(0));
  key_.assign(2 * D + 2 * (1 + d_.N + d_.S), T(0));
  u_priv_.assign(cap_threads_ * Bc * D, T(0));
  a_priv_.assign(cap_threads_ * Bc * F, T(0));
  update_.assign(Bc, 0);
}

// ------------------------------------------------------------------------------------------- the step
namespace {

// Thread 0's part of block l between in_proj and out_proj, row b: gates, h, banks, chunk sum, read -> r [D], then
// the slot update if the row completes its chunk. proj [W], p [D] (W_g h + b_g; unused by the linear variant),
// mem [1 + N + S, D], csum [D]; scratch: key [D], s_mean [D], two [I] vectors.
template <class T>
void mix_row(const DecodeDims& d, int64_t W, const typename DecodeStep<T>::Block& blk, const T* proj, const T* p,
             T* mem, T* csum, T* r, bool update, T* scratch) {
  const int64_t D = d.D, N = d.N, S = d.S, I = 1 + N + S, dh = D / d.Hr;
  const T* z = proj;
  const T* f = proj + D;
  const T* q = proj + 2 * D;
  const T* v = proj + 3 * D;
  const T* c = proj + W - N;
  const T* gate = d.linear ? proj + 4 * D : p;  // sigma(g) or sigma(W_g h + b_g)
  T* h = mem;
  for (int64_t i = 0; i < D; ++i) h[i] = h[i] * sigmoid<T>(f[i]) + z[i] * sigmoid<T>(gate[i]);
  const T lo = T(d.mdi_eps), hi = T(1 - d.mdi_eps);
  for (int64_t n = 0; n < N; ++n) {
    const T sc = sigmoid<T>(c[n]);
    T* m = mem + (1 + n) * D;
    const T* sb = blk.sig_base.data() + n * D;
    for (int64_t i = 0; i < D; ++i) m[i] += clamp<T>(T(1) - sb[i] * sc, lo, hi) * (v[i] - m[i]);
  }
  for (int64_t i = 0; i < D; ++i) csum[i] += h[i];

  T* key = scratch;
  T* s_mean = scratch + D;
  T* rho = scratch + 2 * D;
  T* wt = rho + I;
  const T eps = T(d.eps), scale = T(1) / std::sqrt(T(dh));
  for (int64_t hr = 0; hr < d.Hr; ++hr) {
    const T* qh = q + hr * dh;
    T top = -INFINITY;
    for (int64_t it = 0; it < I; ++it) {
      const T* item = mem + it * D + hr * dh;
      T ss = T(0), dot = T(0);
      for (int64_t j = 0; j < dh; ++j) {
        ss += item[j] * item[j];
        dot += item[j] * qh[j];
      }
      rho[it] = T(1) / std::sqrt(eps + ss / T(dh));
      wt[it] = dot * rho[it] * scale;
      top = std::max(top, wt[it]);
    }
    T total = T(0);
    for (int64_t it = 0; it < I; ++it) total += (wt[it] = std::exp(wt[it] - top));
    T* rh = r + hr * dh;
    std::fill(rh, rh + dh, T(0));
    for (int64_t it = 0; it < I; ++it) {
      const T a = wt[it] / total * rho[it];
      const T* item = mem + it * D + hr * dh;
      for (int64_t j = 0; j < dh; ++j) rh[j] += a * item[j];
    }
  }

  if (!update) return;
  T dot_a = T(0);
  for (int64_t i = 0; i < D; ++i) {
    s_mean[i] = csum[i] / T(d.C);
    dot_a += blk.w_a[i] * s_mean[i];
  }
  const Job<T> kj{&blk.w_key, s_mean, D, key, D, nullptr, nullptr, 0};
  for (const auto& t : blk.w_key.tiles) run_tile(kj, t, 1);
  const T strength = sigmoid<T>(blk.b_a + dot_a);
  T* slots = mem + (1 + N) * D;
  T* addr = rho;  // [S] scores, then weights
  T top = -INFINITY;
  const T inv_sqrt_d = T(1) / std::sqrt(T(D));
  for (int64_t s = 0; s < S; ++s) {
    T dot = T(0);
    for (int64_t i = 0; i < D; ++i) dot += slots[s * D + i] * key[i];
    addr[s] = dot * inv_sqrt_d;
    top = std::max(top, addr[s]);
  }
  T total = T(0);
  for (int64_t s = 0; s < S; ++s) total += (addr[s] = std::exp(addr[s] - top));
  for (int64_t s = 0; s < S; ++s) {
    const T coef = strength * (addr[s] / total);
    T* slot = slots + s * D;
    for (int64_t i = 0; i < D; ++i) slot[i] += coef * (s_mean[i] - slot[i]);
  }
  std::fill(csum, csum + D, T(0));
}

}  // namespace

template <class T>
void DecodeStep<T>::work(int worker) {
  const int64_t B = B_, D = d_.D, F = d_.F, V = d_.V, I = 1 + d_.N + d_.S, L = d_.L;
  const T eps = T(d_.eps);
  T* u = u_priv_.data() + int64_t(worker) * cap_B_ * D;
  T* a = a_priv_.data() + int64_t(worker) * cap_B_ * F;
  // Takes the tiles of phase `ph` (first's, then second's if any) in runs of ~kGrain weights (one atomic per run:
  // the counters' cache line moves between cores on every take); `prepare` fills this thread's input buffer before
  // its first run (the phase cannot complete, so its input cannot change, while a run is out).
  auto phase = [&](int64_t ph, const Job<T>& first, const Job<T>* second, auto&& prepare) {
    const int64_t n0 = int64_t(first.m->tiles.size()), n = n0 + (second ? int64_t(second->m->tiles.size()) : 0);
    const int64_t grain = std::max<int64_t>(1, kGrain / (int64_t(first.m->tiles[0].K) * kTile));
    Phase& sync = phases_[ph];
    bool ready = false;
    for (int64_t i0; (i0 = sync.next.fetch_add(grain, std::memory_order_acq_rel)) < n;) {
      if (!ready) {
        prepare();
        ready = true;
      }
      const int64_t i1 = std::min(n, i0 + grain);
      for (int64_t i = i0; i < i1; ++i) {
        const Job<T>& job = i < n0 ? first : *second;
        run_tile(job, job.m->tiles[i < n0 ? i : i - n0], B);
      }
      sync.done.fetch_add(i1 - i0, std::memory_order_release);
      if (profile_)
        for (int64_t i = i0; i < i1; ++i)
          elems_[worker].n += double((i < n0 ? first : *second).m->tiles[i < n0 ? i : i - n0].K) * kTile;
    }
  };
  // worker 0 stamps the end of each wait (profile_)
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  int64_t stamp_i = 0;
  auto stamp = [&] {
    if (!profile_ || worker != 0) return;
    const auto now = std::chrono::steady_clock::now();
    prof_.phase_ns[stamp_i++] += double(std::chrono::duration_cast<std::chrono::nanoseconds>(now - last).count());
    last = now;
  };
  auto tiles = [](const Packed<T>& m) { return int64_t(m.tiles.size()); };
  for (int64_t l = 0; l < L; ++l) {
    const Block& blk = blocks_[l];
    T* m = mem_[l];
    const int64_t p_in = 4 * l, p_o = p_in + 1, p_up = p_in + 2, p_down = p_in + 3;
    if (l > 0) {
      wait_for(phases_[p_in - 1].done, tiles(blocks_[l - 1].w_down));
      stamp();
    }
    const Job<T> in_job{&blk.in_proj, u, D, proj_.data(), W_, blk.b_in.data(), nullptr, 0},
        g_job{&blk.w_g, m, I * D, p_.data(), D, blk.b_g.data(), nullptr, 0};
    phase(p_in, in_job, d_.linear ? nullptr : &g_job, [&] { rms_rows(x_.data(), B, D, blk.norm_in.data(), eps, u); });
    if (worker == 0) {
      wait_for(phases_[p_in].done, tiles(blk.in_proj) + (d_.linear ? 0 : tiles(blk.w_g)));
      stamp();
      for (int64_t b = 0; b < B; ++b)
        mix_row<T>(d_, W_, blk, &proj_[b * W_], &p_[b * D], m + b * I * D, chunk_sum_[l] + b * D, &r_[b * D],
                   update_[b], key_.data());
      mixed_[l].set.store(1, std::memory_order_release);
      stamp();
    }
    if (worker != 0) warm(blk.w_o, mixed_[l].set);
    wait_for(mixed_[l].set, int64_t(1));
    const Job<T> o_job{&blk.w_o, r_.data(), D, y_.data(), D, nullptr, x_.data(), D};
    phase(p_o, o_job, nullptr, [] {});
    wait_for(phases_[p_o].done, tiles(blk.w_o));
    stamp();
    const Job<T> up_job{&blk.w_up, u, D, gv_.data(), 2 * F, nullptr, nullptr, 0};
    phase(p_up, up_job, nullptr, [&] { rms_rows(y_.data(), B, D, blk.norm_ffn.data(), eps, u); });
    wait_for(phases_[p_up].done, tiles(blk.w_up));
    stamp();
    const Job<T> down_job{&blk.w_down, a, F, x_.data(), D, nullptr, y_.data(), D};
    phase(p_down, down_job, nullptr, [&] {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < F; ++i) {
          const T g = gv_[b * 2 * F + i];
          a[b * F + i] = g * sigmoid<T>(g) * gv_[b * 2 * F + F + i];
        }
    });
  }
  wait_for(phases_[4 * L - 1].done, tiles(blocks_[L - 1].w_down));
  stamp();
  const Job<T> lm_job{&lm_head_, u, D, logits_, V, nullptr, nullptr, 0};
  phase(4 * L, lm_job, nullptr, [&] { rms_rows(x_.data(), B, D, norm_w_.data(), eps, u); });
  if (worker == 0) wait_for(phases_[4 * L].done, tiles(lm_head_));
  stamp();
}

template <class T>
void DecodeStep<T>::helper_loop(int worker) {
  uint64_t seen = epoch_.load();
  for (;;) {
    // between steps: spin ~0.1 ms (the caller samples the next token meanwhile), then sleep
    for (int i = 0; i < 20000 && epoch_.load(std::memory_order_acquire) == seen && !stop_.load(); ++i) cpu_relax();
    if (epoch_.load() == seen && !stop_.load()) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return epoch_.load() != seen || stop_.load(); });
    }
    if (stop_.load()) return;
    seen = epoch_.load();
    active_.fetch_add(1);           // then look: run() closes the step, then waits for active_ == 0
    if (open_.load()) work(worker);
    active_.fetch_sub(1);
  }
}

template <class T>
void DecodeStep<T>::start_helpers(int n) {
  for (int w = 1; w <= n; ++w) helpers_.emplace_back([this, w] { helper_loop(w); });
}

template <class T>
void DecodeStep<T>::stop_helpers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (auto& t : helpers_) t.join();
  helpers_.clear();
  stop_.store(false);
}

template <class T>
DecodeStep<T>::~DecodeStep() {
  stop_helpers();
}

template <class T>
void DecodeStep<T>::run(const int64_t* tokens, int64_t B, T* const* mem, T* const* chunk_sum, int64_t* pos, T* logits,
                        int threads) {
  std::lock_guard<std::mutex> serial(run_mu_);
  threads = std::max(threads, 1);
  if (size_t(threads - 1) != helpers_.size()) {
    stop_helpers();
    reserve(B, threads);
    start_helpers(threads - 1);
  }
  reserve(B, threads);
  const int64_t D = d_.D, n_phases = 4 * d_.L + 1;
  if (!phases_) {
    phases_.reset(new Phase[n_phases]);
    mixed_.reset(new Flag[d_.L]);
  }
  for (int64_t p = 0; p < n_phases; ++p) {
    phases_[p].next.store(0, std::memory_order_relaxed);
    phases_[p].done.store(0, std::memory_order_relaxed);
  }
  for (int64_t l = 0; l < d_.L; ++l) mixed_[l].set.store(0, std::memory_order_relaxed);
  if (!elems_ || cap_threads_ > int(prof_.worker_elems.size())) {
    elems_.reset(new Elems[cap_threads_]);
    prof_.worker_elems.resize(cap_threads_, 0.0);
  }
  for (int w = 0; w < cap_threads_; ++w) elems_[w].n = 0;
  B_ = B;
  mem_ = mem;
  chunk_sum_ = chunk_sum;
  logits_ = logits;
  for (int64_t b = 0; b < B; ++b) {
    update_[b] = (pos[b] % d_.C) == d_.C - 1;
    std::memcpy(&x_[b * D], &embed_[tokens[b] * D], D * sizeof(T));
  }
  if (!helpers_.empty()) {
    open_.store(true);
    {
      std::lock_guard<std::mutex> lock(mu_);
      epoch_.fetch_add(1);
    }
    cv_.notify_all();
  }
  work(0);
  if (!helpers_.empty()) {
    open_.store(false);  // a helper that has not joined by now stays out; one that has is waited for
    for (int i = 0; active_.load() != 0; ++i) {
      if (i < kSpins) cpu_relax();
      else std::this_thread::yield();
    }
  }
  for (int64_t b = 0; b < B; ++b) pos[b] += 1;
  if (profile_) {
    for (int w = 0; w < cap_threads_; ++w) prof_.worker_elems[w] += elems_[w].n;
    prof_.steps += 1;
  }
}

template <class T>
DecodeProfile DecodeStep<T>::profile() const {
  std::lock_guard<std::mutex> serial(run_mu_);
  return prof_;
}

template <class T>
void DecodeStep<T>::set_profile(bool on) {
  std::lock_guard<std::mutex> serial(run_mu_);
  profile_ = on;
  if (on) {
    prof_.phase_ns.assign(5 * d_.L + 1, 0.0);
    std::fill(prof_.worker_elems.begin(), prof_.worker_elems.end(), 0.0);
    prof_.steps = 0;
  }
}

template struct Packed<float>;
template struct Packed<double>;
template class DecodeStep<float>;
template class DecodeStep<double>;

}  // namespace mmrec::cpu
