// memory_read: banks m_t = g_t (m_{t-1} - v_t) + v_t, g = clamp(sig(base) sig(mod), eps, 1-eps); per read head the items
//   x_i in {h_t, m_t^1..N, Ms[c(t), 1..S]}, n_i = x_i rho_i, rho_i = rsqrt(mean(x_i^2) + ne), w = softmax(s), s_i = <q, n_i> / sqrt(dh).
// backward: a_i = <G, n_i>, ds_i = w_i (a_i - sum_j w_j a_j), dq = sum_i ds_i n_i / sqrt(dh), and since mean(dn_i n_i) =
//   (w_i a_i + ds_i s_i) / dh, dx_i = rho_i (w_i G + ds_i q / sqrt(dh) - n_i (w_i a_i + ds_i s_i) / dh); bank dx run mdi's backward.
// One block = (batch row, read head), one thread per channel of the head (dh <= 1024): a thread keeps its channel of
// the N banks, of dMs and of the bank gradients in shared memory columns only it touches. Per token the forward
// needs one block reduction of 2 I values (sum x_i^2 and <q, x_i>, I = 1 + N + S), the backward one of 3 I values
// (plus <G, x_i>) and one of N values (dmod). The backward's bank states come from checkpoints every K ~ sqrt(T)
// steps ([B H, blocks, N, dh] scratch) and a per-block recomputation into [B H, K, N, dh] scratch, both read and
// written by the owning thread only.
#include <cmath>

#include "cuda/check.cuh"
#include "cuda/memory_read.h"
#include "cuda/runtime.h"

