"""Token shards: prepared streams equal direct encodings, damaged sets are reported and rebuilt, loaders over
shards give the tensor loader's windows, resume across shard boundaries, DDP ranks read disjoint windows."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrec_model import data as D
from mmrec_model.data import sources as DS
from mmrec_model.data.prepare import cached_tokenizer, prepare_tokens
from mmrec_model.data.shards import ShardError, ShardWriter, TokenStream
from mmrec_model.data.stage import load_stage_sources
from mmrec_model.tokenizer import Tokenizer

from .conftest import read_metrics


@pytest.fixture(scope="module")
def tok(small_data):
    text = (small_data / "pretrain" / "shakespeare_train.txt").read_text(encoding="utf-8")
    return Tokenizer.train([text[:60_000]], vocab_size=400)


def _docs(tmp_path):
    """Three text files: multi-piece Shakespeare (lines never start with whitespace, so piece cuts at line ends
    cannot change the encoding), one with multi-byte characters, one empty."""
    text = (D.DATA_DIR / "pretrain" / "tinyshakespeare_train.txt").read_text(encoding="utf-8")[:200_000]
    texts = [text, "naïve café — 日本語 ünïcödé\nline two ✓\n" * 300, ""]
    paths = []
    for i, t in enumerate(texts):
        p = tmp_path / f"doc{i}_train.txt"
        p.write_text(t, encoding="utf-8")
        paths.append(p)
    return texts, paths


def test_shards_equal_a_direct_encoding(tmp_path, tok, monkeypatch):
    texts, paths = _docs(tmp_path)
    expected = []
    for t in texts:
        expected += tok.encode(t) + [tok.eos_id]             # whole document at once, then <|endoftext|>
    monkeypatch.setattr(DS, "BLOCK_BYTES", 1000)            # many file blocks; lines and UTF-8 chars cross them
    logged = []
    stream = prepare_tokens(tok, [DS.Source(str(p), None) for p in paths], tmp_path / "cache", shard_tokens=1000,
                            batch_chars=5000, log=logged.append)
    assert len(stream) == len(expected) and stream.num_shards == -(-len(expected) // 1000)
    assert stream[0:len(stream)].tolist() == expected
    assert stream[995:1007].tolist() == expected[995:1007]   # a slice across a shard boundary
    ends = np.cumsum([len(tok.encode(t)) + 1 for t in texts])
    assert stream.documents.tolist() == ends.tolist()
    assert stream.index["dtype"] == "<u2"
    files = sorted(p.name for p in stream.directory.iterdir())
    assert files[-1] == "shard-%05d.bin" % (stream.num_shards - 1) and "index.json" in files
    assert (stream.directory / "shard-00000.bin").stat().st_size == 2000       # uint16: 2 bytes a token
    # the trainer's earlier in-memory path gives the same stream
    assert torch.equal(D.encode_documents(tok, texts), stream[0:len(stream)])
    # a second call finds the cache: nothing is encoded again
    logged.clear()
    again = prepare_tokens(tok, [DS.Source(str(p), None) for p in paths], tmp_path / "cache", log=logged.append)
    assert again.directory == stream.directory and not any("prepared" in s for s in logged)


def test_uint32_when_the_vocabulary_needs_it(tmp_path):
    ids = np.array([0, 65535, 65536, 1_000_000], dtype=np.int64)
    with ShardWriter(tmp_path / "set", np.dtype("<u4"), 3) as w:
        w.add(ids)
        w.end_document()
        w.finish({})
    s = TokenStream(tmp_path / "set")
    assert s[0:4].tolist() == ids.tolist() and s.index["dtype"] == "<u4" and s.num_shards == 2
    with ShardWriter(tmp_path / "small", np.dtype("<u2"), 3) as w:
        with pytest.raises(ValueError, match="uint16|<u2|outside"):
            w.add(ids)


def test_interrupted_write_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "set", np.dtype("<u2"), 10) as w:
            w.add(np.arange(25))
            raise RuntimeError("killed mid-write")
    assert not (tmp_path / "set").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "index", "missing-shard"])
def test_damaged_set_is_reported_with_its_path_and_rebuilt(tmp_path, tok, damage):
    texts, paths = _docs(tmp_path)
    sources = [DS.Source(str(p), None) for p in paths]
    good = prepare_tokens(tok, sources, tmp_path / "cache", shard_tokens=5000, log=lambda s: None)
    want = good[0:len(good)]
    shard = good.directory / "shard-00001.bin"
    index = good.directory / "index.json"
    if damage == "flip":
        raw = bytearray(shard.read_bytes())
        raw[100] ^= 0x01
        shard.write_bytes(bytes(raw))
        culprit, reason = shard, "CRC-32"
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-2])
        culprit, reason = shard, "bytes"
    elif damage == "index":
        index.write_text(index.read_text()[:50])
        culprit, reason = index, "unreadable"
    else:
        shard.unlink()
        culprit, reason = shard, "missing"
    with pytest.raises(ShardError, match=reason) as err:
        TokenStream(good.directory)
    assert str(culprit) in str(err.value)
    logged = []
    rebuilt = prepare_tokens(tok, sources, tmp_path / "cache", shard_tokens=5000, log=logged.append)
    assert any(str(culprit) in s and "rebuilding" in s for s in logged), logged
    assert torch.equal(rebuilt[0:len(rebuilt)], want)


def test_bad_utf8_lines_are_reported_on_every_use_and_refused_under_error(tmp_path, tok):
    path = tmp_path / "t_train.txt"
    path.write_bytes(b"good line\nbad \xff\xfe line\nanother good line\n")
    src = [DS.Source(str(path), None)]
    for _ in range(2):                                      # built, then found in the cache
        logged = []
        stream = prepare_tokens(tok, src, tmp_path / "cache", log=logged.append)
        assert f"{path}:2: invalid UTF-8" in logged[0]
    assert stream[0:len(stream)].tolist() == tok.encode("good line\nanother good line\n") + [tok.eos_id]
    with pytest.raises(D.DataError, match="t_train.txt:2"):
        prepare_tokens(tok, src, tmp_path / "cache", on_bad="error", log=lambda s: None)
    with pytest.raises(D.DataError, match="t_train.txt:2"):
        prepare_tokens(tok, src, tmp_path / "fresh", on_bad="error", log=lambda s: None)
    assert not any((tmp_path / "fresh").glob("[!.]*"))       # nothing published for refused data


def test_hf_text_dataset_is_streamed_row_by_row(tmp_path, tok, monkeypatch):
    """`datasets` is not installed here and there is no network: a stand-in module records how the loader is
    called and serves three rows (one without text)."""
    calls = []
    rows = [{"text": "First row.\nIt has two lines.\n"}, {"title": "no text"}, {"text": "Second document."}]

    def load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        return iter(rows)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    [source] = D.load_sources(["hf:someone/corpus:en@train"], "text", log=lambda s: None)
    logged = []
    stream = prepare_tokens(tok, [source], tmp_path / "cache", log=logged.append)
    assert calls == [("someone/corpus", "en", "train", True)]
    want = tok.encode(rows[0]["text"]) + [tok.eos_id] + tok.encode(rows[2]["text"]) + [tok.eos_id]
    assert stream[0:len(stream)].tolist() == want
    assert "hf:someone/corpus:en@train:2: no string column 'text'" in logged[0]


def _stream_and_tensor(tmp_path, tok, shard_tokens):
    texts, paths = _docs(tmp_path)
    stream = prepare_tokens(tok, [DS.Source(str(p), None) for p in paths], tmp_path / "cache",
                            shard_tokens=shard_tokens, log=lambda s: None)
    return stream, stream[0:len(stream)].clone()


@pytest.mark.parametrize("tbptt", [False, True])
def test_loader_over_shards_gives_the_tensor_loaders_windows_and_resumes(tmp_path, tok, tbptt):
    stream, ids = _stream_and_tensor(tmp_path, tok, shard_tokens=97)
    starts = []
    real = TokenStream.__getitem__
    spy = type("Spy", (TokenStream,), {"__getitem__": lambda self, k: starts.append(k.start) or real(self, k)})
    stream.__class__ = spy
    kw = dict(seq_len=32, batch_size=4, micro_batch=2, seed=5, tbptt=tbptt)
    mm, ref = D.TextBatches(stream, **kw), D.TextBatches(ids, **kw)
    seen = []
    for step in range(40):
        if step == 17:                                  # resume from a saved position into a fresh loader
            state = json.loads(json.dumps(mm.state_dict()))
            mm = D.TextBatches(stream, **kw)
            mm.load_state_dict(state)
        a, b = mm.next(), ref.next()
        seen.append(a)
        assert [(m.lane, m.reset) for m in a] == [(m.lane, m.reset) for m in b]
        for x, y in zip(a, b):
            assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y)
    bounds = stream.shard_bounds()
    crossing = [s for s in starts if any(s < e < s + 33 for e in bounds)]
    assert len(crossing) >= 10                              # windows read across shard boundaries
    with pytest.raises(D.DataError, match="data changed"):
        D.TextBatches(ids[:-40], **kw).load_state_dict(state)


def test_training_resumes_bit_identically_across_shard_boundaries(tmp_path, small_data, tiny_config):
    from mmrec_model import train
    common = ["--config", tiny_config, "--data-dir", small_data, "--stage", "pretrain", "--max-steps", "6",
              "--set", "stages.pretrain.tbptt=false", "--set", "stages.pretrain.eval_every=0",
              "--set", "shard_tokens=97", "--set", f"cache_dir={tmp_path / 'cache'}"]
    common = [str(a) for a in common]
    assert train.main(common + ["--out", str(tmp_path / "full")]) == 0
    shard_sets = [p for p in (tmp_path / "cache").iterdir() if (p / "index.json").is_file()]
    assert len(shard_sets) == 2 and all(len(list(p.glob("shard-*.bin"))) > 10 for p in shard_sets)
    out = str(tmp_path / "resumed")
    assert train.main(common + ["--out", out], stop=lambda stage, step: step == 3) == 130
    assert train.main(common + ["--out", out, "--resume"]) == 0
    losses = lambda o: [(r["step"], r["loss"]) for r in read_metrics(Path(o))]   # noqa: E731
    assert losses(out) == losses(tmp_path / "full") and len(losses(out)) == 6


DDP_SCRIPT = r"""
import json, os, sys
import torch, torch.distributed as dist
from mmrec_model.data.shards import TokenStream
from mmrec_model.data.stage import StageData, load_stage_sources
from mmrec_model.training.config import StageConfig
from mmrec_model.tokenizer import Tokenizer

