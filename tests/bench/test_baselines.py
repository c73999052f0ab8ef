"""The GPT and LSTM baselines (bench/baselines.py) and their training through the MM-Rec trainer."""
import json

import pytest
import torch

import baselines as B
import train_baseline
from mmrec_model import MMRecLM

BASE_PARAMS = 124_551_996      # MM-Rec `base` (vocabulary 32,000), the README's figure
SMALL_PARAMS = 5_923_092


@pytest.mark.parametrize("preset,vocab,target", [("small", 8192, SMALL_PARAMS), ("base", 32000, BASE_PARAMS)])
@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_matched_parameter_count(arch, preset, vocab, target, capsys):
    assert B.mmrec_parameters(preset, vocab) == target
    cfg = B.matched(arch, preset, vocab)
    with torch.device("meta"):
        model = B.MODELS[arch](cfg)
    assert model.num_parameters() == cfg.num_parameters()             # the closed form is the real count
    assert abs(model.num_parameters() - target) / target < 0.03
    assert cfg.d_model == (768 if preset == "base" else 256) and cfg.vocab_size == vocab
    with capsys.disabled():
        print(f"\n{arch} matched to {preset}: {model.num_parameters():,} vs MM-Rec {target:,} "
              f"({100 * (model.num_parameters() - target) / target:+.2f}%) {cfg}")


def test_matched_keeps_fixed_fields_and_rejects_unknown():
    cfg = B.matched("lstm", "small", 8192, n_layers=3)
    assert cfg.n_layers == 3 and abs(cfg.num_parameters() - SMALL_PARAMS) / SMALL_PARAMS < 0.03
    assert B.matched("gpt", "small", 8192, d_ffn=128).d_ffn == 128                 # the free width given: no match
    with pytest.raises(TypeError, match="unknown"):
        B.matched("gpt", "small", 8192, recurrence="linear")
    with pytest.raises(ValueError, match="arch"):
        B.matched("rnn", "small")


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="divisible"):
        B.GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="positions"):
        B.GPTConfig(positions="alibi")
    with pytest.raises(TypeError, match="n_layers"):
        B.LSTMConfig(n_layers=2.0)
    model = B.GPTLM(B.matched("gpt", "tiny"))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="batch"):
        model(torch.zeros(2, 4, dtype=torch.long), model.init_state(1))
    learned = B.GPTLM(B.GPTConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ffn=64, positions="learned",
                                  max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        learned(torch.zeros(1, 9, dtype=torch.long))


GPT_VARIANTS = [dict(), dict(positions="learned", max_seq_len=64), dict(mlp="gelu")]


@pytest.mark.parametrize("variant", GPT_VARIANTS, ids=["rope-swiglu", "learned", "gelu"])
def test_gpt_cache_segments_equal_full_forward(variant):
    torch.manual_seed(0)
    model = B.GPTLM(B.GPTConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, d_ffn=64, **variant)).eval()
    ids = torch.randint(0, 97, (2, 29))
    with torch.no_grad():
        full, none = model(ids)
        assert none is None                                                  # no cache is built without one
        cache = model.init_state(2, capacity=3)                              # grows twice on the way
        parts = []
        for s, e in [(0, 1), (1, 9), (9, 10), (10, 29)]:                      # one token, chunks after a cache
            logits, cache = model(ids[:, s:e], cache)
            parts.append(logits)
    assert cache.position == 29 and cache.capacity >= 29
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_greedy_generation_equals_argmax_of_full_forward(arch):
    torch.manual_seed(1)
    model = B.MODELS[arch](B.matched(arch, "tiny", 300)).eval()
    prompt = torch.randint(0, 300, (2, 7))
    out, drawn = model.generate(prompt, 8, temperature=0, return_logits=True)
    seq = prompt
    with torch.no_grad():
        for i in range(8):
            logits, _ = model(seq)
            torch.testing.assert_close(drawn[:, i], logits[:, -1], rtol=1e-4, atol=1e-4)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)
    assert model.generate(prompt[0], 3, temperature=0.8, top_k=5, seed=3).shape == (10,)


