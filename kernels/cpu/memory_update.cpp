// memory_update: w_c = softmax_j(<M_c[j], k_c> / sqrt(D)); M_{c+1}[j] = M_c[j] + s_c w_c[j] (v_c - M_c[j]).
// backward (G = dL/dM_{c+1}): e_j = <G_j, v_c - M_c[j]>; ds_c = sum_j w_j e_j; da_j = w_j s_c (e_j - ds_c);
//   dv_c = s_c sum_j w_j G_j; dk_c = sum_j da_j M_c[j] / sqrt(D);
//   dL/dM_c[j] = grad_c[j] + (1 - s_c w_j) G_j + da_j k_c / sqrt(D).
// Saved for backward: Ms only (the op's output), S*D elements per chunk = S*D*4/C bytes per token at float32
// (2 KB at S = 64, D = 512, C = 64); the addressing weights are recomputed from it.
// Work per chunk and slot: forward 1 pass over D (update, store, and the next chunk's score in the same
// loop: ~5 flops per element); backward 1 pass over D (gradient step fused with the previous chunk's score
// and e_j: ~12 flops per element) reading grad, Ms[c] and Ms[c-1].
// Parallel over units = (batch, block of slots). With at least one batch per thread a unit is a whole batch
// and runs all its chunks without synchronisation, its state (S x D) in L2; otherwise the slots of a batch
// are split and the softmax couples them: one barrier per chunk, scores double-buffered by chunk parity,
// and dk/dv summed from per-block partials in block order, so results never depend on timing.
// Ms of 16 MB and more leaves through non-temporal stores (stream.h).
#include "cpu/memory_update.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/stream.h"

namespace mmrec::cpu {
namespace {

struct Units {
  int64_t blocks;  // slot blocks per batch
  int64_t count;   // B * blocks
  int threads;
  int64_t row_begin(int64_t blk, int64_t S) const { return blk * S / blocks; }
};

// Splitting a batch's slots costs a barrier per chunk (~1 us quiet, far more when cores are shared), so a
// block keeps at least kMinBlockWork elements of work per chunk.
constexpr int64_t kMinBlockWork = 1 << 14;

inline Units units_for(int64_t B, int64_t NC, int64_t S, int64_t D) {
  const int64_t work = B * NC * S * D;
  const int want = num_threads_for(work, B * S);
  int64_t blocks = B >= want ? 1 : std::min<int64_t>(S, (want + B - 1) / B);
  while (blocks > 1 && S * D / blocks < kMinBlockWork) --blocks;
  return {blocks, B * blocks, num_threads_for(work, B * blocks)};
}

template <class A>
MMREC_INLINE void softmax(const A* x, A* w, int64_t S) {
  A mx = x[0];
  for (int64_t j = 1; j < S; ++j) mx = std::max(mx, x[j]);
  A sum = A(0);
  for (int64_t j = 0; j < S; ++j) {
    w[j] = std::exp(x[j] - mx);
    sum += w[j];
  }
  const A inv = A(1) / sum;
  for (int64_t j = 0; j < S; ++j) w[j] *= inv;
}

// ------------------------------------------------------------------------------------------ forward
template <class T>
struct Fwd {
  using A = acc_t<T>;
  const T *M0, *key, *value, *strength;
  T* Ms;
  int64_t NC, S, D;
  A scale;
  A* score;     // [2, B, S]: scaled scores of chunk c in parity c % 2
  bool stream;  // Ms is written with non-temporal stores

  // Ms[b, 0] = M0[b] for rows [j0, j1), their state, and the scores of chunk 0.
  MMREC_INLINE void init(int64_t b, int64_t j0, int64_t j1, A* state) const {
    const T* k = key + b * NC * D;
    for (int64_t j = j0; j < j1; ++j) {
      const T* src = M0 + (b * S + j) * D;
      T* dst = Ms + (b * (NC + 1) * S + j) * D;
      A* st = state + (j - j0) * D;
      A dot = A(0);
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < D; ++i) {
        const A x = A(to_float(src[i]));
        st[i] = x;
        dst[i] = src[i];
        dot += x * A(to_float(k[i]));
      }
      score[b * S + j] = dot * scale;
    }
  }

