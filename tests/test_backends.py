"""The backend registry: choice by device, forcing, clear errors, and what is reported as built."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import mmrec_ops
from mmrec_ops import backends


def test_cpu_extension_is_built():
    assert "cpu" in mmrec_ops.built_backends(), backends.why_not_built("cpu")


def test_available_backends_names_the_server_of_every_op():
    table = mmrec_ops.available_backends()
    assert set(table) == set(backends.OPS)
    for op, by_device in table.items():
        assert by_device["cpu"] in ("cpu", "ref", "triton")
        expected = "cpu" if op in mmrec_ops._native.CPU_OPS else "ref"
        assert by_device["cpu"] == expected, f"{op} on cpu"
        if not torch.cuda.is_available():
            assert by_device["cuda"] is None


def test_default_choice_on_cpu_is_the_cpp_kernel():
    assert backends.resolve("scan", "cpu")[0] == "cpu"


def test_forced_backend_is_used():
    a, b = torch.rand(1, 3, 2), torch.randn(1, 3, 2)
    with mmrec_ops.backend("ref"):
        assert backends.resolve("scan", "cpu")[0] == "ref"
        ref = mmrec_ops.scan(a, b)
    assert backends.resolve("scan", "cpu")[0] == "cpu"
    assert torch.allclose(ref, mmrec_ops.scan(a, b), atol=1e-6)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown mmrec backend"):
        with mmrec_ops.backend("tpu"):
            pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where no GPU exists")
def test_forcing_a_backend_that_cannot_run_raises():
    with pytest.raises(RuntimeError, match="cannot run here"):
        with mmrec_ops.backend("cuda"):
            pass


def test_forced_backend_without_a_kernel_for_the_device_raises():
    """Forcing the C++ CPU backend never silently serves CUDA tensors with something else."""
    with mmrec_ops.backend("cpu"):
        with pytest.raises(ValueError, match="has no 'scan' kernel for cuda tensors"):
            backends.resolve("scan", "cuda")


def test_environment_variable_forces_the_backend():
    code = ("import torch, mmrec_ops; from mmrec_ops import backends; "
            "print(backends.resolve('scan', 'cpu')[0])")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MMREC_BACKEND": "ref"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ref"
    bad = subprocess.run([sys.executable, "-c", "import torch, mmrec_ops; "
                          "mmrec_ops.scan(torch.rand(1,2,2), torch.rand(1,2,2))"],
                         env={**os.environ, "MMREC_BACKEND": "nope"}, capture_output=True, text=True)
    assert bad.returncode != 0 and "MMREC_BACKEND='nope' is not a backend" in bad.stderr


def test_import_from_any_directory_runs_the_readme_example(tmp_path):
    code = "import torch, mmrec_ops; print(torch.ops.mmrec.scan(torch.rand(2,5,3), torch.randn(2,5,3)).shape)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "torch.Size([2, 5, 3])"


def test_kernel_outputs_are_zero_copy_views():
    """The binding writes straight into the tensor allocated in Python (no hidden copies)."""
    a, b = torch.rand(2, 4, 8), torch.randn(2, 4, 8)
    h = torch.full_like(a, float("nan"))
    mmrec_ops._native.C.scan_fwd(a, b, None, h, False, 0)
    assert torch.isfinite(h).all()


def test_binding_rejects_inconsistent_arrays():
    a = torch.rand(2, 4, 8)
    with pytest.raises(ValueError, match="b: size mismatch"):
        mmrec_ops._native.C.scan_fwd(a, torch.rand(2, 4, 7), None, torch.empty_like(a), False, 0)
    with pytest.raises(ValueError, match="must be contiguous"):
        mmrec_ops._native.C.scan_fwd(a, a.transpose(0, 1).contiguous().transpose(0, 1), None,
                                     torch.empty_like(a), False, 0)
    with pytest.raises(TypeError, match="float16 is not supported"):
        x = a.half()
        mmrec_ops._native.C.scan_fwd(x, x, None, torch.empty_like(x), False, 0)


def test_backward_runs_the_backend_that_ran_the_forward(monkeypatch):
    """A forced backend also serves the backward, even when backward() runs after the `with` block."""
    calls = []
    impl = backends._IMPLS[("ref", "scan")]
    monkeypatch.setitem(backends._IMPLS, ("ref", "scan"), backends.Impl(
        impl.forward, lambda *args: calls.append("ref") or impl.backward(*args)))
    a = torch.rand(2, 4, 3, requires_grad=True)
    with mmrec_ops.backend("ref"):
        h = mmrec_ops.scan(a, torch.randn(2, 4, 3))
    h.sum().backward()
    assert calls == ["ref"]