def test_lstm_stepwise_equals_full_forward():
    torch.manual_seed(2)
    model = B.LSTMLM(B.LSTMConfig(vocab_size=50, d_model=24, hidden_size=40, n_layers=2)).eval()
    ids = torch.randint(0, 50, (3, 17))
    with torch.no_grad():
        full, final = model(ids)
        state, steps = model.init_state(3), []
        for t in range(17):
            logits, state = model(ids[:, t:t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.h, final.h) and torch.testing.assert_close(state.c, final.c)
    assert state.position == 17 and state.nbytes() == 2 * 2 * 3 * 40 * 4


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_save_load_roundtrip_and_arch_check(arch, tmp_path):
    model = B.MODELS[arch](B.matched(arch, "tiny"))
    model.save_pretrained(tmp_path / arch)
    loaded = B.MODELS[arch].from_pretrained(tmp_path / arch)
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    assert torch.equal(loaded(ids)[0], model.eval()(ids)[0])
    assert json.loads((tmp_path / arch / "config.json").read_text())["arch"] == arch
    other = B.MODELS["lstm" if arch == "gpt" else "gpt"]
    with pytest.raises(ValueError, match="arch"):
        other.from_pretrained(tmp_path / arch)


# ------------------------------------------------------------------------------------------ trainer hook
TINY = ["--preset", "tiny", "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "3",
        "--set", "vocab_size=384", "--set", "tokenizer_max_chars=40000",
        "--set", "stages.pretrain.batch_size=4", "--set", "stages.pretrain.seq_len=32",
        "--set", "stages.pretrain.lr=0.01", "--set", "stages.pretrain.warmup_steps=2",
        "--set", "stages.pretrain.eval_every=0", "--set", "stages.pretrain.eval_windows=4",
        "--set", "stages.pretrain.save_every=2", "--set", "stages.pretrain.sample_tokens=4",
        "--set", "stages.instruct.batch_size=4", "--set", "stages.instruct.seq_len=48",
        "--set", "stages.instruct.eval_windows=4", "--set", "stages.instruct.sample_tokens=4",
        "--set", "stages.chat.batch_size=4", "--set", "stages.chat.seq_len=64",
        "--set", "stages.chat.eval_windows=4", "--set", "stages.chat.sample_tokens=4"]


def _records(run, kind):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == kind]


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_trainer_trains_a_baseline_through_all_stages(arch, tmp_path, bench_data):
    out = tmp_path / arch
    args = ["--arch", arch, "--data-dir", str(bench_data), "--out", str(out), "--max-steps", "2", *TINY,
            "--set", "stages.pretrain.max_steps=8"]
    assert train_baseline.main(args) == 0
    cls = B.MODELS[arch]
    for stage in ("pretrain", "instruct", "chat"):
        model = cls.from_pretrained(out / stage / "final")
        assert abs(model.num_parameters() - B.mmrec_parameters("tiny", 384)) / model.num_parameters() < 0.05
        meta = json.loads((out / stage / "final" / "meta.json").read_text())
        assert meta["held_out"] and all(v["loss"] > 0 for v in meta["held_out"].values())
    train = [r for r in _records(out, "train") if r["stage"] == "pretrain"]
    assert len(train) == 8 and train[-1]["loss"] < train[0]["loss"] - 0.3         # it learns
    assert {r["set"] for r in _records(out, "eval") if r["stage"] == "pretrain"} == \
        {"tinyshakespeare_valid", "gutenberg_valid"}
    assert json.loads((out / "config.json").read_text())["stages"]["pretrain"]["tbptt"] is False


def test_baseline_resume_is_exact_and_tbptt_is_refused(tmp_path, bench_data):
    base = ["--arch", "gpt", "--stage", "pretrain", "--data-dir", str(bench_data), "--max-steps", "4", *TINY]
    assert train_baseline.main(base + ["--out", str(tmp_path / "full")]) == 0
    assert train_baseline.main(base + ["--out", str(tmp_path / "cut")], stop=lambda stage, step: (stage, step) == ("pretrain", 2)) == 130
    assert train_baseline.main(base + ["--out", str(tmp_path / "cut"), "--resume"]) == 0    # via GPTLM.from_pretrained
    losses = lambda run: [(r["step"], r["loss"]) for r in _records(run, "train")]
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    assert train_baseline.main(["--arch", "lstm", "--set", "stages.pretrain.tbptt=true"]) == 2
    assert train_baseline.main(["--arch", "transformer"]) == 2


def test_default_trainer_path_still_builds_mmrec(tmp_path, bench_data):
    out = tmp_path / "mmrec"
    args = ["--arch", "mmrec", "--stage", "pretrain", "--data-dir", str(bench_data), "--out", str(out),
            "--max-steps", "2", *TINY]
    assert train_baseline.main(args) == 0
    assert isinstance(MMRecLM.from_pretrained(out / "pretrain" / "final"), MMRecLM)
