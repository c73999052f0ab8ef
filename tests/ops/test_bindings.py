"""mmrec_ops._C, the nanobind layer under the cpu and cuda backends: one binding per op and direction, gradient first
in every backward, zero-copy outputs, and the checks that keep raw pointers in bounds (rank, sizes, dtype,
device, contiguity of every array) even for a caller that skips mmrec_ops.validate."""
from __future__ import annotations

import pytest
import torch

from mmrec_ops import dispatch

from .common import assert_close, spec_grads
from .spec_gradients import cotangent

if dispatch.why_not_built("cpu") is not None:
    pytest.fail(f"the C++ extension must be built: {dispatch.why_not_built('cpu')}", pytrace=False)

from mmrec_ops import _C  # noqa: E402

B, T, D, H, N, S = 2, 4, 6, 2, 3, 5


_GEN = torch.Generator().manual_seed(0)


def _r(*shape):
    return torch.rand(shape, generator=_GEN, dtype=torch.float64)


# Per op: the forward's inputs, then the output's shape (SPEC.md's argument order).
OPS = {
    "scan": ((_r(B, T, D), _r(B, T, D), _r(B, D)), (B, T, D)),
    "recurrence": ((_r(B, T, D), _r(B, T, D), _r(H, D // H, D // H) - 0.5, _r(D), _r(B, D)), (B, T, D)),
    "mdi": ((_r(B, T, D), _r(B, T, N), _r(N, D), _r(B, N, D)), (B, T, N, D)),
    "memory_update": ((_r(B, S, D), _r(B, T, D), _r(B, T, D), _r(B, T)), (B, T + 1, S, D)),
}
EXTRA = {"scan": (False,), "mdi": (1e-3,)}  # the non-tensor arguments after the arrays


def _saved(op, inputs, out):
    """What the backward reads besides grad (ops.py saves the same): scan a, h, h0; the others inputs and output."""
    return (inputs[0], out, inputs[2]) if op == "scan" else (*inputs, out)


def _forward_args(op):
    inputs, out_shape = OPS[op]
    return [*inputs, torch.full(out_shape, float("nan"), dtype=torch.float64), *EXTRA.get(op, ())]


def _backward_args(op):
    """grad, what the backward reads, one gradient buffer per input, then the non-tensor arguments."""
    inputs, out_shape = OPS[op]
    out = torch.full(out_shape, float("nan"), dtype=torch.float64)
    getattr(_C, f"{op}_fwd")(*inputs, out, *EXTRA.get(op, ()))
    nan_like = [torch.full_like(x, float("nan")) for x in inputs]
    return [cotangent(out_shape, 1), *_saved(op, inputs, out), *nan_like, *EXTRA.get(op, ())]


ENTRIES = [(op, d) for op in OPS for d in ("fwd", "bwd")]


@pytest.mark.parametrize("op", list(OPS))
def test_forward_writes_the_callers_output_in_place(op):
    args = _forward_args(op)
    out = args[len(OPS[op][0])]
    getattr(_C, f"{op}_fwd")(*args)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("op", list(OPS))
def test_backward_takes_the_gradient_first(op):
    """<op>_bwd(grad, *inputs, output, *gradient buffers, ...) writes SPEC.md's gradients into the buffers."""
    assert getattr(_C, f"{op}_bwd").__doc__.startswith(f"{op}_bwd(grad: ")
    args = _backward_args(op)
    getattr(_C, f"{op}_bwd")(*args)
    inputs = OPS[op][0]
    first = 1 + len(_saved(op, inputs, None))
    buffers = args[first:first + len(inputs)]
    for i, (got, want) in enumerate(zip(buffers, spec_grads(op, (*inputs, *EXTRA.get(op, ())), OPS[op][1], 1))):
        assert_close(got, want, 1e-12, f"{op} gradient {i}")


def _corruptions(x: torch.Tensor):
    """(kind, corrupted copy of x, exception type): every way an array can be unsafe for a raw-pointer kernel."""
    bad = [("size", x[..., :-1].contiguous(), ValueError), ("rank", x[None], ValueError),
           ("dtype", x.float(), ValueError), ("integer", x.long(), TypeError)]
    if x.dim() > 1:
        bad.append(("layout", x.transpose(0, -1).contiguous().transpose(0, -1), ValueError))
    return bad


@pytest.mark.parametrize("op,direction", ENTRIES, ids=[f"{op}_{d}" for op, d in ENTRIES])
def test_every_unsafe_array_is_refused_by_name(op, direction):
    fn = getattr(_C, f"{op}_{direction}")
    valid = _forward_args(op) if direction == "fwd" else _backward_args(op)
    names = [p.split(":")[0] for p in fn.__doc__.split("(", 1)[1].split(") ->")[0].split(", ")]
    for i, (name, x) in enumerate(zip(names, valid)):
        if not isinstance(x, torch.Tensor):
            continue
        for kind, bad, exc in _corruptions(x):
            args = list(valid)
            args[i] = bad
            # The first array sets the sizes and the dtype: a wrong one there is reported by the array it disagrees with.
            pattern = r"^\w+: " if i == 0 and kind in ("size", "dtype") else rf"^{name}: "
            with pytest.raises(exc, match=pattern):
                fn(*args)


def test_float16_is_refused_on_the_cpu():
    a = torch.rand(2, 4, 8, dtype=torch.float16)
    with pytest.raises(TypeError, match="float16 is not supported by the CPU kernels"):
        _C.scan_fwd(a, a, None, torch.empty_like(a), False)


@pytest.mark.skipif(not torch.cuda.is_available() or _C.has_cuda, reason="needs a GPU and a build without CUDA")
def test_cuda_tensors_on_a_build_without_cuda_raise():
    a = torch.rand(2, 4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="built without CUDA kernels"):
        _C.scan_fwd(a, a, None, torch.empty_like(a), False, torch.cuda.current_stream().cuda_stream)
