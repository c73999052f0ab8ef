"""The shape of the code (DESIGN.md): imports point down only (the import-linter contracts in pyproject.toml), the
face of mmrec_ops is imported by no module of its own, and no Python module is over 600 lines."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ["ops-layers", "ops-backends", "ops-not-model", "model-layers"]
MAX_LINES = 600

needs_import_linter = pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                                         reason="import-linter is not installed (pip install '.[test]')")


@needs_import_linter
@pytest.mark.parametrize("contract", CONTRACTS)
def test_import_contract_is_kept(contract):
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    res = subprocess.run([lint, "--contract", contract, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


@needs_import_linter
def test_the_face_of_mmrec_ops_is_imported_only_for_the_extension():
    """The contracts ignore `from .. import _C` (a compiled module grimp cannot see, so it reads as an import of
    mmrec_ops itself); every other import of the face from inside the package would be an upward import."""
    import grimp
    graph = grimp.build_graph("mmrec_ops", cache_dir=None)
    for importer in graph.find_modules_that_directly_import("mmrec_ops"):
        for detail in graph.get_import_details(importer=importer, imported="mmrec_ops"):
            assert detail["line_contents"] == "from .. import _C", detail


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "python").rglob("*.py")))
def test_module_is_at_most_600_lines(path):
    lines = len((ROOT / path).read_text().splitlines())
    assert lines <= MAX_LINES, f"{path}: {lines} lines (split it by what it holds)"