  // Chunk c for rows [j0, j1) of batch b: write Ms[b, c+1] and the scores of chunk c+1.
  // tmp: D elements of T (a row before streaming).
  MMREC_INLINE void step(int64_t B, int64_t b, int64_t c, int64_t j0, int64_t j1, A* state, A* w, T* tmp) const {
    const A* sc = score + (c % 2) * B * S + b * S;
    A* sc_next = score + ((c + 1) % 2) * B * S + b * S;
    softmax(sc, w, S);
    const A s = A(to_float(strength[b * NC + c]));
    const T* vc = value + (b * NC + c) * D;
    const T* kn = c + 1 < NC ? key + (b * NC + c + 1) * D : nullptr;
    for (int64_t j = j0; j < j1; ++j) {
      const A coef = s * w[j];
      A* st = state + (j - j0) * D;
      T* dst = Ms + ((b * (NC + 1) + c + 1) * S + j) * D;
      if (stream) {
        if (kn) {
          A dot = A(0);
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < D; ++i) {
            const A x = st[i] + coef * (A(to_float(vc[i])) - st[i]);
            st[i] = x;
            dot += x * A(to_float(kn[i]));
          }
          sc_next[j] = dot * scale;
        } else {
#pragma omp simd
          for (int64_t i = 0; i < D; ++i) st[i] += coef * (A(to_float(vc[i])) - st[i]);
        }
        stream_row(dst, st, D, tmp);
      } else if (kn) {
        A dot = A(0);
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < D; ++i) {
          const A x = st[i] + coef * (A(to_float(vc[i])) - st[i]);
          st[i] = x;
          dst[i] = from_acc<T>(x);
          dot += x * A(to_float(kn[i]));
        }
        sc_next[j] = dot * scale;
      } else {
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) {
          const A x = st[i] + coef * (A(to_float(vc[i])) - st[i]);
          st[i] = x;
          dst[i] = from_acc<T>(x);
        }
      }
    }
  }
};

// ----------------------------------------------------------------------------------------- backward
template <class T>
struct Bwd {
  using A = acc_t<T>;
  const T *key, *value, *strength, *Ms, *grad;
  T *dM0, *dkey, *dvalue, *dstrength;
  int64_t NC, S, D, blocks;
  A scale;
  A* score;  // [2, B, S]: scaled scores of chunk c in parity c % 2
  A* e;      // [2, B, S]: <G_j, v_c - M_c[j]> of chunk c in parity c % 2
  A* part;   // [2, B, blocks, 2, D]: per-block dk, dv of chunk c in parity c % 2 (blocks > 1)

  const T* ms(int64_t b, int64_t c, int64_t j) const { return Ms + ((b * (NC + 1) + c) * S + j) * D; }

  // G = grad[b, NC] for rows [j0, j1), and the scores and e of the last chunk.
  MMREC_INLINE void init(int64_t B, int64_t b, int64_t j0, int64_t j1, A* state) const {
    const int64_t c = NC - 1, at = (c % 2) * B * S + b * S;
    const T* k = key + (b * NC + c) * D;
    const T* v = value + (b * NC + c) * D;
    for (int64_t j = j0; j < j1; ++j) {
      const T* g = grad + ((b * (NC + 1) + NC) * S + j) * D;
      const T* M = ms(b, c, j);
      A* G = state + (j - j0) * D;
      A dot = A(0), ej = A(0);
#pragma omp simd reduction(+ : dot, ej)
      for (int64_t i = 0; i < D; ++i) {
        const A Gi = A(to_float(g[i])), Mi = A(to_float(M[i]));
        G[i] = Gi;
        dot += Mi * A(to_float(k[i]));
        ej += Gi * (A(to_float(v[i])) - Mi);
      }
      score[at + j] = dot * scale;
      e[at + j] = ej;
    }
  }

