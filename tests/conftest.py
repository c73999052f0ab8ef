"""Test-wide settings: NaN-poisoned kernel outputs, Hypothesis profile, and the check that every
backend built on this machine is collected by the op tests (a silently skipped backend fails the run)."""
from __future__ import annotations

import importlib.util
import os
import tempfile

# A fresh compile cache per run: torch's on-disk cache can replay graphs traced against an older op schema.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="mmrec-inductor-"))

import torch  # noqa: E402

# Without a GPU, the triton backend runs CPU tensors through Triton's interpreter, so a plain `pytest` tests it
# too. Set before mmrec_ops (and so triton.jit) is imported: the interpreter is chosen when kernels are defined.
if importlib.util.find_spec("triton") is not None and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import mmrec_ops  # noqa: E402
from mmrec_ops import dispatch, outputs  # noqa: E402

outputs.set_poison(True)
torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))

settings.register_profile(
    "mmrec", deadline=None, max_examples=int(os.environ.get("MMREC_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], derandomize=True, print_blob=True)
settings.load_profile("mmrec")


def _expected_backends():
    """Backends that must be collected: MMREC_EXPECT_BACKENDS (comma list) if set, else every built one.
    The C++ CPU backend is always expected: a broken extension must fail the run, not fall back."""
    env = os.environ.get("MMREC_EXPECT_BACKENDS")
    expected = set(env.split(",")) if env else set(mmrec_ops.built_backends())
    return expected | {"ref", "cpu"}


def pytest_collection_finish(session):
    op_items = [it for it in session.items if "tests/ops/" in str(it.fspath).replace(os.sep, "/")]
    if not op_items or session.config.option.keyword or session.config.option.markexpr:
        return  # a filtered run checks nothing
    collected = {it.callspec.params["backend"] for it in op_items
                 if hasattr(it, "callspec") and "backend" in it.callspec.params}
    missing = _expected_backends() - collected
    if missing:
        reasons = {b: dispatch.why_not_built(b) for b in missing}
        pytest.exit(f"backends expected but not collected by tests/ops: {reasons}", returncode=1)
