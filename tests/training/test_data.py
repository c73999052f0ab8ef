"""Loaders, malformed-record handling, and the batch order (shuffling, ranks, TBPTT lanes)."""
import json

import pytest
import torch

from mmrec_model import data as D


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_I = json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"})
GOOD_C = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})


def test_instruct_malformed_records_are_reported_with_file_and_line(tmp_path):
    path = _write_lines(tmp_path / "bad_train.jsonl", [
        GOOD_I,
        '{"instruction": "no output"}',
        "{not json",
        "",
        json.dumps({"instruction": "x", "output": 5}),
        json.dumps([1, 2]),
        json.dumps({"instruction": "Add.", "input": None, "output": "ok"}),   # null input = no input
    ])
    logged = []
    sources = D.load_sources([str(path)], "instruct", "skip", log=logged.append)
    assert [r["instruction"] for r in sources[0].records] == ["Say hi.", "Add."]
    report = logged[0]
    assert "skipped 4 malformed" in report
    for line, reason in [(2, "missing field 'output'"), (3, "invalid JSON"), (5, "field 'output' must be a string"),
                         (6, "expected a JSON object")]:
        assert f"{path}:{line}: {reason}" in report
    with pytest.raises(D.DataError) as err:
        D.load_sources([str(path)], "instruct", "error", log=logged.append)
    assert f"{path}:3: invalid JSON" in str(err.value) and "4 malformed" in str(err.value)


def test_chat_malformed_records(tmp_path):
    path = _write_lines(tmp_path / "chat_train.jsonl", [
        GOOD_C,
        json.dumps({"messages": []}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"},
                                 {"role": "assistant", "content": "b"}]}),
        json.dumps({"messages": [{"role": "user", "content": ["list"]}, {"role": "assistant", "content": "b"}]}),
    ])
    logged = []
    sources = D.load_sources([str(path)], "chat", "skip", log=logged.append)
    assert len(sources[0].records) == 1
    for line, reason in [(2, "non-empty list"), (3, "no non-empty assistant"), (4, "role must be one of"),
                         (5, "system message may only come first"), (6, "content must be a string")]:
        assert f"{path}:{line}: " in logged[0] and reason in logged[0]


def test_invalid_utf8_text_line_is_reported(tmp_path):
    path = tmp_path / "t_train.txt"
    path.write_bytes(b"good line\nbad \xff\xfe line\nanother good line\n")
    logged = []
    text = D.load_sources([str(path)], "text", "skip", log=logged.append)[0].records[0]
    assert "bad" not in text and "another good line" in text
    assert f"{path}:2: invalid UTF-8" in logged[0]
    with pytest.raises(D.DataError, match="t_train.txt:2"):
        D.load_sources([str(path)], "text", "error")


def test_json_array_and_nothing_usable(tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([json.loads(GOOD_I), {"instruction": "broken"}]), encoding="utf-8")
    logged = []
    assert len(D.load_sources([str(arr)], "instruct", "skip", log=logged.append)[0].records) == 1
    assert f"{arr}:2: missing field 'output'" in logged[0]
    empty = _write_lines(tmp_path / "e.jsonl", ["{}"])
    with pytest.raises(D.DataError, match="no usable"):
        D.load_sources([str(empty)], "instruct", "skip", log=lambda s: None)
    with pytest.raises(D.DataError, match="matches no file"):
        D.load_sources([str(tmp_path / "missing.jsonl")], "instruct")


def test_hf_spec_without_datasets_is_a_clear_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets":
            raise ImportError("no datasets here")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(D.DataError, match="pip install datasets"):
        D.load_sources(["hf:tatsu-lab/alpaca"], "instruct")


def test_default_files_of_the_bundled_data():
    train = D.default_specs("instruct", D.DATA_DIR, "train")
    valid = D.default_specs("chat", D.DATA_DIR, "valid")
    assert [p.split("/")[-1] for p in train] == ["alpacalibre_train.jsonl", "selfinstruct_seed_train.jsonl"]
    assert [p.split("/")[-1] for p in valid] == ["oasst_en_valid.jsonl"]
    assert (D.DATA_DIR / "SOURCES.md").is_file()


def test_text_batches_order_is_reproducible_and_split_over_ranks():
    ids = torch.arange(1000)
    single = D.TextBatches(ids, seq_len=10, batch_size=4, micro_batch=2, seed=3)
    rows = [torch.cat([mb.x for mb in single.next()]) for _ in range(30)]    # crosses an epoch (99 windows)
    for r in rows:
        assert torch.equal(r[:, 1:], r[:, :-1] + 1) and (r[:, 0] % 10 == 0).all()
    for rank in range(2):
        part = D.TextBatches(ids, seq_len=10, batch_size=4, micro_batch=2, seed=3, rank=rank, world=2)
        for r in rows:
            assert torch.equal(part.next()[0].x, r[2 * rank:2 * rank + 2])
    resumed = D.TextBatches(ids, seq_len=10, batch_size=4, micro_batch=2, seed=3)
    for _ in range(7):
        resumed.next()
    state = resumed.state_dict()
    again = D.TextBatches(ids, seq_len=10, batch_size=4, micro_batch=2, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(torch.cat([mb.x for mb in again.next()]), rows[k]) for k in range(7, 30))


def test_tbptt_lanes_continue_segment_after_segment():
    ids = torch.arange(401)
    b = D.TextBatches(ids, seq_len=10, batch_size=4, micro_batch=2, seed=0, tbptt=True)
    first = b.next()
    assert first[0].reset and [mb.lane for mb in first] == [0, 1]
    second = b.next()
    assert not second[0].reset
    for k in range(2):                  # each row continues exactly where it stopped
        assert torch.equal(second[k].x[:, 0], first[k].x[:, -1] + 1)
        assert torch.equal(first[k].y, first[k].x + 1)
    for _ in range(9):                  # 100-token lanes: 10 segments, then a new epoch starts fresh
        last = b.next()
    assert last[0].reset and torch.equal(last[0].x, first[0].x)