  // Chunk c for rows [j0, j1) of block blk of batch b: G <- dL/dM_c, the block's dk_c and dv_c, and the
  // scores and e of chunk c-1 (or dM0 at c = 0).
  MMREC_INLINE void step(int64_t B, int64_t b, int64_t blk, int64_t c, int64_t j0, int64_t j1, A* state, A* w,
                         A* dk, A* dv) const {
    const int64_t at = (c % 2) * B * S + b * S, at_prev = ((c + 1) % 2) * B * S + b * S;
    softmax(score + at, w, S);
    const A s = A(to_float(strength[b * NC + c]));
    A ds = A(0);
    for (int64_t j = 0; j < S; ++j) ds += w[j] * e[at + j];
    if (blk == 0) dstrength[b * NC + c] = from_acc<T>(ds);
    const T* k = key + (b * NC + c) * D;
    const T* kp = c > 0 ? key + (b * NC + c - 1) * D : nullptr;
    const T* vp = c > 0 ? value + (b * NC + c - 1) * D : nullptr;
    for (int64_t i = 0; i < D; ++i) dk[i] = dv[i] = A(0);
    for (int64_t j = j0; j < j1; ++j) {
      const A sw = s * w[j], keep = A(1) - sw, da = sw * (e[at + j] - ds) * scale;
      const T* g = grad + ((b * (NC + 1) + c) * S + j) * D;
      const T* M = ms(b, c, j);
      A* G = state + (j - j0) * D;
      if (kp) {
        const T* Mp = ms(b, c - 1, j);
        A dot = A(0), ej = A(0);
#pragma omp simd reduction(+ : dot, ej)
        for (int64_t i = 0; i < D; ++i) {
          const A Gi = G[i], Mi = A(to_float(M[i])), Mpi = A(to_float(Mp[i]));
          dv[i] += sw * Gi;
          dk[i] += da * Mi;
          const A Gn = A(to_float(g[i])) + keep * Gi + da * A(to_float(k[i]));
          G[i] = Gn;
          dot += Mpi * A(to_float(kp[i]));
          ej += Gn * (A(to_float(vp[i])) - Mpi);
        }
        score[at_prev + j] = dot * scale;
        e[at_prev + j] = ej;
      } else {
        T* out = dM0 + (b * S + j) * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) {
          const A Gi = G[i];
          dv[i] += sw * Gi;
          dk[i] += da * A(to_float(M[i]));
          out[i] = from_acc<T>(A(to_float(g[i])) + keep * Gi + da * A(to_float(k[i])));
        }
      }
    }
  }

  void store(int64_t b, int64_t c, const A* dk, const A* dv) const {
    T* dk_out = dkey + (b * NC + c) * D;
    T* dv_out = dvalue + (b * NC + c) * D;
    for (int64_t i = 0; i < D; ++i) {
      dk_out[i] = from_acc<T>(dk[i]);
      dv_out[i] = from_acc<T>(dv[i]);
    }
  }

  // dk, dv of chunk c for batch b: the blocks' partials summed in block order.
  void reduce(int64_t B, int64_t b, int64_t c, A* dk, A* dv) const {
    const A* p = part + ((c % 2) * B + b) * blocks * 2 * D;
    for (int64_t i = 0; i < D; ++i) dk[i] = dv[i] = A(0);
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t i = 0; i < D; ++i) {
        dk[i] += p[(blk * 2) * D + i];
        dv[i] += p[(blk * 2 + 1) * D + i];
      }
    store(b, c, dk, dv);
  }
};

