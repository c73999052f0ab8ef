"""bench/compare_models.py --quick modes and bench/plot_benchmarks.py, end to end on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BENCH

ROW_KEYS = {"throughput": {"arch", "T", "batch", "micro_batch", "tokens_per_step", "params", "status", "tokens_per_s",
                           "step_s", "peak_mib"},
            "generate": {"arch", "context", "batch", "params", "status", "decode_tokens_per_s", "token_ms",
                         "state_mib", "prefill_tokens_per_s", "weights_mib"}}


def _run(*args, timeout=300):
    proc = subprocess.run([sys.executable, str(BENCH / "compare_models.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory, bench_data):
    """The three quick JSONs (two archs each for throughput/generate; quality on the small data directory)."""
    root = tmp_path_factory.mktemp("compare")
    _run("throughput", "--quick", "--archs", "mmrec,lstm", "--profile", "5", "--out", root / "throughput_cpu.json")
    _run("generate", "--quick", "--archs", "mmrec,gpt", "--out", root / "generate_cpu.json")
    _run("quality", "--quick", "--archs", "mmrec,gpt,lstm", "--data-dir", bench_data, "--runs-dir", root / "runs",
         "--out", root / "quality_cpu.json", "--jobs", "2")
    return root


@pytest.mark.parametrize("kind", ["throughput", "generate"])
def test_quick_speed_modes_write_rows(quick_results, kind):
    data = json.loads((quick_results / f"{kind}_cpu.json").read_text())
    assert data["kind"] == kind and data["quick"] and data["command"].startswith("python bench/compare_models.py")
    rows = data["rows"]
    archs = {"throughput": {"mmrec", "lstm"}, "generate": {"mmrec", "gpt"}}[kind]
    assert {r["arch"] for r in rows} == archs and len(rows) == 4
    for r in rows:
        assert r["status"] == "ok", r
        assert ROW_KEYS[kind] <= set(r), ROW_KEYS[kind] - set(r)
        assert r["tokens_per_s" if kind == "throughput" else "decode_tokens_per_s"] > 0


def test_quick_throughput_profiles_one_step(quick_results):
    for r in json.loads((quick_results / "throughput_cpu.json").read_text())["rows"]:
        prof = r["profile"]
        kernels = prof["kernels"]
        assert 1 <= len(kernels) <= 5 and all(k["name"] and k["calls"] >= 1 for k in kernels)
        assert [k["us"] for k in kernels] == sorted((k["us"] for k in kernels), reverse=True)
        assert 0 < sum(k["us"] for k in kernels) <= prof["total_us"]
        assert prof["total_us"] < 1e6 * r["step_s"] * 10                   # one step's operators, not the run's


def test_quick_generate_state_sizes(quick_results):
    rows = json.loads((quick_results / "generate_cpu.json").read_text())["rows"]
    by = {(r["arch"], r["context"]): r["state_mib"] for r in rows}
    assert by[("mmrec", 16)] == by[("mmrec", 64)] > 0                    # constant-size state
    assert by[("gpt", 64)] > 3 * by[("gpt", 16)]                          # the KV cache grows with the context


def test_quick_quality_collects_every_stage(quick_results):
    data = json.loads((quick_results / "quality_cpu.json").read_text())
    runs = data["runs"]
    assert [(r["arch"], r["seed"], r["status"]) for r in runs] == [("mmrec", 1, "ok"), ("gpt", 1, "ok"),
                                                                      ("lstm", 1, "ok")]
    for r in runs:
        assert set(r["stages"]) == {"pretrain", "instruct", "chat"}
        assert set(r["stages"]["pretrain"]["held_out"]) == {"tinyshakespeare_valid", "gutenberg_valid"}
        assert set(r["stages"]["instruct"]["held_out"]) == {"alpaca_valid"}
        assert set(r["stages"]["chat"]["held_out"]) == {"oasst_valid"}
        assert r["params"] > 100_000 and "--arch" in r["command"]
        config = json.loads((Path(r["run_dir"]) / "config.json").read_text())
        assert config["stages"]["pretrain"]["tbptt"] is False             # every arch: the same random windows
    pretrain_tokens = {r["stages"]["pretrain"]["tokens"] for r in runs}
    assert len(pretrain_tokens) == 1                                      # equal tokens


def test_plot_benchmarks_writes_docs_from_the_jsons(quick_results, tmp_path):
    docs, img = tmp_path / "benchmarks.md", tmp_path / "img"
    proc = subprocess.run([sys.executable, str(BENCH / "plot_benchmarks.py"), "--results", str(quick_results),
                           "--md", str(docs), "--img", str(img)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = docs.read_text()
    for needle in ("Training throughput", "Generation", "Quality", "Goals", "bench/device_models.sh"):
        assert needle in text, needle
    pngs = sorted(p.name for p in img.glob("*.png"))
    assert pngs and all((img / p).stat().st_size > 5_000 for p in pngs)
    for p in pngs:
        assert f"img/{p}" in text                                          # every plot is shown
