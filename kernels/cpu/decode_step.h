#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mmrec::cpu {

// Sizes of MMRecLM's one-token step (docs/SPEC.md; python/mmrec_model/decode.py computes the same in torch ops).
struct DecodeDims {
  int64_t V, D, L;      // vocabulary, d_model, layers
  int64_t N, S, H, Hr;  // banks, slots, recurrence heads (W_g blocks), read heads
  int64_t C, F;         // chunk length, SwiGLU hidden width
  bool linear;          // scan variant (gate g in in_proj) instead of the nonlinear recurrence W_g h + b_g
  double eps, mdi_eps;  // RMSNorm eps, bank-gate clamp
};

// One block's parameters in the torch layouts (nn.Linear weights [out, in], contiguous):
// norm_in, norm_ffn [D]; w_in [W, D], b_in [W] with W = 4D (+D linear) + N; w_g [H, d, d], b_g [D] (nonlinear only;
// nullptr for linear); base [N, D]; w_key [D, D]; w_a [1, D], b_a [1]; w_o [D, D]; w_up [2F, D]; w_down [D, F].
template <class T>
struct BlockParams {
  const T *norm_in, *w_in, *b_in, *w_g, *b_g, *base, *w_key, *w_a, *b_a, *w_o, *norm_ffn, *w_up, *w_down;
};

// A matrix [n_out, K] repacked in tiles of kTile output columns: tile j holds W[j*kTile + c, k] at [k][c] (zero
// past n_out), so a tile's GEMV streams K * kTile contiguous elements. Several independent matrices (the blocks of
// W_g) share one Packed: each tile carries the offset of its input slice and of its output columns. The elements
// live in the DecodeStep's arena (all matrices in the order a step reads them).
template <class T>
struct Packed {
  struct Tile {
    int64_t w_off;                           // first element of the tile in `w`
    int32_t K, k_off, n_off, n_valid;        // inputs, input offset, first output column, valid columns
  };
  std::vector<Tile> tiles;
  const T* w = nullptr;
  void add(const T* W, int64_t n_out, int64_t K, int64_t k_off, int64_t n_off);  // append W [n_out, K]
  int64_t size() const;                                                           // elements of the added matrices
  void finish(T* dst);                                                            // pack into dst [size()]
  int64_t packed = 0;                                                             // elements at w, after finish
 private:
  struct Pending { const T* W; int64_t n_out, K, k_off, n_off; };
  std::vector<Pending> pending_;
};

// Sums over the steps run while profiling (DecodeStep::set_profile).
struct DecodeProfile {
  std::vector<double> phase_ns;      // [5 L + 1]: per block in_proj + W_g, per-row work, out_proj, up, down; lm head
  std::vector<double> worker_elems;  // [threads]: packed weights each thread streamed
  int64_t steps = 0;
};

// The whole model's one-token step with its weights packed once; state buffers are the caller's:
// mem[l] [B, 1 + N + S, D] = (h, banks, slots), chunk_sum[l] [B, D], pos [B] (int64, advanced by one).
// Threads: the caller's thread and `threads - 1` helper threads owned by the object. A step is a chain of phases
// (per block: in_proj + W_g GEMV, the per-row work, out_proj, up, down; then lm_head); the GEMV tiles of a phase
// are taken one at a time from an atomic counter by whichever thread is running, so a helper that the OS does not
// schedule (a loaded machine) never stalls the step: the caller's thread does its share.
template <class T>
class DecodeStep {
 public:
  DecodeStep(const DecodeDims& dims, const T* embed, const T* norm_w, const T* lm_head,
             const BlockParams<T>* blocks);
  ~DecodeStep();
  DecodeStep(const DecodeStep&) = delete;
  DecodeStep& operator=(const DecodeStep&) = delete;
  // tokens [B] in [0, V) -> logits [B, V]; the state advances one token in place. Calls are serialised.
  void run(const int64_t* tokens, int64_t B, T* const* mem, T* const* chunk_sum, int64_t* pos, T* logits,
           int threads);
  const DecodeDims& dims() const { return d_; }
  // Phase timing (worker 0's clock at the end of each wait, from the embedding on): while on, each step adds the
  // time of per block {in_proj + W_g, per-row work, out_proj, up, down} and the lm head (5 L + 1 entries, ns) and the
  // weights each worker streamed. profile() returns the sums and the number of steps; profile(true) switches on and
  // clears, profile(false) switches off.
  using Profile = DecodeProfile;
  Profile profile() const;
  void set_profile(bool on);

  struct Block {
    std::vector<T> norm_in, b_in, b_g, sig_base, w_a, norm_ffn;
    T b_a;
    Packed<T> in_proj, w_g, w_o, w_up, w_down, w_key;
  };

 private:
  void reserve(int64_t B, int threads);
  void start_helpers(int n);
  void stop_helpers();
  void helper_loop(int worker);
  void work(int worker);          // every phase of the open step, from `worker`'s side
  DecodeDims d_;
  int64_t W_;                       // in_proj width
  std::vector<T> embed_, norm_w_;
  std::vector<Block> blocks_;
  Packed<T> lm_head_;
  std::unique_ptr<T[], void (*)(void*)> arena_{nullptr, nullptr};  // every packed matrix, 2 MiB pages where granted
  // scratch, grown on the first step of a larger batch or thread count (never per token)
  int64_t cap_B_ = 0;
  int cap_threads_ = 0;
  std::vector<T> x_, y_, proj_, p_, r_, gv_, key_, u_priv_, a_priv_;
  std::vector<uint8_t> update_;
  // the open step
  int64_t B_ = 0;
  T* const* mem_ = nullptr;
  T* const* chunk_sum_ = nullptr;
  T* logits_ = nullptr;
  struct alignas(64) Phase {       // one cache line per GEMV phase
    std::atomic<int64_t> next{0}, done{0};  // tiles taken, tiles finished
  };
  struct alignas(64) Flag {
    std::atomic<int64_t> set{0};
  };
  std::unique_ptr<Phase[]> phases_;
  std::unique_ptr<Flag[]> mixed_;  // per block: the per-row work is done
  // helpers
  std::vector<std::thread> helpers_;
  mutable std::mutex run_mu_;           // one step at a time (states of one model share the scratch and helpers)
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<bool> open_{false}, stop_{false};
  std::atomic<int> active_{0};
  // profiling (set_profile)
  bool profile_ = false;
  Profile prof_;
  struct alignas(64) Elems {
    double n = 0;
  };
  std::unique_ptr<Elems[]> elems_;  // per worker, this step
};

}  // namespace mmrec::cpu