// ISA-dispatched bodies, one per storage type (the body of an OpenMP region is outlined at the baseline
// ISA, so dispatch happens per (unit, chunk) inside it; see parallel.h).
#define MMREC_MU_STEPS(T, SUFFIX)                                                                             \
  MMREC_ISA_DISPATCH void fwd_init_##SUFFIX(const Fwd<T>& op, int64_t b, int64_t j0, int64_t j1,             \
                                            acc_t<T>* state) {                                                \
    op.init(b, j0, j1, state);                                                                                \
  }                                                                                                           \
  MMREC_ISA_DISPATCH void fwd_step_##SUFFIX(const Fwd<T>& op, int64_t B, int64_t b, int64_t c, int64_t j0,    \
                                            int64_t j1, acc_t<T>* state, acc_t<T>* w, T* tmp) {               \
    op.step(B, b, c, j0, j1, state, w, tmp);                                                                  \
  }                                                                                                           \
  MMREC_ISA_DISPATCH void bwd_init_##SUFFIX(const Bwd<T>& op, int64_t B, int64_t b, int64_t j0, int64_t j1,   \
                                            acc_t<T>* state) {                                                \
    op.init(B, b, j0, j1, state);                                                                             \
  }                                                                                                           \
  MMREC_ISA_DISPATCH void bwd_step_##SUFFIX(const Bwd<T>& op, int64_t B, int64_t b, int64_t blk, int64_t c,   \
                                            int64_t j0, int64_t j1, acc_t<T>* state, acc_t<T>* w,             \
                                            acc_t<T>* dk, acc_t<T>* dv) {                                     \
    op.step(B, b, blk, c, j0, j1, state, w, dk, dv);                                                          \
  }                                                                                                           \
  void init(const Fwd<T>& op, int64_t b, int64_t j0, int64_t j1, acc_t<T>* state) {                           \
    fwd_init_##SUFFIX(op, b, j0, j1, state);                                                                  \
  }                                                                                                           \
  void step(const Fwd<T>& op, int64_t B, int64_t b, int64_t c, int64_t j0, int64_t j1, acc_t<T>* state,       \
            acc_t<T>* w, T* tmp) {                                                                            \
    fwd_step_##SUFFIX(op, B, b, c, j0, j1, state, w, tmp);                                                    \
  }                                                                                                           \
  void init(const Bwd<T>& op, int64_t B, int64_t b, int64_t j0, int64_t j1, acc_t<T>* state) {                \
    bwd_init_##SUFFIX(op, B, b, j0, j1, state);                                                               \
  }                                                                                                           \
  void step(const Bwd<T>& op, int64_t B, int64_t b, int64_t blk, int64_t c, int64_t j0, int64_t j1,           \
            acc_t<T>* state, acc_t<T>* w, acc_t<T>* dk, acc_t<T>* dv) {                                       \
    bwd_step_##SUFFIX(op, B, b, blk, c, j0, j1, state, w, dk, dv);                                            \
  }
MMREC_MU_STEPS(float, f32)
MMREC_MU_STEPS(double, f64)
MMREC_MU_STEPS(bf16_t, bf16)
#undef MMREC_MU_STEPS

}  // namespace

template <class T>
void memory_update_fwd(const T* M0, const T* key, const T* value, const T* strength, T* Ms, int64_t B, int64_t NC,
                       int64_t S, int64_t D) {
  using A = acc_t<T>;
  const Units un = units_for(B, NC, S, D);
  std::vector<A> score(2 * B * S);
  const bool stream = B * (NC + 1) * S * D * int64_t(sizeof(T)) >= kStreamMinBytes;
  const Fwd<T> op{M0, key, value, strength, Ms, NC, S, D, A(1) / std::sqrt(A(D)), score.data(), stream};
  const int64_t rows_max = (S + un.blocks - 1) / un.blocks;
#pragma omp parallel num_threads(un.threads)
  {
    const int tid = omp_get_thread_num(), P = omp_get_num_threads();
    std::vector<A> w(S);
    std::vector<T> tmp(D);
    if (un.blocks == 1) {
      // A unit is a whole batch: all its chunks in a row, nothing shared.
      std::vector<A> state(S * D);
      for (int64_t b = tid; b < B; b += P) {
        init(op, b, 0, S, state.data());
        for (int64_t c = 0; c < NC; ++c) step(op, B, b, c, 0, S, state.data(), w.data(), tmp.data());
      }
    } else {
      const int64_t mine = (un.count - tid + P - 1) / P;  // units tid, tid + P, ...
      std::vector<A> state(mine * rows_max * D);
      for (int64_t k = 0; k < mine; ++k) {
        const int64_t u = tid + k * P, b = u / un.blocks, blk = u % un.blocks;
        init(op, b, un.row_begin(blk, S), un.row_begin(blk + 1, S), state.data() + k * rows_max * D);
      }
#pragma omp barrier
      for (int64_t c = 0; c < NC; ++c) {
        for (int64_t k = 0; k < mine; ++k) {
          const int64_t u = tid + k * P, b = u / un.blocks, blk = u % un.blocks;
          step(op, B, b, c, un.row_begin(blk, S), un.row_begin(blk + 1, S), state.data() + k * rows_max * D,
               w.data(), tmp.data());
        }
#pragma omp barrier
      }
    }
    if (stream) stream_fence();
  }
}

