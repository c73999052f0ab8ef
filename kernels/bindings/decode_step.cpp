// decode_step: MMRecLM's one-token step on CPU float32/float64 tensors (kernels/cpu/decode_step.cpp).
// DecodeModelCpu packs the model's weights once (copies: later changes to the weights are not seen); its bind()
// takes a state's buffers (mem[l] [B, 1 + N + S, D], chunk_sum[l] [B, D], pos [B] int64; held, updated in place)
// and returns a DecodeStepCpu whose step(tokens [B] int64, logits [B, V], threads) runs one token: one call, no
// torch dispatch.
#include <nanobind/stl/vector.h>

#include <memory>
#include <vector>

#include "bindings/common.h"
#include "cpu/decode_step.h"

namespace mmrec::bind {

namespace {

using Ints = nb::ndarray<int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// The packed weights (one per model; any number of states bind to them).
class DecodeModelCpu {
 public:
  DecodeModelCpu(const Array& embed, const Array& norm_w, const Array& lm_head, const nb::list& blocks,
                 int64_t n_heads, int64_t n_read_heads, int64_t n_slots, int64_t chunk_len, double eps, double mdi_eps,
                 bool linear)
      : c_(embed, "embed") {
    if (c_.dev != Dev::cpu) throw nb::value_error("decode_step: the tensors must be on the CPU");
    if (c_.dt != DType::f32 && c_.dt != DType::f64) throw nb::type_error("decode_step: float32 or float64 only");
    cpu::DecodeDims d{};
    d.V = c_.size(embed, "embed", 2, 0);
    d.D = embed.shape(1);
    d.L = int64_t(nb::len(blocks));
    d.H = n_heads;
    d.Hr = n_read_heads;
    d.S = n_slots;
    d.C = chunk_len;
    d.eps = eps;
    d.mdi_eps = mdi_eps;
    d.linear = linear;
    if (d.L < 1) throw nb::value_error("decode_step: need >= 1 block");
    if (d.H < 1 || d.Hr < 1 || d.D % d.H || d.D % d.Hr || d.C < 1 || d.S < 0)
      throw nb::value_error("decode_step: d_model must divide into n_heads and n_read_heads; chunk_len >= 1");
    auto get = [](const nb::handle& blk, const char* key) { return nb::cast<Array>(blk[key]); };
    d.N = c_.size(get(blocks[0], "base"), "base", 2, 0);
    d.F = c_.size(get(blocks[0], "w_down"), "w_down", 2, 1);
    const int64_t D = d.D, N = d.N, F = d.F, W = 4 * D + (linear ? D : 0) + N, hd = D / d.H;

    std::vector<Array> keep;  // the weights stay referenced until packed
    std::vector<cpu::BlockParams<float>> pf(d.L);
    std::vector<cpu::BlockParams<double>> pd(d.L);
    for (int64_t l = 0; l < d.L; ++l) {
      nb::handle blk = blocks[l];
      auto in = [&](const char* key, std::initializer_list<int64_t> shape) {
        keep.push_back(get(blk, key));
        return c_.in(keep.back(), key, shape);
      };
      const In norm_in = in("norm_in", {D}), w_in = in("w_in", {W, D}), b_in = in("b_in", {W}),
               base = in("base", {N, D}), w_key = in("w_key", {D, D}), w_a = in("w_a", {1, D}), b_a = in("b_a", {1}),
               w_o = in("w_o", {D, D}), norm_ffn = in("norm_ffn", {D}), w_up = in("w_up", {2 * F, D}),
               w_down = in("w_down", {D, F});
      const In w_g = linear ? In{nullptr} : in("w_g", {d.H, hd, hd}), b_g = linear ? In{nullptr} : in("b_g", {D});
      pf[l] = {norm_in, w_in, b_in, w_g, b_g, base, w_key, w_a, b_a, w_o, norm_ffn, w_up, w_down};
      pd[l] = {norm_in, w_in, b_in, w_g, b_g, base, w_key, w_a, b_a, w_o, norm_ffn, w_up, w_down};
    }
    const In pe = c_.in(embed, "embed", {d.V, D}), pn = c_.in(norm_w, "norm_w", {D}),
             plm = c_.in(lm_head, "lm_head", {d.V, D});
    nb::gil_scoped_release nogil;
    if (c_.dt == DType::f32)
      f32_ = std::make_shared<cpu::DecodeStep<float>>(d, pe, pn, plm, pf.data());
    else
      f64_ = std::make_shared<cpu::DecodeStep<double>>(d, pe, pn, plm, pd.data());
  }

  const cpu::DecodeDims& dims() const { return f32_ ? f32_->dims() : f64_->dims(); }
  void set_profile(bool on) { f32_ ? f32_->set_profile(on) : f64_->set_profile(on); }
  nb::dict profile() const {
    const auto p = f32_ ? f32_->profile() : f64_->profile();
    nb::dict out;
    out["phase_ns"] = p.phase_ns;
    out["worker_elems"] = p.worker_elems;
    out["steps"] = p.steps;
    return out;
  }
  DType dtype() const { return c_.dt; }
  std::shared_ptr<cpu::DecodeStep<float>> f32_;
  std::shared_ptr<cpu::DecodeStep<double>> f64_;

