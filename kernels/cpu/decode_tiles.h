// The packed-tile GEMVs of the CPU one-token step (decode_step.cpp): out[b, n] = res + bias + sum_k W[n, k] x[b, k]
// over Packed<T> tiles of kTile output columns (decode_step.h), for up to kRows batch rows per pass over a tile.
// Inference only (no backward). Internal to decode_step.cpp.
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "cpu/decode_step.h"
#include "cpu/parallel.h"

namespace mmrec::cpu::decode_tiles {

constexpr int kTile = 16;  // output columns per packed tile: one 64-byte line of float32 per input element
constexpr int kRows = 4;   // batch rows per pass over a tile (8 accumulators of 8 floats)

// A GEMV over packed tiles: out[b, n_off + c] = res[b, n_off + c] + bias[n_off + c] + sum_k W[n, k] x[b, k_off + k].
template <class T>
struct Job {
  const Packed<T>* m;
  const T* x;
  int64_t ldx;
  T* out;
  int64_t ldo;
  const T* bias;  // nullptr: none
  const T* res;   // nullptr: none
  int64_t ldres;
};

// acc [nb][kTile] = x [nb rows, stride ldx][K] . tile [K][kTile], any element type.
template <class T>
void tile_generic(const T* w, int64_t K, const T* x, int64_t ldx, int nb, T* acc) {
  std::fill(acc, acc + nb * kTile, T(0));
  for (int64_t k = 0; k < K; ++k) {
    const T* wk = w + k * kTile;
    for (int r = 0; r < nb; ++r) {
      const T xv = x[r * ldx + k];
      T* a = acc + r * kTile;
      for (int c = 0; c < kTile; ++c) a[c] += xv * wk[c];
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MMREC_AVX2 __attribute__((target("avx2,fma")))

template <int NB>
MMREC_AVX2 MMREC_INLINE void tile_avx2_rows(const float* w, int64_t K, const float* x, int64_t ldx, float* acc) {
  __m256 lo[NB], hi[NB];
  for (int r = 0; r < NB; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  int64_t k = 0;
  // One row: four independent FMA chains per half hide the FMA latency. No software prefetch: 2 KiB ahead made the
  // small preset's step slower (standalone harness, 12 interleaved runs, load 3.2-4.7: median 3.45 against 3.14
  // ms/token with 1 thread, 4.30 against 3.80 with 2).
  if (NB == 1) {
    __m256 lo1 = _mm256_setzero_ps(), hi1 = lo1, lo2 = lo1, hi2 = lo1, lo3 = lo1, hi3 = lo1;
    for (; k + 4 <= K; k += 4) {
      const float* wk = w + k * kTile;
      const __m256 xa = _mm256_broadcast_ss(x + k), xb = _mm256_broadcast_ss(x + k + 1),
                   xc = _mm256_broadcast_ss(x + k + 2), xd = _mm256_broadcast_ss(x + k + 3);
      lo[0] = _mm256_fmadd_ps(xa, _mm256_load_ps(wk), lo[0]);
      hi[0] = _mm256_fmadd_ps(xa, _mm256_load_ps(wk + 8), hi[0]);
      lo1 = _mm256_fmadd_ps(xb, _mm256_load_ps(wk + 16), lo1);
      hi1 = _mm256_fmadd_ps(xb, _mm256_load_ps(wk + 24), hi1);
      lo2 = _mm256_fmadd_ps(xc, _mm256_load_ps(wk + 32), lo2);
      hi2 = _mm256_fmadd_ps(xc, _mm256_load_ps(wk + 40), hi2);
      lo3 = _mm256_fmadd_ps(xd, _mm256_load_ps(wk + 48), lo3);
      hi3 = _mm256_fmadd_ps(xd, _mm256_load_ps(wk + 56), hi3);
    }
    lo[0] = _mm256_add_ps(_mm256_add_ps(lo[0], lo1), _mm256_add_ps(lo2, lo3));
    hi[0] = _mm256_add_ps(_mm256_add_ps(hi[0], hi1), _mm256_add_ps(hi2, hi3));
  }
  for (; k < K; ++k) {
    const float* wk = w + k * kTile;
    const __m256 w0 = _mm256_load_ps(wk), w1 = _mm256_load_ps(wk + 8);
    for (int r = 0; r < NB; ++r) {
      const __m256 xr = _mm256_broadcast_ss(x + r * ldx + k);
      lo[r] = _mm256_fmadd_ps(xr, w0, lo[r]);
      hi[r] = _mm256_fmadd_ps(xr, w1, hi[r]);
    }
  }
  for (int r = 0; r < NB; ++r) {
    _mm256_storeu_ps(acc + r * kTile, lo[r]);
    _mm256_storeu_ps(acc + r * kTile + 8, hi[r]);
  }
}

inline MMREC_AVX2 void tile_avx2(const float* w, int64_t K, const float* x, int64_t ldx, int nb, float* acc) {
  switch (nb) {
    case 1: return tile_avx2_rows<1>(w, K, x, ldx, acc);
    case 2: return tile_avx2_rows<2>(w, K, x, ldx, acc);
    case 3: return tile_avx2_rows<3>(w, K, x, ldx, acc);
    default: return tile_avx2_rows<4>(w, K, x, ldx, acc);
  }
}

inline bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
inline inline bool has_avx2() { return false; }
inline void tile_avx2(const float*, int64_t, const float*, int64_t, int, float*) {}
#endif

template <class T>
void tile(const T* w, int64_t K, const T* x, int64_t ldx, int nb, T* acc) {
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx2()) return tile_avx2(w, K, x, ldx, nb, acc);
  }
  tile_generic(w, K, x, ldx, nb, acc);
}

// Tile t of `job` for all B rows.
template <class T>
void run_tile(const Job<T>& job, const typename Packed<T>::Tile& t, int64_t B) {
  alignas(64) T acc[kRows * kTile];
  const T* w = job.m->w + t.w_off;
  for (int64_t b0 = 0; b0 < B; b0 += kRows) {
    const int nb = int(std::min<int64_t>(kRows, B - b0));
    tile(w, t.K, job.x + b0 * job.ldx + t.k_off, job.ldx, nb, acc);
    for (int r = 0; r < nb; ++r) {
      T* out = job.out + (b0 + r) * job.ldo + t.n_off;
      const T* res = job.res ? job.res + (b0 + r) * job.ldres + t.n_off : nullptr;
      const T* bias = job.bias ? job.bias + t.n_off : nullptr;
      for (int c = 0; c < t.n_valid; ++c) {
        T v = acc[r * kTile + c];
        if (bias) v += bias[c];
        if (res) v += res[c];
        out[c] = v;
      }
    }
  }
}

// Pulls the packed weights of `m` into this core's caches (64-byte lines) until `flag` is set: a helper waiting for
// thread 0's per-row work (~15 us per block of `small`) loads the out_proj weights (256 KiB) the next phase streams.
template <class T>
void warm(const Packed<T>& m, const std::atomic<int64_t>& flag) {
#if defined(__x86_64__)
  const char* p = reinterpret_cast<const char*>(m.w);
  const int64_t bytes = m.packed * int64_t(sizeof(T));
  for (int64_t off = 0; off < bytes; off += 64) {
    if ((off & 4095) == 0 && flag.load(std::memory_order_relaxed)) return;
    _mm_prefetch(p + off, _MM_HINT_T0);
  }
#endif
}

}  // namespace mmrec::cpu::decode_tiles