template <class T>
void memory_update_bwd(const T* grad, const T* key, const T* value, const T* strength, const T* Ms, T* dM0, T* dkey,
                       T* dvalue, T* dstrength, int64_t B, int64_t NC, int64_t S, int64_t D) {
  using A = acc_t<T>;
  const Units un = units_for(B, NC, S, D);
  std::vector<A> score(2 * B * S), e(2 * B * S), part(un.blocks > 1 ? 2 * B * un.blocks * 2 * D : 0);
  const Bwd<T> op{key,  value, strength, Ms,        grad,         dM0,         dkey,    dvalue,
                  dstrength, NC, S, D, un.blocks, A(1) / std::sqrt(A(D)), score.data(), e.data(), part.data()};
  const int64_t rows_max = (S + un.blocks - 1) / un.blocks;
#pragma omp parallel num_threads(un.threads)
  {
    const int tid = omp_get_thread_num(), P = omp_get_num_threads();
    std::vector<A> w(S), dk(D), dv(D);
    if (un.blocks == 1) {
      std::vector<A> state(S * D);
      for (int64_t b = tid; b < B; b += P) {
        init(op, B, b, 0, S, state.data());
        for (int64_t c = NC - 1; c >= 0; --c) {
          step(op, B, b, 0, c, 0, S, state.data(), w.data(), dk.data(), dv.data());
          op.store(b, c, dk.data(), dv.data());
        }
      }
    } else {
      const int64_t mine = (un.count - tid + P - 1) / P;
      std::vector<A> state(mine * rows_max * D);
      for (int64_t k = 0; k < mine; ++k) {
        const int64_t u = tid + k * P, b = u / un.blocks, blk = u % un.blocks;
        init(op, B, b, un.row_begin(blk, S), un.row_begin(blk + 1, S), state.data() + k * rows_max * D);
      }
#pragma omp barrier
      for (int64_t c = NC - 1; c >= 0; --c) {
        for (int64_t k = 0; k < mine; ++k) {
          const int64_t u = tid + k * P, b = u / un.blocks, blk = u % un.blocks;
          if (c + 1 < NC && blk == 0) op.reduce(B, b, c + 1, dk.data(), dv.data());
          A* p = part.data() + (((c % 2) * B + b) * un.blocks + blk) * 2 * D;
          step(op, B, b, blk, c, un.row_begin(blk, S), un.row_begin(blk + 1, S), state.data() + k * rows_max * D,
                  w.data(), p, p + D);
        }
#pragma omp barrier
      }
      for (int64_t k = 0; k < mine; ++k) {
        const int64_t u = tid + k * P, b = u / un.blocks, blk = u % un.blocks;
        if (blk == 0) op.reduce(B, b, 0, dk.data(), dv.data());
      }
    }
  }
}


#define MMREC_MU_INSTANTIATE(T)                                                                               \
  template void memory_update_fwd<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t, int64_t,     \
                                     int64_t);                                                                \
  template void memory_update_bwd<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, int64_t, \
                                     int64_t, int64_t, int64_t);
MMREC_MU_INSTANTIATE(float)
MMREC_MU_INSTANTIATE(double)
MMREC_MU_INSTANTIATE(bf16_t)
#undef MMREC_MU_INSTANTIATE

}  // namespace mmrec::cpu
