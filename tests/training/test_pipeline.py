"""End to end: all three stages, resume equivalence, kills, DDP, the chat CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mmrec_model import MMRecLM, train
from mmrec_model.data import STAGES
from mmrec_model.checkpoint import latest_checkpoint, load_trainer_state
from mmrec_model.tokenizer import Tokenizer

from .conftest import read_metrics

STEPS = "6"


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("MMREC_BACKEND", None)
    return env


def _train(args, stop_at=None):
    """The CLI in-process; stop_at=(stage, step) ends the run there as SIGINT would."""
    stop = None if stop_at is None else (lambda stage, step: (stage, step) == stop_at)
    return train.main([str(a) for a in args], stop=stop)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, small_data, tiny_config):
    out = tmp_path_factory.mktemp("runs") / "full"
    assert _train(["--config", tiny_config, "--data-dir", small_data, "--max-steps", STEPS, "--out", out]) == 0
    return out


def test_all_stages_smoke(full_run, capsys):
    out = full_run
    for stage in STAGES:
        final = out / stage / "final"
        model = MMRecLM.from_pretrained(final)
        assert model.config.vocab_size == Tokenizer.load(final / "tokenizer.json").vocab_size == 512
        losses = [r["loss"] for r in read_metrics(out) if r["stage"] == stage]
        assert len(losses) == int(STEPS)
        assert sum(losses[-2:]) < sum(losses[:2]), (stage, losses)          # train loss falls in every stage
        evals = [r for r in read_metrics(out, "eval") if r["stage"] == stage]
        for name in {r["set"] for r in evals}:
            curve = [r["loss"] for r in evals if r["set"] == name]
            assert curve[-1] < curve[0], (stage, name, curve)              # and so does held-out loss
            assert all(r["ppl"] == pytest.approx(2.718281828 ** r["loss"], rel=1e-6) for r in evals)
    assert (out / "loss.png").stat().st_size > 10_000
    assert (out / "samples.md").read_text().count("**prompt:**") == 5
    assert json.loads((out / "config.json").read_text())["stages"]["chat"]["max_steps"] == int(STEPS)


def _losses(out):
    return [(r["stage"], r["step"], r["loss"]) for r in read_metrics(out)]


def test_resume_gives_identical_losses(full_run, tmp_path, small_data, tiny_config):
    out = tmp_path / "resumed"
    base = ["--config", tiny_config, "--data-dir", small_data, "--max-steps", STEPS, "--out", out]
    assert _train(base, stop_at=("pretrain", 4)) == 130     # TBPTT state carried through the checkpoint
    assert latest_checkpoint(out / "pretrain").name == "ckpt-00000004"
    assert _train(base + ["--resume"], stop_at=("instruct", 2)) == 130
    assert _train(base + ["--resume"]) == 0
    assert _losses(out) == _losses(full_run)                     # bit-identical, every stage
    evals = lambda o: [(r["stage"], r["step"], r["set"], r["loss"]) for r in read_metrics(o, "eval")]
    assert evals(out) == evals(full_run)
    assert _train(base) == 2                                     # an existing run is never overwritten


def _start_and_wait(cmd, ready, what):
    """Starts a training subprocess and returns it once `ready()` holds."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 150
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"training ended or stalled before {what}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return proc


def _latest_step(out):
    latest = latest_checkpoint(out / "pretrain")
    return -1 if latest is None else int(latest.name.split("-")[1])


def _last_logged(out):
    try:
        return max([r["step"] for r in read_metrics(out)], default=-1)
    except (OSError, ValueError):
        return -1


def test_kill_and_ctrl_c_leave_a_readable_checkpoint(tmp_path, small_data, tiny_config):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mmrec_model.train", "--config", str(tiny_config), "--data-dir", str(small_data),
           "--stage", "pretrain", "--max-steps", "500", "--set", "stages.pretrain.save_every=1", "--out", str(out)]
    proc = _start_and_wait(cmd, lambda: _latest_step(out) >= 3, "checkpoint 3")
    proc.send_signal(signal.SIGKILL)               # while a checkpoint is written every step
    proc.wait(30)
    ckpt = latest_checkpoint(out / "pretrain")
    state = load_trainer_state(ckpt)
    assert state["step"] >= 3 and int(ckpt.name.split("-")[1]) == state["step"]
    MMRecLM.from_pretrained(ckpt)

    cmd[cmd.index("stages.pretrain.save_every=1")] = "stages.pretrain.save_every=1000"
    proc = _start_and_wait(cmd + ["--resume"], lambda: _last_logged(out) > state["step"] + 1, "resumed steps")
    proc.send_signal(signal.SIGINT)                # Ctrl-C: checkpoint at the next step boundary, exit 130
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    stopped = latest_checkpoint(out / "pretrain")
    assert f"stopped at step {int(stopped.name.split('-')[1])}" in err
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == list(range(1, steps[-1] + 1))            # the resumed run rewrote no step twice
    rc = _train(["--resume", "--out", out, "--max-steps", str(steps[-1] + 1), "--stage", "pretrain"])
    assert rc == 0 and (out / "pretrain" / "final" / "model.safetensors").is_file()


