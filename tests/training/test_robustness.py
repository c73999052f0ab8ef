"""The trainer never surprises: typed settings refused with one line naming the key, honest resume (no run,
damaged checkpoints, the stage plan, whole-stage loss summaries), no silent reuse of a failed run's files."""
import json
import math

import pytest

from mmrec_model import train
from mmrec_model.checkpoint import latest_checkpoint, list_checkpoints
from mmrec_model.tokenizer import Tokenizer
from mmrec_model.training.config import ConfigError, config_from_dict, load_config_file, parse_set

from .conftest import read_metrics


def _run(args, stop_at=None):
    stop = None if stop_at is None else (lambda stage, step: (stage, step) == stop_at)
    return train.main([str(a) for a in args], stop=stop)


# ------------------------------------------------------------------------------------------ typed values
@pytest.mark.parametrize("item, key, value", [
    ("stages.pretrain.lr=3e-4", "lr", 3e-4),
    ("stages.pretrain.lr=3E-4", "lr", 3e-4),
    ("stages.pretrain.lr=0.0003", "lr", 3e-4),
    ("stages.pretrain.lr=1e6", "lr", 1e6),
    ("stages.pretrain.max_steps=010", "max_steps", 10),
    ("stages.pretrain.tbptt=false", "tbptt", False),
    ("stages.pretrain.tbptt=yes", "tbptt", True),
])
def test_set_values_are_parsed_by_the_field_type(item, key, value):
    cfg = config_from_dict(parse_set([item]))
    got = getattr(cfg.stages["pretrain"], key)
    assert got == value and type(got) is type(value)


def test_yaml_numbers_are_typed_by_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 010\nstages:\n  pretrain: {lr: 3e-4, warmup_steps: 07}\n")
    cfg = config_from_dict(load_config_file(path))
    assert cfg.seed == 10 and cfg.stages["pretrain"].lr == 3e-4 and cfg.stages["pretrain"].warmup_steps == 7
    assert json.loads(json.dumps(cfg.to_dict()))["stages"]["pretrain"]["lr"] == 3e-4


BAD_VALUES = [
    "stages.pretrain.lr=nan", "stages.pretrain.lr=abc", "seed=1:30", "seed=abc", "seed=-1",
    "stages.pretrain.max_steps=0", "stages.pretrain.max_steps=-3", "stages.pretrain.max_tokens=-1",
    "stages.pretrain.weight_decay=-1", "stages.pretrain.min_lr_ratio=5", "stages.pretrain.tbptt=maybe",
    "stages.pretrain.micro_batch_size=0", "stages.pretrain.eval_every=-1", "stages.pretrain.save_every=-1",
    "keep_checkpoints=0", "stages.pretrain.grad_clip=-1", "threads=-1", "stages.pretrain.batch_size=0",
    "stages.pretrain.batch_size=-4", "stages.pretrain.log_every=0", "stages.pretrain.eval_windows=0",
    "stages.pretrain.eval_batch_size=0", "model.d_model=abc", "model.no_such_field=1", "stages=5", "model=[1]",
    "device=meta", "stages.finetune.lr=1", "amp=fp8", "backend=gpu", "compile=maybe",
    "compile_mode=max-autotune",
]


