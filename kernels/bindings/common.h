// Helpers shared by the per-op binding files: dtype/device inspection of DLPack arrays
// (zero-copy views of torch tensors), argument checks and the GIL release around kernels.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/dtypes.h"
#include "cuda/runtime.h"

namespace mmrec::bind {

namespace nb = nanobind;
using Array = nb::ndarray<>;
using OptArray = std::optional<Array>;

enum class Dev { cpu, cuda };

inline void expect(bool ok, const std::string& msg) {
  if (!ok) throw nb::value_error(msg.c_str());
}

inline DType dtype_of(const Array& x, const char* name) {
  auto d = x.dtype();
  if (d == nb::dtype<float>()) return DType::f32;
  if (d == nb::dtype<double>()) return DType::f64;
  if (d.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && d.bits == 16 && d.lanes == 1) return DType::bf16;
  if (d.code == uint8_t(nb::dlpack::dtype_code::Float) && d.bits == 16 && d.lanes == 1) return DType::f16;
  throw nb::type_error((std::string(name) + ": unsupported dtype").c_str());
}

inline Dev device_of(const Array& x, const char* name) {
  if (x.device_type() == nb::device::cpu::value) return Dev::cpu;
  if (x.device_type() == nb::device::cuda::value) return Dev::cuda;
  throw nb::value_error((std::string(name) + ": unsupported device").c_str());
}

inline bool is_contiguous(const Array& x) {
  int64_t expected = 1;
  for (size_t i = x.ndim(); i-- > 0;) {
    if (x.shape(i) != 1 && x.stride(i) != expected) return false;
    expected *= int64_t(x.shape(i));
  }
  return true;
}

// Checks that `x` is a contiguous array of `ndim` dims with `dtype` on `dev`, with the given sizes
// (-1 = any), and returns its data pointer.
inline void* checked(const Array& x, const char* name, size_t ndim, std::initializer_list<int64_t> sizes, DType dt,
                     Dev dev) {
  expect(x.ndim() == ndim, std::string(name) + ": expected " + std::to_string(ndim) + " dims");
  size_t i = 0;
  for (int64_t s : sizes) {
    expect(s < 0 || int64_t(x.shape(i)) == s, std::string(name) + ": size mismatch in dim " + std::to_string(i));
    ++i;
  }
  expect(dtype_of(x, name) == dt, std::string(name) + ": dtype differs from the first argument");
  expect(device_of(x, name) == dev, std::string(name) + ": device differs from the first argument");
  expect(is_contiguous(x), std::string(name) + ": must be contiguous");
  return x.data();
}

inline void* checked_opt(const OptArray& x, const char* name, size_t ndim, std::initializer_list<int64_t> sizes,
                         DType dt, Dev dev) {
  return x ? checked(*x, name, ndim, sizes, dt, dev) : nullptr;
}

inline void* as_stream(uintptr_t stream) { return reinterpret_cast<void*>(stream); }

// Runs a CUDA entry point (see cuda/runtime.h) without the GIL and turns its error code into an exception.
template <class F>
void launch_cuda(const char* op, F&& launch) {
  int err;
  {
    nb::gil_scoped_release nogil;
    err = launch();
  }
  if (err) throw std::runtime_error(std::string("mmrec ") + op + " (CUDA): " + cuda::error_string(err));
}

// Calls f(T{}) with the CPU storage type of dt.
template <class F>
void dispatch_cpu(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::bf16: f(bf16_t{}); return;
    default: throw nb::type_error("float16 is not supported by the CPU kernels: use bfloat16, float32 or float64");
  }
}

void bind_scan(nb::module_& m);
void bind_cuda_ops(nb::module_& m);  // cuda_ops.cpp: recurrence, mdi, memory_update on CUDA
void bind_recurrence(nb::module_& m);
void bind_mdi(nb::module_& m);
void bind_memory_update(nb::module_& m);
void bind_memory_read(nb::module_& m);

}  // namespace mmrec::bind