data_dir, tok_path, cache, out = sys.argv[1:5]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
starts = []
real = TokenStream.__getitem__
TokenStream.__getitem__ = lambda self, k: starts.append(k.start) or real(self, k)
tok = Tokenizer.load(tok_path)
cfg = StageConfig(batch_size=8, seq_len=32, tbptt=sys.argv[5] == "1")
sources = load_stage_sources("pretrain", None, None, data_dir, "skip", print)
data = StageData("pretrain", cfg, sources, tok, rank, world, 2, 7, cache, 1, print, shard_tokens=500,
                 barrier=dist.barrier)
starts.clear()
steps = []
for _ in range(12):
    n = len(starts)
    data.batches.next()
    steps.append(starts[n:])
json.dump(steps, open(os.path.join(out, f"rank{rank}.json"), "w"))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("tbptt", [False, True])
def test_ddp_ranks_read_disjoint_windows(tmp_path, small_data, tok, tbptt):
    script = tmp_path / "ddp_windows.py"
    script.write_text(DDP_SCRIPT)
    tok_path = tok.save(tmp_path / "tokenizer.json")
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(small_data), str(tok_path), str(cache), str(tmp_path), "1" if tbptt else "0"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2   # train + held-out, once
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # the windows one process reads, from the same shards
    sources = load_stage_sources("pretrain", None, None, small_data, "skip", print)
    stream = prepare_tokens(tok, sources[0], cache, shard_tokens=500, log=lambda s: None)
    kw = dict(seq_len=32, batch_size=8, micro_batch=2, seed=7, tbptt=tbptt)
    single = D.TextBatches(stream, **kw)
    spy_starts = []
    real = TokenStream.__getitem__
    stream.__class__ = type("Spy", (TokenStream,), {"__getitem__": lambda s, k: spy_starts.append(k.start) or real(s, k)})
    all0, all1 = set(), set()
    for step in range(12):
        n = len(spy_starts)
        single.next()
        one = spy_starts[n:]
        r0, r1 = ranks[0][step], ranks[1][step]
        assert len(r0) == len(r1) == 4 and not set(r0) & set(r1)       # disjoint within a step
        assert r0 + r1 == one                                          # together: the rows of one process
        all0.update(r0)
        all1.update(r1)
    if not tbptt:
        assert not all0 & all1                                         # and over the whole run (one epoch)


