"""MMRecForCausalLM against MMRecLM run directly: folders both loaders read, equal logits, generate, loss, and
clear errors on unusable folders."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from mmrec_model import MMRecLM
from mmrec_model.errors import CheckpointError

from . import require
from .conftest import tiny_lm

transformers = require("transformers")
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from mmrec_model.hf import MMRecForCausalLM  # noqa: E402


def ids(B=2, T=21, seed=1):
    return torch.randint(0, 512, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("recurrence", ["nonlinear", "linear"])
def test_save_pretrained_round_trip_equal_logits(tmp_path, recurrence):
    lm = tiny_lm(recurrence=recurrence)
    MMRecForCausalLM.from_mmrec(lm).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(model) is MMRecForCausalLM and not model.training
    x = ids()
    with torch.no_grad():
        ref, ref_state = lm(x[:, :13])
        ref_next, _ = lm(x[:, 13:], ref_state)
        out = model(x[:, :13])
        out_next = model(x[:, 13:], state=out.state)
    torch.testing.assert_close(out.logits, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_next.logits, ref_next, rtol=0, atol=1e-6)
    # the same folder through MMRecLM's own loader
    again = MMRecLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], lm(x)[0], rtol=0, atol=0)


def test_config_json_is_hub_ready(hf_dir, lm):
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["model_type"] == "mmrec"
    assert config["architectures"] == ["MMRecForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_mmrec.MMRecForCausalLM"
    assert {k: config[k] for k in lm.config.to_dict()} == lm.config.to_dict()
    assert AutoConfig.from_pretrained(hf_dir).to_mmrec() == lm.config
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                 "configuration_mmrec.py", "modeling_mmrec.py"):
        assert (hf_dir / name).is_file(), name


def test_exported_trainer_folder_loads_with_both_loaders(hf_dir, lm):
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    again = MMRecLM.from_pretrained(hf_dir)           # checks the fingerprint the trainer stored
    x = ids()
    with torch.no_grad():
        ref = lm(x)[0]
        torch.testing.assert_close(model(x).logits, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(again(x)[0], ref, rtol=0, atol=0)


def test_trainer_folder_needs_export(final_dir):
    """The trainer's own config.json has no model_type: AutoConfig refuses it; export() is the way in."""
    with pytest.raises(ValueError):
        AutoConfig.from_pretrained(final_dir)


def test_remote_code_loading(hf_dir, tmp_path, monkeypatch):
    """The auto_map files load the class with trust_remote_code=True (what the lm_eval CLI does)."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    model = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True)
    assert type(model).__name__ == "MMRecForCausalLM"


def test_generate_greedy_equals_mmrec(hf_dir, lm):
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    prompt = ids(B=2, T=11)
    lengths = []
    hook = model.embed.register_forward_hook(lambda mod, args, out: lengths.append(args[0].shape[1]))
    out = model.generate(prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    hook.remove()
    ref = lm.generate(prompt, 20, temperature=0)
    assert torch.equal(out, ref)
    assert len(set(ref[:, 11:].flatten().tolist())) > 3            # not one repeated token
    assert lengths == [11] + [1] * 19                               # prefill once, then one token per step


def test_labels_give_the_shifted_loss(hf_dir, lm):
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    x = ids()
    labels = x.clone()
    labels[0, :5] = -100
    with torch.no_grad():
        loss = model(x, labels=labels).loss
        logits = lm(x)[0][:, :-1]
    logp = F.log_softmax(logits.double(), -1).gather(-1, x[:, 1:, None]).squeeze(-1)
    keep = labels[:, 1:] != -100
    torch.testing.assert_close(loss.double(), -(logp[keep]).mean(), rtol=1e-6, atol=1e-6)


def test_padding_mask_is_refused(hf_dir):
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    mask = torch.ones(2, 21, dtype=torch.long)
    mask[1, :3] = 0
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids(), attention_mask=mask)


# ------------------------------------------------------------------------------------------ bad folders
def copy_folder(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_config_of_another_architecture(hf_dir, tmp_path):
    folder = copy_folder(hf_dir, tmp_path / "other")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=str(folder / "config.json")):
        MMRecLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=str(folder)):
        MMRecForCausalLM.from_pretrained(folder)


def test_folder_of_another_architecture(tmp_path):
    folder = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)
                                 ).save_pretrained(folder)
    with pytest.raises(CheckpointError, match=str(folder / "config.json")):
        MMRecLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=str(folder)):
        MMRecForCausalLM.from_pretrained(folder)


def test_missing_weights_file(hf_dir, tmp_path):
    folder = copy_folder(hf_dir, tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match=str(folder)):
        AutoModelForCausalLM.from_pretrained(folder)


def test_missing_tensor(hf_dir, tmp_path, lm):
    from safetensors.torch import load_file, save_file
    folder = copy_folder(hf_dir, tmp_path / "partial")
    tensors = load_file(folder / "model.safetensors")
    del tensors["blocks.1.M0"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.M0"):
        AutoModelForCausalLM.from_pretrained(folder)