@pytest.mark.parametrize("item", BAD_VALUES)
def test_bad_values_stop_before_any_work_naming_the_key(item, tmp_path, capsys):
    key, _, value = item.partition("=")
    named = "finetune" if "finetune" in key else key.split(".")[-1]
    with pytest.raises(ConfigError) as info:
        config_from_dict(parse_set([item]))
    message = str(info.value)
    assert "\n" not in message and named in message, message
    assert named == "finetune" or value.strip("[]") in message, message
    out = tmp_path / "run"
    assert _run(["--set", item, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and named in err
    assert not out.exists()                              # nothing written, nothing trained


@pytest.mark.parametrize("flags, key", [
    (["--max-steps", "0"], "max_steps"), (["--max-steps", "-3"], "max_steps"), (["--max-tokens", "-1"], "max_tokens"),
    (["--threads", "-1"], "threads"), (["--device", "meta"], "device"), (["--seed", "abc"], "seed"),
])
def test_bad_flags_are_refused(flags, key, tmp_path, capsys):
    assert _run(flags + ["--out", tmp_path / "run"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_config_file_errors_name_the_file(tmp_path, capsys):
    for name, text in (("empty.json", ""), ("garbage.json", "{not json"), ("list.yaml", "- 1\n- 2\n"),
                       ("binary.cfg", "\x00\x01{[")):
        path = tmp_path / name
        path.write_text(text)
        assert _run(["--config", path, "--out", tmp_path / "run"]) == 2
        assert str(path) in capsys.readouterr().err


def test_abbreviated_flags_are_not_guessed(tmp_path):
    with pytest.raises(SystemExit) as info:
        _run(["--resum", "--out", tmp_path / "x"])
    assert info.value.code == 2


# ------------------------------------------------------------------------------------------ runs and resume
PRETRAIN = ["--stage", "pretrain"]


def test_resume_refuses_a_folder_with_no_run(tmp_path, capsys, tiny_config, small_data):
    assert _run(["--resume", "--out", tmp_path / "typo", "--config", tiny_config, "--data-dir", small_data]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_a_failed_runs_tokenizer_is_not_reused(tmp_path, capsys, tiny_config, small_data):
    out = tmp_path / "run"
    out.mkdir()
    Tokenizer.train(["too little text " * 3], vocab_size=270).save(out / "tokenizer.json")   # a failed run's
    assert _run(["--config", tiny_config, "--data-dir", small_data, "--max-steps", 1, "--out", out] + PRETRAIN) == 0
    assert "left by a run that trained nothing; replacing it" in capsys.readouterr().out
    assert Tokenizer.load(out / "tokenizer.json").vocab_size == 512


def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, tiny_config, small_data):
    out = tmp_path / "run"
    base = ["--config", tiny_config, "--data-dir", small_data, "--max-steps", 5, "--out", out,
            "--set", "stages.pretrain.save_every=1"] + PRETRAIN
    assert _run(base, stop_at=("pretrain", 3)) == 130
    latest = latest_checkpoint(out / "pretrain")
    assert latest.name == "ckpt-00000003"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])               # truncated
    capsys.readouterr()
    assert _run(base + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert f"checkpoint {latest} is damaged" in text and "resuming from" in text and "ckpt-00000002" in text
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == [1, 2, 3, 4, 5]                               # step 3 recomputed from checkpoint 2

    for ckpt in list_checkpoints(out / "pretrain"):               # nothing intact: a named error, no traceback
        (ckpt / "trainer_state.pt").write_bytes(b"garbage")
    (out / "pretrain" / "final" / "meta.json").unlink()
    capsys.readouterr()
    assert _run(base + ["--resume"]) == 2
    assert "no intact checkpoint" in capsys.readouterr().err


def test_loss_summary_and_plan_survive_resumes(tmp_path, capsys, tiny_config, small_data):
    once, cut = tmp_path / "once", tmp_path / "cut"
    common = ["--config", tiny_config, "--data-dir", small_data, "--max-steps", 6] + PRETRAIN
    assert _run(common + ["--out", once]) == 0
    capsys.readouterr()
    assert _run(common + ["--out", cut], stop_at=("pretrain", 4)) == 130
    hint = capsys.readouterr().err.split("resume with: ")[1].strip()
    assert "--stage pretrain" in hint and "--resume" in hint and str(cut) in hint
    assert _run(["--resume", "--out", cut]) == 0                  # the saved plan: pretrain only
    assert not (cut / "instruct").exists()
    meta = lambda run: json.loads((run / "pretrain" / "final" / "meta.json").read_text())
    losses = [r["loss"] for r in read_metrics(once)]
    assert meta(cut)["loss_first"] == meta(once)["loss_first"] == pytest.approx(sum(losses) / len(losses))
    assert meta(cut)["loss_last"] == meta(once)["loss_last"]
    assert math.isfinite(meta(cut)["loss_first"])


def test_compile_failure_falls_back_to_eager_with_a_message(tmp_path, capsys, monkeypatch, tiny_config, small_data):
    import torch

    class Broken(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            raise RuntimeError("backend compiler failed: no C compiler")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Broken(module))
    out = tmp_path / "run"
    assert _run(["--config", tiny_config, "--data-dir", small_data, "--max-steps", 2, "--out", out,
                 "--compile", "on"] + PRETRAIN) == 0
    assert "torch.compile failed (RuntimeError: backend compiler failed" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(out)] == [1, 2]


def test_cuda_graphs_only_for_single_process_cuda(tmp_path, monkeypatch, tiny_config, small_data):
    """--compile on for a CPU run compiles with torch's default mode: reduce-overhead (CUDA graphs, the CUDA
    default) is not asked for off the GPU."""
    import torch

    modes = []

    def record(module, **kw):
        modes.append(kw.get("mode"))
        return module

    monkeypatch.setattr(torch, "compile", record)
    assert _run(["--config", tiny_config, "--data-dir", small_data, "--max-steps", 1, "--out", tmp_path / "run",
                 "--compile", "on", "--compile-mode", "reduce-overhead"] + PRETRAIN) == 0
    assert modes == [None]


def test_compiled_tbptt_step_sees_a_bounded_position(tmp_path, monkeypatch, tiny_config, small_data):
    """CUDA graphs (torch.compile mode="reduce-overhead") record one graph per value of each int input of the
    compiled step. With truncated BPTT the carried position grows every step, so the step must see only the
    position within its chunk: here every int input of the compiled graphs takes one value after the first steps,
    and the losses equal those of the eager run."""
    import torch

    int_inputs = []

    def recording_backend(gm, example_inputs):
        compiled = torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

        def run(*args):
            int_inputs.append(tuple(a for a in args if isinstance(a, int)))
            return compiled(*args)
        return run

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real_compile(module, backend=recording_backend))
    torch._dynamo.reset()
    args = ["--config", tiny_config, "--data-dir", small_data, "--max-steps", 6] + PRETRAIN
    assert _run(args + ["--out", tmp_path / "compiled", "--compile", "on"]) == 0
    assert _run(args + ["--out", tmp_path / "eager", "--compile", "off"]) == 0
    assert len(int_inputs) == 6
    assert len(set(int_inputs[2:])) == 1, f"int inputs of the compiled step per step: {int_inputs}"
    compiled_losses = [r["loss"] for r in read_metrics(tmp_path / "compiled")]
    eager_losses = [r["loss"] for r in read_metrics(tmp_path / "eager")]
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