def test_tokenizer_is_cached_per_sources(tmp_path):
    texts, paths = _docs(tmp_path)
    sources = [DS.Source(str(p), None) for p in paths]
    logged = []
    a, path = cached_tokenizer(sources, 300, 50_000, tmp_path / "cache", log=logged.append)
    assert "trained on 50,000 characters" in logged[-1]
    b, again = cached_tokenizer(sources, 300, 50_000, tmp_path / "cache", log=logged.append)
    assert again == path and "cached BPE" in logged[-1] and b.to_str() == a.to_str()
    fresh = Tokenizer.train(DS.tokenizer_corpus(sources, 50_000), 300)
    assert fresh.to_str() == a.to_str()                     # training is deterministic: caching changes nothing
    _, other = cached_tokenizer(sources, 280, 50_000, tmp_path / "cache", log=logged.append)
    assert other != path
    paths[1].write_text("changed\n", encoding="utf-8")
    _, changed = cached_tokenizer(sources, 300, 50_000, tmp_path / "cache", log=logged.append)
    assert changed != path and "trained on" in logged[-1]


def test_prepare_cli_then_training_finds_the_shards(tmp_path, small_data, tiny_config, capsys):
    from mmrec_model import prepare, train
    cache = tmp_path / "cache"
    assert prepare.main(["--data-dir", str(small_data), "--vocab-size", "512", "--tokenizer-max-chars", "120000",
                         "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("prepared") == 2 and "train: " in printed and "held-out shakespeare_valid" in printed
    args = ["--config", str(tiny_config), "--data-dir", str(small_data), "--stage", "pretrain", "--max-steps", "1",
            "--set", f"cache_dir={cache}", "--out", str(tmp_path / "run")]
    assert train.main(args) == 0
    printed = capsys.readouterr().out
    assert "cached BPE" in printed and "prepared" not in printed       # neither BPE nor shards built again
    assert prepare.main(["--train-data", str(tmp_path / "missing.txt"), "--cache-dir", str(cache)]) == 2
    assert "missing.txt" in capsys.readouterr().err