namespace mmrec::cuda {
namespace {

constexpr size_t kMaxShared = 48 * 1024;

struct Geo {
  int64_t T, N, D, L, S, H, k0, C, K, blocks;
  int dh, I, R;  // head width, items, values per reduction (3 I + N)
};

template <class A>
__device__ __forceinline__ A clampd(A x, A lo, A hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// tot[k] = sum over the block's threads of val(k), k < R; red: [warps, R] shared. Two barriers: the first makes the
// warp partials visible, the second makes tot visible and keeps red/tot from being overwritten by the next call
// before every thread has read them (a thread reaches the next call's first barrier only after its reads).
template <class A, class F>
__device__ __forceinline__ void block_sum(int R, A* red, A* tot, F&& val) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int k = 0; k < R; ++k) {
    const A s = warp_sum(val(k));
    if (lane == 0) red[warp * R + k] = s;
  }
  __syncthreads();
  for (int k = threadIdx.x; k < R; k += blockDim.x) {
    A s = 0;
    for (int w = 0; w < warps; ++w) s += red[w * R + k];
    tot[k] = s;
  }
  __syncthreads();
}

// Shared layout in accumulators: red [warps, R], tot [R], then columns [rows, blockDim.x] (sb, sbneg, st, carry,
// dbase, dxm: N rows each; dMs: S rows).
__host__ __device__ inline size_t shared_count(const Geo& g, int threads) {
  return size_t(threads / 32) * g.R + g.R + size_t(6 * g.N + g.S) * threads;
}

template <class T>
__global__ void memory_read_kernel(const T* __restrict__ q, const T* __restrict__ h, const T* __restrict__ v,
                                   const T* __restrict__ mod, const T* __restrict__ base, const T* __restrict__ Ms,
                                   const T* __restrict__ m0, const T* __restrict__ grad_r,
                                   const T* __restrict__ grad_m, T* __restrict__ r, T* __restrict__ m_last,
                                   T* __restrict__ dq, T* __restrict__ dh_out, T* __restrict__ dv,
                                   T* __restrict__ dMs, T* __restrict__ dm0, acc_t<T>* __restrict__ ckpt,
                                   acc_t<T>* __restrict__ buf, acc_t<T>* __restrict__ dmod_part,
                                   acc_t<T>* __restrict__ dbase_part, Geo g, double eps, double norm_eps,
                                   bool backward) {
  using A = acc_t<T>;
  extern __shared__ unsigned char smem_raw[];
  A* smem = reinterpret_cast<A*>(smem_raw);
  const int nt = blockDim.x, i = threadIdx.x, dh = g.dh, I = g.I;
  const int64_t N = g.N, S = g.S, D = g.D, T_ = g.T;
  const int64_t pid = blockIdx.x, bi = pid / g.H, d0 = (pid % g.H) * dh;
  const bool on = i < dh;
  const int64_t col = d0 + (on ? i : 0);
  A* red = smem;
  A* tot = red + (nt / 32) * g.R;
  A* sb = tot + g.R;
  A* sbneg = sb + N * nt;
  A* st = sbneg + N * nt;
  A* carry = st + N * nt;
  A* dbase = carry + N * nt;
  A* dxm = dbase + N * nt;
  A* dms = dxm + N * nt;
  const A lo = A(eps), hi = A(1) - A(eps), ne = A(norm_eps), scale = A(1) / sqrt(A(dh)), inv_dh = A(1) / A(dh);
  for (int64_t n = 0; n < N; ++n) {
    const A b_ = on ? load(base + n * D + col) : A(0);
    sb[n * nt + i] = sigmoid(b_);
    sbneg[n * nt + i] = sigmoid(-b_);
    st[n * nt + i] = (on && m0) ? load(m0 + (bi * N + n) * D + col) : A(0);
    carry[n * nt + i] = (on && backward) ? load(grad_m + (bi * N + n) * D + col) : A(0);
    dbase[n * nt + i] = A(0);
  }
  for (int64_t j = 0; j < S; ++j) dms[j * nt + i] = A(0);
  auto step = [&](int64_t t, A* state) {  // state: this thread's column, stride nt
    const int64_t row = bi * T_ + t;
    const A vi = on ? load(v + row * D + col) : A(0);
    for (int64_t n = 0; n < N; ++n) {
      const A gg = clampd(sb[n * nt + i] * sigmoid(load(mod + row * N + n)), lo, hi);
      state[n * nt] = gg * (state[n * nt] - vi) + vi;
    }
  };
  // item k of token t at this thread's channel: 0 = h, 1..N = banks (column `bank`, stride nt), then the slots
  auto item = [&](int k, int64_t row, int64_t c, const A* bank) -> A {
    if (!on) return A(0);
    if (k == 0) return load(h + row * D + col);
    if (k <= N) return bank[(k - 1) * nt];
    return load(Ms + ((bi * g.L + c) * S + (k - 1 - N)) * D + col);
  };
  if (!backward) {
    for (int64_t t = 0; t < T_; ++t) {
      const int64_t row = bi * T_ + t, c = (g.k0 + t) / g.C;
      step(t, st + i);
      const A qi = on ? load(q + row * D + col) : A(0);
      block_sum<A>(2 * I, red, tot, [&](int k) {
        const A x = item(k < I ? k : k - I, row, c, st + i);
        return k < I ? x * x : qi * x;
      });
      A mx = -INFINITY;
      for (int k = 0; k < I; ++k) mx = max(mx, tot[I + k] * scale / sqrt(tot[k] * inv_dh + ne));
      A z = 0, acc = 0;
      for (int k = 0; k < I; ++k) {
        const A rho = A(1) / sqrt(tot[k] * inv_dh + ne), e = exp(tot[I + k] * rho * scale - mx);
        z += e;
        acc += e * rho * item(k, row, c, st + i);
      }
      if (on) store(r + row * D + col, acc / z);
    }
    if (on)
      for (int64_t n = 0; n < N; ++n) store(m_last + (bi * N + n) * D + col, st[n * nt + i]);
    return;
  }
  // backward: checkpoints ckpt[blk] = banks before step blk * K (own column only: no barrier needed)
  A* my_ckpt = ckpt + pid * g.blocks * N * nt + i;
  A* my_buf = buf + pid * g.K * N * nt + i;
  for (int64_t n = 0; n < N; ++n) my_ckpt[n * nt] = st[n * nt + i];
  for (int64_t t = 0; t < (g.blocks - 1) * g.K; ++t) {
    step(t, st + i);
    if ((t + 1) % g.K == 0)
      for (int64_t n = 0; n < N; ++n) my_ckpt[((t + 1) / g.K * N + n) * nt] = st[n * nt + i];
  }
  for (int64_t blk = g.blocks - 1; blk >= 0; --blk) {
    const int64_t t0 = blk * g.K, t1 = min(T_, t0 + g.K);
    const A* first = my_ckpt + blk * N * nt;
    for (int64_t n = 0; n < N; ++n) st[n * nt + i] = first[n * nt];
    for (int64_t t = t0; t < t1; ++t) {
      step(t, st + i);
      for (int64_t n = 0; n < N; ++n) my_buf[((t - t0) * N + n) * nt] = st[n * nt + i];
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t row = bi * T_ + t, c = (g.k0 + t) / g.C;
      const A* mt = my_buf + (t - t0) * N * nt;
      const A* mprev = t > t0 ? mt - N * nt : first;
      const A qi = on ? load(q + row * D + col) : A(0), Gi = on ? load(grad_r + row * D + col) : A(0);
      block_sum<A>(3 * I, red, tot, [&](int k) {
        const A x = item(k % I, row, c, mt);
        return k < I ? x * x : (k < 2 * I ? qi * x : Gi * x);
      });
      A mx = -INFINITY;
      for (int k = 0; k < I; ++k) mx = max(mx, tot[I + k] * scale / sqrt(tot[k] * inv_dh + ne));
      A z = 0, abar = 0;
      for (int k = 0; k < I; ++k) {
        const A rho = A(1) / sqrt(tot[k] * inv_dh + ne);
        const A e = exp(tot[I + k] * rho * scale - mx);
        z += e;
        abar += e * rho * tot[2 * I + k];
      }
      abar /= z;
      A dqi = 0;
      for (int k = 0; k < I; ++k) {
        const A rho = A(1) / sqrt(tot[k] * inv_dh + ne), s = tot[I + k] * rho * scale;
        const A w = exp(s - mx) / z, a = rho * tot[2 * I + k], ds = w * (a - abar);
        const A nk = rho * item(k, row, c, mt);
        dqi += ds * scale * nk;
        const A dx = rho * (w * Gi + ds * scale * qi - nk * (w * a + ds * s) * inv_dh);
        if (k == 0) {
          if (on) store(dh_out + row * D + col, dx);
        } else if (k <= N) {
          dxm[(k - 1) * nt + i] = dx;
        } else {
          dms[(k - 1 - N) * nt + i] += dx;
        }
      }
      if (on) store(dq + row * D + col, dqi);
      if ((g.k0 + t) % g.C == 0 || t == 0) {  // backwards in time: the chunk's last token visited
        for (int64_t j = 0; j < S; ++j) {
          if (on) store(dMs + ((bi * g.L + c) * S + j) * D + col, dms[j * nt + i]);
          dms[j * nt + i] = A(0);
        }
      }
      const A vi = on ? load(v + row * D + col) : A(0);
      A dvi = 0;
      for (int64_t n = 0; n < N; ++n) {  // mdi's backward step; dxg * sb is summed over channels below
        const A x = sb[n * nt + i] * sigmoid(load(mod + row * N + n)), gg = clampd(x, lo, hi);
        const A delta = dxm[n * nt + i] + carry[n * nt + i];
        const A dxg = (on && x >= lo && x <= hi) ? delta * (mprev[n * nt] - vi) : A(0);
        dbase[n * nt + i] += dxg * x * sbneg[n * nt + i];
        dxm[n * nt + i] = dxg * sb[n * nt + i];
        dvi += delta * (A(1) - gg);
        carry[n * nt + i] = gg * delta;
      }
      if (on) store(dv + row * D + col, dvi);
      block_sum<A>(int(N), red, tot, [&](int k) { return dxm[k * nt + i]; });
      for (int64_t n = i; n < N; n += nt) dmod_part[(pid * T_ + t) * N + n] = tot[n];
    }
  }
  if (on)
    for (int64_t n = 0; n < N; ++n) {
      store(dm0 + (bi * N + n) * D + col, carry[n * nt + i]);
      dbase_part[(bi * N + n) * D + col] = dbase[n * nt + i];
    }
}

// dmod[b, t, n] = sig'(mod) sum over heads of dmod_part[b, head, t, n]; dbase[n, d] = sum over b of dbase_part.
template <class T>
__global__ void memory_read_reduce(const acc_t<T>* __restrict__ dmod_part, const acc_t<T>* __restrict__ dbase_part,
                                   const T* __restrict__ mod, T* __restrict__ dmod, T* __restrict__ dbase, int64_t B,
                                   int64_t T_, int64_t N, int64_t D, int64_t H) {
  using A = acc_t<T>;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < B * T_ * N) {
    const int64_t bi = idx / (T_ * N), tn = idx % (T_ * N);
    A s = 0;
    for (int64_t k = 0; k < H; ++k) s += dmod_part[(bi * H + k) * T_ * N + tn];
    const A x = load(mod + idx);
    store(dmod + idx, s * sigmoid(x) * sigmoid(-x));
  } else if (idx < B * T_ * N + N * D) {
    const int64_t j = idx - B * T_ * N;
    A s = 0;
    for (int64_t bi = 0; bi < B; ++bi) s += dbase_part[bi * N * D + j];
    store(dbase + j, s);
  }
}

