"""Loading never surprises and chat survives any input: files named in every load error, a tokenizer/model
vocabulary mismatch refused, an edited config caught by the fingerprint stored with the weights, chat flags
checked like generate's, any input bytes accepted."""
import json
import os
import subprocess
import sys

import pytest
import torch

from mmrec_model import MMRecConfig, MMRecLM
from mmrec_model.checkpoint import load_for_inference
from mmrec_model.data import DATA_DIR as CORPUS_DIR
from mmrec_model.errors import CheckpointError
from mmrec_model.tokenizer import Tokenizer

VOCAB = 300


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model with a matching tokenizer, saved as the trainer saves a stage's final folder."""
    path = tmp_path_factory.mktemp("ckpt") / "final"
    text = (CORPUS_DIR / "pretrain" / "tinyshakespeare_valid.txt").read_text(encoding="utf-8")[:20_000]
    tok = Tokenizer.train([text], vocab_size=VOCAB)
    torch.manual_seed(0)
    MMRecLM(MMRecConfig.preset("tiny", vocab_size=tok.vocab_size)).save_pretrained(path)
    tok.save(path / "tokenizer.json")
    return path


def _chat(args, stdin=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mmrec_model.chat", *map(str, args)], input=stdin, env=env,
                          capture_output=True, timeout=120)


def test_chat_survives_bytes_that_are_not_utf8(checkpoint):
    result = _chat(["--checkpoint", checkpoint, "--max-new-tokens", 4, "--seed", 0],
                   stdin=b"hi\nbad \xff\xfe\nafter \xed\xa0\x80\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().count("mmrec> ") == 3              # every line answered, the session lived
    assert b"not UTF-8" in result.stderr


@pytest.mark.parametrize("flags, named", [
    (["--top-p", "0"], "top_p"), (["--top-p", "2"], "top_p"), (["--temperature", "-1"], "temperature"),
    (["--temperature", "nan"], "temperature"), (["--max-new-tokens", "-5"], "max_new_tokens"),
    (["--top-k", "0"], "top_k"), (["--device", "meta"], "--device"),
])
def test_chat_flags_are_checked(checkpoint, flags, named):
    result = _chat(["--checkpoint", checkpoint, "--prompt", "hi"] + flags)
    assert result.returncode == 2 and named in result.stderr.decode(), result.stderr.decode()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(checkpoint):
    result = _chat(["--checkpoint", checkpoint, "--prompt", "hi", "--device", "cuda"])
    assert result.returncode == 2 and b"CUDA is not available" in result.stderr and b"Traceback" not in result.stderr


def test_vocabulary_mismatch_is_refused(checkpoint, tmp_path):
    bad = tmp_path / "mismatch"
    bad.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bad / name).write_bytes((checkpoint / name).read_bytes())
    Tokenizer.train(["a few words of text"] * 3, vocab_size=262).save(bad / "tokenizer.json")
    with pytest.raises(CheckpointError, match="262 tokens but the model .* vocabulary of 300"):
        load_for_inference(bad)
    result = _chat(["--checkpoint", bad, "--prompt", "hi"])
    assert result.returncode == 2 and b"not from the same run" in result.stderr


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_edited_config_is_caught_by_the_fingerprint(checkpoint, tmp_path):
    edited = _copy(checkpoint, tmp_path / "edited")
    config = json.loads((edited / "config.json").read_text())
    config["chunk_len"] = 4                                         # same shapes, different logits
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match the config the weights"):
        MMRecLM.from_pretrained(edited)
    config["d_model"] = 32                                          # shapes tell
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        MMRecLM.from_pretrained(edited)


def test_checkpoints_without_a_fingerprint_still_load(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file
    old = _copy(checkpoint, tmp_path / "old")
    save_file(load_file(old / "model.safetensors"), old / "model.safetensors", metadata={"format": "pt"})
    a = MMRecLM.from_pretrained(old)
    b = MMRecLM.from_pretrained(checkpoint)
    ids = torch.randint(0, VOCAB, (1, 12))
    assert torch.equal(a(ids)[0], b(ids)[0])


@pytest.mark.parametrize("name, text", [("config.json", ""), ("config.json", "{garbage"), ("config.json", "[1]"),
                                        ("tokenizer.json", "{not a tokenizer")])
def test_damaged_files_are_named(checkpoint, tmp_path, name, text):
    broken = _copy(checkpoint, tmp_path / "broken")
    (broken / name).write_text(text)
    with pytest.raises(CheckpointError, match=str(broken / name)):
        load_for_inference(broken)
    result = _chat(["--checkpoint", broken, "--prompt", "hi"])
    assert result.returncode == 2 and str(broken / name).encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_generate_checks_ids(checkpoint):
    model = MMRecLM.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 300\)"):
        model.generate(torch.tensor([[1, 2, VOCAB]]), 2)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 300\)"):
        model.generate(torch.tensor([[-1, 2]]), 2)
    ragged = model.generate([[1, 2], [3]], 2, temperature=0)         # each row prefilled from its own prompt
    assert [len(r) for r in ragged] == [4, 3]
    with pytest.raises((TypeError, ValueError)):
        model.generate([[1, 2], ["a"]], 2)
    with pytest.raises(TypeError, match="integers"):
        model.generate(torch.zeros(1, 3), 2)
    assert model.generate([[1, 2], [3, 4]], 2, temperature=0).shape == (2, 4)