def test_ddp_two_processes_match_one(tmp_path, small_data, tiny_config):
    common = ["--config", str(tiny_config), "--data-dir", str(small_data), "--max-steps", "3",
              "--set", "stages.pretrain.micro_batch_size=2", "--set", "stages.instruct.micro_batch_size=2",
              "--set", "stages.chat.micro_batch_size=2", "--device", "cpu"]
    single, multi = tmp_path / "single", tmp_path / "ddp"
    assert _train(common + ["--out", single]) == 0       # one process: 4 rows as 2 micro-batches of 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mmrec_model.train"] + common + ["--out", str(multi)]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world 2" in result.stdout and result.stdout.count("== pretrain") == 1   # rank 0 logs alone
    a, b = _losses(single), _losses(multi)
    assert [k[:2] for k in a] == [k[:2] for k in b] and len(a) == 9
    for (_, _, la), (_, _, lb) in zip(a, b):
        assert lb == pytest.approx(la, rel=1e-5, abs=1e-6)
    wa = MMRecLM.from_pretrained(single / "chat" / "final").state_dict()
    wb = MMRecLM.from_pretrained(multi / "chat" / "final").state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


def test_chat_cli(full_run):
    base = [sys.executable, "-m", "mmrec_model.chat", "--checkpoint", str(full_run), "--max-new-tokens", "12",
            "--seed", "0"]
    result = subprocess.run(base + ["--prompt", "Hello there!", "--prompt", "And again?", "--system", "Be nice."],
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) >= 2 and result.stdout.strip()
    repl = subprocess.run(base, input="Hi!\n/reset\nHello?\n/exit\nnever read\n", env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert repl.returncode == 0, repl.stderr
    assert repl.stdout.count("mmrec> ") == 2 and "(conversation reset)" in repl.stdout
    bad = subprocess.run([sys.executable, "-m", "mmrec_model.chat", "--checkpoint", str(full_run / "nope")],
                         env=_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"{full_run / 'nope'} does not exist" in bad.stderr


def test_config_file_overrides_and_bad_input(tmp_path, small_data, tiny_config, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("preset: tiny\nvocab_size: 384\ntokenizer_max_chars: 50000\nprogress: false\n"
                   "model: {n_layers: 1}\nstages:\n  pretrain: {batch_size: 2, seq_len: 16, save_every: 0}\n")
    out = tmp_path / "yaml"
    assert _train(["--config", cfg, "--data-dir", small_data, "--stage", "pretrain", "--max-steps", 2,
                   "--set", "stages.pretrain.lr=0.01", "--out", out]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["stages"]["pretrain"]["lr"] == 0.01 and saved["stages"]["pretrain"]["seq_len"] == 16
    model = MMRecLM.from_pretrained(out / "pretrain" / "final")
    assert model.config.n_layers == 1 and model.config.vocab_size == 384

    bad = tmp_path / "bad_train.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "no output"}\n', encoding="utf-8")
    capsys.readouterr()
    rc = _train(["--config", cfg, "--data-dir", small_data, "--stage", "instruct", "--train-data", bad,
                 "--on-bad-record", "error", "--init", out, "--out", tmp_path / "strict"])
    assert rc == 2 and f"{bad}:2: missing field 'output'" in capsys.readouterr().err
    bad_chat = tmp_path / "chat_train.jsonl"
    bad_chat.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    rc = _train(["--config", cfg, "--data-dir", small_data, "--set", f"stages.chat.train=['{bad_chat}']",
                 "--on-bad-record", "error", "--out", tmp_path / "early"])
    assert rc == 2 and f"{bad_chat}:1: no non-empty assistant" in capsys.readouterr().err
    assert not (tmp_path / "early" / "pretrain").exists()        # refused before any training

    bad_key = tmp_path / "typo.json"
    bad_key.write_text('{"stages": {"pretrain": {"seq_lenn": 5}}}')
    assert _train(["--config", bad_key, "--out", tmp_path / "typo"]) == 2
    assert "seq_lenn" in capsys.readouterr().err
