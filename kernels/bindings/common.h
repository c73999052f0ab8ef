// What the per-op binding files share. Tensors arrive as DLPack arrays (zero-copy views of torch tensors).
// python/mmrec_ops/validate.py is the argument contract; a binding checks only what keeps the kernels' raw
// pointers in bounds: every array's rank, sizes, dtype, device and contiguity, against the first argument.
// Then it runs the kernel of the arrays' device without the GIL: a CPU kernel (kernels/cpu) for the storage
// type, or a CUDA entry point (kernels/cuda/runtime.h) on the caller's stream.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/dtypes.h"
#include "cuda/runtime.h"

namespace mmrec::bind {

namespace nb = nanobind;
using Array = nb::ndarray<>;
using OptArray = std::optional<Array>;

enum class Dev { cpu, cuda };

// A data pointer that converts to the kernel's element pointer (const T* for inputs, T* for outputs).
struct In {
  const void* p;
  template <class T> operator const T*() const { return static_cast<const T*>(p); }
};
struct Out {
  void* p;
  template <class T> operator T*() const { return static_cast<T*>(p); }
};

// The dtype and device of a call (taken from its first array) and the checks of every array against them.
class Call {
 public:
  DType dt;
  Dev dev;

  Call(const Array& first, const char* name) : dt(dtype_of(first, name)), dev(device_of(first, name)) {}

  // Size `i` of `x` after checking that `x` has `ndim` dims (read sizes from the arrays that define them).
  static int64_t size(const Array& x, const char* name, size_t ndim, size_t i) {
    if (x.ndim() != ndim) fail(name, "expected " + std::to_string(ndim) + " dims, got " + std::to_string(x.ndim()));
    return int64_t(x.shape(i));
  }

  In in(const Array& x, const char* name, std::initializer_list<int64_t> shape) const {
    return {check(x, name, shape)};
  }
  In in(const OptArray& x, const char* name, std::initializer_list<int64_t> shape) const {
    return {x ? check(*x, name, shape) : nullptr};  // nullptr: the kernel's zeros
  }
  Out out(const Array& x, const char* name, std::initializer_list<int64_t> shape) const {
    return {check(x, name, shape)};
  }

 private:
  [[noreturn]] static void fail(const char* name, const std::string& what) {
    throw nb::value_error((std::string(name) + ": " + what).c_str());
  }

  static DType dtype_of(const Array& x, const char* name) {
    const auto d = x.dtype();
    if (d == nb::dtype<float>()) return DType::f32;
    if (d == nb::dtype<double>()) return DType::f64;
    if (d.bits == 16 && d.lanes == 1 && d.code == uint8_t(nb::dlpack::dtype_code::Bfloat)) return DType::bf16;
    if (d.bits == 16 && d.lanes == 1 && d.code == uint8_t(nb::dlpack::dtype_code::Float)) return DType::f16;
    throw nb::type_error((std::string(name) + ": dtype must be float16, bfloat16, float32 or float64").c_str());
  }

  static Dev device_of(const Array& x, const char* name) {
    if (x.device_type() == nb::device::cpu::value) return Dev::cpu;
    if (x.device_type() == nb::device::cuda::value) return Dev::cuda;
    fail(name, "must be on the CPU or a CUDA device");
  }

  void* check(const Array& x, const char* name, std::initializer_list<int64_t> shape) const {
    bool same = x.ndim() == shape.size();
    size_t i = 0;
    for (int64_t s : shape) same = same && int64_t(x.shape(i++)) == s;
    if (!same) {
      std::string want, got;
      for (int64_t s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
      for (size_t j = 0; j < x.ndim(); ++j) got += (j ? ", " : "") + std::to_string(x.shape(j));
      fail(name, "expected shape (" + want + "), got (" + got + ")");
    }
    if (dtype_of(x, name) != dt) fail(name, "dtype differs from the first argument's");
    if (device_of(x, name) != dev) fail(name, "device differs from the first argument's");
    int64_t stride = 1;
    for (size_t j = x.ndim(); j-- > 0; stride *= int64_t(x.shape(j)))
      if (x.shape(j) != 1 && x.stride(j) != stride) fail(name, "must be contiguous");
    return x.data();
  }
};

// Calls f(T{}) with the CPU storage type of dt, without the GIL.
template <class F>
void run_cpu(DType dt, F&& f) {
  if (dt == DType::f16) throw nb::type_error("float16 is not supported by the CPU kernels: use bfloat16, float32 or float64");
  nb::gil_scoped_release nogil;
  switch (dt) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    default: return f(bf16_t{});
  }
}

// MMREC_RUN_CUDA(op, call): runs `call` (a CUDA entry point returning an error code) without the GIL and turns a
// failure into an exception; a build without CUDA kernels raises instead.
#ifdef MMREC_WITH_CUDA
template <class F>
void run_cuda(const char* op, F&& launch) {
  int err;
  {
    nb::gil_scoped_release nogil;
    err = launch();
  }
  if (err) throw std::runtime_error(std::string("mmrec ") + op + " (CUDA): " + cuda::error_string(err));
}
#define MMREC_RUN_CUDA(op, ...) ::mmrec::bind::run_cuda(op, [&] { return __VA_ARGS__; })
#else
#define MMREC_RUN_CUDA(op, ...)                                                                              \
  throw std::runtime_error(std::string("mmrec ") + op +                                                      \
                           ": CUDA tensors, but mmrec_ops._C was built without CUDA kernels (no nvcc at build " \
                           "time, or MMREC_CUDA=OFF)")
#endif

inline void* as_stream(uintptr_t stream) { return reinterpret_cast<void*>(stream); }

void bind_scan(nb::module_& m);
void bind_recurrence(nb::module_& m);
void bind_mdi(nb::module_& m);
void bind_memory_update(nb::module_& m);
void bind_memory_read(nb::module_& m);
void bind_decode_step(nb::module_& m);

}  // namespace mmrec::bind
