import json

import pytest

from mmrec_model import PRESETS, MMRecConfig, MMRecLM


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name):
    cfg = MMRecConfig.preset(name)
    assert cfg.d_model % cfg.n_heads == 0 and cfg.d_model % cfg.n_read_heads == 0
    assert len(cfg.bank_decays) == cfg.n_banks


def test_preset_sizes():
    assert (MMRecConfig.preset("tiny").d_model, MMRecConfig.preset("tiny").n_layers) == (64, 2)
    assert (MMRecConfig.preset("small").d_model, MMRecConfig.preset("small").n_layers) == (256, 4)
    assert (MMRecConfig.preset("base").d_model, MMRecConfig.preset("base").n_layers) == (768, 12)


def test_base_parameter_count(capsys):
    model = MMRecLM(MMRecConfig.preset("base"))
    total, body = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
    with capsys.disabled():
        print(f"\nbase (vocab 32000, tied): {total:,} parameters, {body:,} without embeddings")
    assert 100e6 <= total <= 125e6


def test_cpu_comparison_model_parameter_count(capsys):
    cfg = MMRecConfig.preset("base", d_model=512, n_layers=16, n_heads=8, n_read_heads=8, vocab_size=100277,
                             tie_embeddings=False)
    total = MMRecLM(cfg).num_parameters()
    with capsys.disabled():
        print(f"\nD=512, 16 layers, vocab 100277, untied: {total:,} parameters")
    assert 150e6 <= total <= 170e6


def test_default_bank_decays_spread_over_time_scales():
    assert MMRecConfig.preset("tiny", n_banks=4).bank_decays == (1 - 1 / 4, 1 - 1 / 16, 1 - 1 / 64, 1 - 1 / 256)
    assert len(MMRecConfig.preset("tiny", n_banks=2).bank_decays) == 2


@pytest.mark.parametrize("overrides, word", [
    (dict(d_model=60, n_heads=8), "n_heads"),
    (dict(d_model=64, n_read_heads=5), "n_read_heads"),
    (dict(chunk_len=0), "chunk_len"),
    (dict(n_banks=0), "n_banks"),
    (dict(n_slots=0), "n_slots"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(recurrence="gru"), "recurrence"),
    (dict(dropout=1.0), "dropout"),
    (dict(core_decay_init=1.0), "core_decay_init"),
    (dict(n_banks=2, bank_decays=(0.5,)), "bank_decays"),
    (dict(bank_decays=(0.5, 0.9, 1.0, 0.99)), "bank decay"),
])
def test_impossible_settings_raise_clear_errors(overrides, word):
    with pytest.raises(ValueError, match=word):
        MMRecConfig.preset("tiny", **overrides)


def test_wrong_types_and_names_raise():
    with pytest.raises(TypeError, match="d_model"):
        MMRecConfig.preset("tiny", d_model=64.0)
    with pytest.raises(TypeError, match="nope"):
        MMRecConfig.preset("tiny", nope=1)
    with pytest.raises(ValueError, match="huge"):
        MMRecConfig.preset("huge")
    with pytest.raises(TypeError, match="MMRecConfig"):
        MMRecLM({"d_model": 64})


def test_json_round_trip(tmp_path):
    cfg = MMRecConfig.preset("small", recurrence="linear", dropout=0.1)
    cfg.save(str(tmp_path / "config.json"))
    assert json.loads((tmp_path / "config.json").read_text())["recurrence"] == "linear"
    assert MMRecConfig.load(str(tmp_path)) == cfg
    with pytest.raises(ValueError, match="unknown"):
        MMRecConfig.from_dict({**cfg.to_dict(), "extra": 1})