Geo make_geo(int64_t T, int64_t N, int64_t D, int64_t L, int64_t S, int64_t H, int64_t k0, int64_t C) {
  Geo g{T, N, D, L, S, H, k0, C, 0, 0, int(D / H), int(1 + N + S), 0};
  g.R = 3 * g.I + int(N);
  g.K = std::max<int64_t>(1, int64_t(std::ceil(std::sqrt(double(T)))));
  g.blocks = (T + g.K - 1) / g.K;
  return g;
}

template <class T>
int launch(const Geo& g, int64_t B, const void* const* in, void* const* out, double eps, double norm_eps,
           bool backward, cudaStream_t stream) {
  using A = acc_t<T>;
  if (g.dh > 1024) return kUnsupported;
  const int threads = std::max(32, (g.dh + 31) / 32 * 32);
  const size_t shared = shared_count(g, threads) * sizeof(A);
  if (shared > kMaxShared) return kUnsupported;
  auto c = [&](int k) { return static_cast<const T*>(in[k]); };
  auto o = [&](int k) { return static_cast<T*>(out[k]); };
  const unsigned grid = unsigned(B * g.H);
  if (!backward) {
    memory_read_kernel<T><<<grid, threads, shared, stream>>>(c(0), c(1), c(2), c(3), c(4), c(5), c(6), nullptr,
                                                            nullptr, o(0), o(1), nullptr, nullptr, nullptr, nullptr,
                                                            nullptr, nullptr, nullptr, nullptr, nullptr, g, eps,
                                                            norm_eps, false);
    MMREC_CHECK_LAUNCH();
    return 0;
  }
  const size_t n_ckpt = size_t(B * g.H) * g.blocks * g.N * threads, n_buf = size_t(B * g.H) * g.K * g.N * threads;
  const size_t n_dmod = size_t(B * g.H) * g.T * g.N, n_dbase = size_t(B) * g.N * g.D;
  Scratch scratch(stream);
  if (int err = scratch.reserve(Scratch::round(n_ckpt * sizeof(A)) + Scratch::round(n_buf * sizeof(A)) +
                                Scratch::round(n_dmod * sizeof(A)) + Scratch::round(n_dbase * sizeof(A))))
    return err;
  A* ckpt = scratch.take<A>(n_ckpt);
  A* buf = scratch.take<A>(n_buf);
  A* dmod_part = scratch.take<A>(n_dmod);
  A* dbase_part = scratch.take<A>(n_dbase);
  // in: grad_r, grad_m, q, h, v, mod, base, Ms, m0; out: dq, dh, dv, dmod, dbase, dMs, dm0
  memory_read_kernel<T><<<grid, threads, shared, stream>>>(c(2), c(3), c(4), c(5), c(6), c(7), c(8), c(0), c(1),
                                                          nullptr, nullptr, o(0), o(1), o(2), o(5), o(6), ckpt, buf,
                                                          dmod_part, dbase_part, g, eps, norm_eps, true);
  MMREC_CHECK_LAUNCH();
  const int64_t n_red = B * g.T * g.N + g.N * g.D;
  memory_read_reduce<T><<<blocks_for(n_red, 256), 256, 0, stream>>>(dmod_part, dbase_part, c(5), o(3), o(4), B, g.T,
                                                                    g.N, g.D, g.H);
  MMREC_CHECK_LAUNCH();
  return 0;
}

}  // namespace

