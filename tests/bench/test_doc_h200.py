"""bench/doc_h200.py: the quality runs read at the GPT's pre-training time."""
import json

import doc_h200


def _run(arch, seed, step_s, curve):
    return {"arch": arch, "seed": seed, "status": "ok", "params": 1000,
            "stages": {"pretrain": {"steps": 400, "time_s": 400 * step_s}},
            "eval_curves": {"pretrain": {"tiny_valid": curve}}}


def test_loss_at_reads_between_evaluations():
    curve = [[0, 9.0], [100, 5.0], [200, 4.0]]
    assert doc_h200._loss_at(curve, 150) == 4.5
    assert doc_h200._loss_at(curve, 100) == 5.0
    assert doc_h200._loss_at(curve, 250) == 4.0                          # past the last evaluation: the last loss


def test_quality_tables_read_each_curve_at_the_gpts_time(tmp_path, monkeypatch):
    run = tmp_path / "run-x"
    run.mkdir()
    runs = [_run("gpt", 1, 0.02, [[0, 9.0], [200, 5.0], [400, 4.0]]),
            _run("mmrec", 1, 0.05, [[0, 9.0], [100, 5.0], [200, 4.0], [400, 3.0]]),
            _run("mmrec", 2, 0.05, [[0, 9.0], [100, 6.0], [200, 5.0], [400, 4.0]])]
    (run / "quality_cuda.json").write_text(json.dumps({"command": "python bench/compare_models.py quality",
                                                       "runs": runs}))
    monkeypatch.setattr(doc_h200, "DEVICE", tmp_path)
    monkeypatch.setattr(doc_h200, "QUALITY_RUN", ("run-x", "quality_cuda.json"))
    lines = doc_h200.quality_tables(lambda data: ["TABLE"])
    assert "TABLE" in lines
    assert "| GPT (SDPA) | 400 | 4.000 |" in lines                      # 8 s: the GPT's own 400 steps
    assert "| MM-Rec | 160 | 4.900 |" in lines                          # 8 s / 0.05 s: seeds read 4.4 and 5.4 at 160


def test_row_clock_names_what_the_run_counted():
    assert doc_h200._row_clock({"row_seconds": 30.0}) == "its warm-up and steps have run 30 s"
    assert doc_h200._row_clock({"row_seconds": 12.5, "row_clock": "timed steps"}) == "its timed steps have run 12.5 s"