 private:
  Call c_;
};

// A state bound to packed weights: step(tokens, logits, threads) advances it one token.
class DecodeStepCpu {
 public:
  DecodeStepCpu(const DecodeModelCpu& model, const std::vector<Array>& mem, const std::vector<Array>& chunk_sum,
                const Ints& pos)
      : f32_(model.f32_), f64_(model.f64_), mem_(mem), chunk_sum_(chunk_sum), pos_(pos) {
    const cpu::DecodeDims& d = model.dims();
    if (int64_t(mem.size()) != d.L || int64_t(chunk_sum.size()) != d.L)
      throw nb::value_error("decode_step: need one mem and one chunk_sum buffer per block");
    const Call c(mem[0], "mem");
    if (c.dt != model.dtype() || c.dev != Dev::cpu)
      throw nb::value_error("decode_step: the state must be CPU tensors of the weights' dtype");
    B_ = c.size(mem[0], "mem", 3, 0);
    V_ = d.V;
    for (int64_t l = 0; l < d.L; ++l) {
      mem_ptr_.push_back(c.out(mem[l], "mem", {B_, 1 + d.N + d.S, d.D}).p);
      csum_ptr_.push_back(c.out(chunk_sum[l], "chunk_sum", {B_, d.D}).p);
    }
    if (int64_t(pos.shape(0)) != B_) throw nb::value_error("decode_step: pos must be [B]");
  }

  void step(const Ints& tokens, const Array& logits, int threads) {
    if (int64_t(tokens.shape(0)) != B_) throw nb::value_error("decode_step: tokens must be [B]");
    const int64_t* tok = tokens.data();
    for (int64_t b = 0; b < B_; ++b)
      if (tok[b] < 0 || tok[b] >= V_) throw nb::value_error("decode_step: token ids must be in [0, vocab_size)");
    const Call c(mem_[0], "mem");
    void* out = c.out(logits, "logits", {B_, V_}).p;
    int64_t* pos = pos_.data();
    nb::gil_scoped_release nogil;
    if (f32_)
      f32_->run(tok, B_, reinterpret_cast<float* const*>(mem_ptr_.data()),
                reinterpret_cast<float* const*>(csum_ptr_.data()), pos, static_cast<float*>(out), threads);
    else
      f64_->run(tok, B_, reinterpret_cast<double* const*>(mem_ptr_.data()),
                reinterpret_cast<double* const*>(csum_ptr_.data()), pos, static_cast<double*>(out), threads);
  }

 private:
  std::shared_ptr<cpu::DecodeStep<float>> f32_;
  std::shared_ptr<cpu::DecodeStep<double>> f64_;
  std::vector<Array> mem_, chunk_sum_;  // held: the kernel writes through their pointers
  Ints pos_;
  int64_t B_ = 0, V_ = 0;
  std::vector<void*> mem_ptr_, csum_ptr_;
};

}  // namespace

void bind_decode_step(nb::module_& m) {
  nb::class_<DecodeStepCpu>(m, "DecodeStepCpu", "a decode state bound to packed weights")
      .def("step", &DecodeStepCpu::step, nb::arg("tokens"), nb::arg("logits"), nb::arg("threads"),
           "logits <- one token per row; the state buffers advance in place");
  nb::class_<DecodeModelCpu>(m, "DecodeModelCpu", "MMRecLM's weights packed for the CPU one-token step")
      .def(nb::init<const Array&, const Array&, const Array&, const nb::list&, int64_t, int64_t, int64_t, int64_t,
                    double, double, bool>(),
           nb::arg("embed"), nb::arg("norm_w"), nb::arg("lm_head"), nb::arg("blocks"), nb::arg("n_heads"),
           nb::arg("n_read_heads"), nb::arg("n_slots"), nb::arg("chunk_len"), nb::arg("eps"), nb::arg("mdi_eps"),
           nb::arg("linear"))
      .def("bind",
           [](const DecodeModelCpu& model, const std::vector<Array>& mem, const std::vector<Array>& chunk_sum,
              const Ints& pos) { return DecodeStepCpu(model, mem, chunk_sum, pos); },
           nb::arg("mem"), nb::arg("chunk_sum"), nb::arg("pos"),
           "a stepper over the state buffers mem[l] [B, 1 + N + S, D], chunk_sum[l] [B, D], pos [B] int64 (held)")
      .def("set_profile", &DecodeModelCpu::set_profile, nb::arg("on"),
           "on: clear and start timing the phases of every step (worker 0's waits); off: stop")
      .def("profile", &DecodeModelCpu::profile,
           "{'phase_ns': per block [in_proj + W_g, per-row work, out_proj, up, down] then lm head, summed over "
           "'steps'; 'worker_elems': weights streamed per thread}");
}

}  // namespace mmrec::bind