int memory_read_fwd(DType dt, const void* q, const void* h, const void* v, const void* mod, const void* base,
                    const void* Ms, const void* m0, void* r, void* m_last, int64_t B, int64_t T, int64_t N, int64_t D,
                    int64_t L, int64_t S, int64_t H, int64_t k0, int64_t C, double eps, double norm_eps,
                    void* stream) {
  const Geo g = make_geo(T, N, D, L, S, H, k0, C);
  const void* in[] = {q, h, v, mod, base, Ms, m0};
  void* out[] = {r, m_last};
  return dispatch(dt, [&](auto tag) -> int {
    return launch<decltype(tag)>(g, B, in, out, eps, norm_eps, false, cudaStream_t(stream));
  });
}

int memory_read_bwd(DType dt, const void* grad_r, const void* grad_m, const void* q, const void* h, const void* v,
                    const void* mod, const void* base, const void* Ms, const void* m0, void* dq, void* dh, void* dv,
                    void* dmod, void* dbase, void* dMs, void* dm0, int64_t B, int64_t T, int64_t N, int64_t D,
                    int64_t L, int64_t S, int64_t H, int64_t k0, int64_t C, double eps, double norm_eps,
                    void* stream) {
  const Geo g = make_geo(T, N, D, L, S, H, k0, C);
  const void* in[] = {grad_r, grad_m, q, h, v, mod, base, Ms, m0};
  void* out[] = {dq, dh, dv, dmod, dbase, dMs, dm0};
  return dispatch(dt, [&](auto tag) -> int {
    return launch<decltype(tag)>(g, B, in, out, eps, norm_eps, true, cudaStream_t(stream));
  });
}

}  // namespace mmrec::cuda
