"""mmrec_ops.dispatch: the choice of a backend by device, forcing (context manager and MMREC_BACKEND), clear
errors, what is reported as built, the backward on the forward's backend, and the cost of a call."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import mmrec_ops
from mmrec_ops import dispatch

OPS = ("scan", "recurrence", "mdi", "memory_update", "memory_read")


def test_cpu_extension_is_built():
    assert "cpu" in mmrec_ops.built_backends(), dispatch.why_not_built("cpu")


def test_every_op_is_served_by_the_cpp_kernel_on_cpu_tensors():
    """With the extension built (test above), the C++ kernels serve all five ops on the CPU; no GPU, no server."""
    built = mmrec_ops.built_backends()
    cuda = "cuda" if "cuda" in built else "triton" if "triton" in built else "ref"
    read = "triton" if "triton" in built else cuda               # memory_read: the Triton kernel first on CUDA
    want = {op: {"cpu": "cpu", "cuda": (read if op == "memory_read" else cuda) if torch.cuda.is_available() else None}
            for op in OPS}
    assert mmrec_ops.available_backends() == want


def test_built_backends_are_what_this_machine_has():
    expected = ["ref", "cpu"]
    if torch.cuda.is_available() and mmrec_ops._C.has_cuda:
        expected.append("cuda")
    triton_runs = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
    if triton_runs and _importable("triton"):
        expected.append("triton")
    assert mmrec_ops.built_backends() == expected


def _importable(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def test_forced_backend_is_used_and_released():
    a, b = torch.rand(1, 3, 2), torch.randn(1, 3, 2)
    with mmrec_ops.backend("ref"):
        assert dispatch.forced_backend() == "ref"
        assert dispatch.wrappers("scan", a.device) is dispatch.resolve("scan", "cpu", "ref")[1]
        ref = mmrec_ops.scan(a, b)
    assert dispatch.forced_backend() is None
    assert dispatch.resolve("scan", "cpu") == dispatch.resolve("scan", "cpu", "cpu")
    assert torch.allclose(ref, mmrec_ops.scan(a, b), atol=1e-6)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown mmrec backend 'tpu'"):
        with mmrec_ops.backend("tpu"):
            pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where no GPU exists")
def test_forcing_a_backend_that_cannot_run_raises():
    with pytest.raises(RuntimeError, match="mmrec backend 'cuda' cannot run here"):
        with mmrec_ops.backend("cuda"):
            pass


def test_forced_backend_without_a_kernel_for_the_device_raises():
    """Forcing the C++ CPU backend never silently serves CUDA tensors with something else."""
    with pytest.raises(ValueError, match="'cpu' was forced but has no 'scan' kernel for cuda tensors"):
        dispatch.resolve("scan", "cuda", "cpu")


def test_environment_variable_forces_the_backend():
    code = ("import torch, mmrec_ops; from mmrec_ops import dispatch; "
            "print(dispatch.forced_backend(), dispatch.wrappers('scan', torch.device('cpu')) is "
            "dispatch.resolve('scan', 'cpu', 'ref')[1])")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MMREC_BACKEND": "ref"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "ref True"
    bad = subprocess.run([sys.executable, "-c", "import torch, mmrec_ops; "
                          "mmrec_ops.scan(torch.rand(1,2,2), torch.rand(1,2,2))"],
                         env={**os.environ, "MMREC_BACKEND": "nope"}, capture_output=True, text=True)
    assert bad.returncode != 0 and "MMREC_BACKEND='nope' is not a backend" in bad.stderr


def test_import_from_any_directory_runs_the_readme_example(tmp_path):
    code = "import torch, mmrec_ops; print(torch.ops.mmrec.scan(torch.rand(2,5,3), torch.randn(2,5,3)).shape)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "torch.Size([2, 5, 3])"


def test_backward_runs_the_backend_that_ran_the_forward(monkeypatch):
    """A forced backend also serves the backward, even when backward() runs after the `with` block."""
    calls = []
    chosen = dispatch.resolve("scan", "cpu", "ref")[1]
    spy = chosen._replace(backward=lambda *args: calls.append("ref") or chosen.backward(*args))
    monkeypatch.setattr(dispatch, "resolve", lambda op, dev, name=None: ("ref", spy) if name == "ref" else None)
    a = torch.rand(2, 4, 3, requires_grad=True)
    with mmrec_ops.backend("ref"):
        h = mmrec_ops.scan(a, torch.randn(2, 4, 3))
    h.sum().backward()
    assert calls == ["ref"]


def test_resolution_is_cached_per_op_device_and_forced_backend():
    """A call looks its wrappers up in a cache: no backend probing (imports, why_not_built) per call."""
    dispatch.resolve.cache_clear()
    a = torch.rand(1, 2, 2)
    for _ in range(3):
        mmrec_ops.scan(a, a)
        with mmrec_ops.backend("ref"):
            mmrec_ops.scan(a, a)
    info = dispatch.resolve.cache_info()
    assert (info.misses, info.hits) == (2, 4)
