"""export(): a trainer output (run directory, stage final/ folder or checkpoint) as a Hugging Face folder.

The trainer's folders keep the MMRecConfig config.json (no model_type), which AutoConfig cannot read; export
writes a folder that both AutoModelForCausalLM/AutoTokenizer and MMRecLM.from_pretrained/Tokenizer.load read,
ready for push_to_hub: config.json (MMRecConfig fields + model_type, architectures, auto_map), model.safetensors
(the trainer's weights with their config fingerprint), tokenizer.json + tokenizer_config.json (control tokens,
chat template), generation_config.json and the two re-exporting files for trust_remote_code loading.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Union

from ..checkpoint import load_for_inference
from ..config import MODEL_TYPE
from ..model import CONFIG_NAME, WEIGHTS_NAME
from .configuration import MMRecHFConfig
from .modeling import AUTO_MAP, write_remote_code
from .tokenization import save_hf_tokenizer

PathLike = Union[str, os.PathLike]


def export(run_or_final_dir: PathLike, out_dir: PathLike) -> Path:
    """Writes the HF folder of `run_or_final_dir` (a run directory: its newest stage's final/ model) to `out_dir`
    and returns it. The weights file is copied byte for byte (MMRecLM.from_pretrained has checked it first)."""
    from transformers import GenerationConfig
    model, tok, ckpt = load_for_inference(run_or_final_dir)
    out = Path(out_dir)
    if out.resolve() == ckpt.resolve():
        raise ValueError(f"export: out_dir {out} is the checkpoint itself; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ckpt / WEIGHTS_NAME, out / WEIGHTS_NAME)
    config = MMRecHFConfig.from_mmrec(model.config, architectures=["MMRecForCausalLM"], auto_map=dict(AUTO_MAP))
    config.save_pretrained(str(out))
    written = json.loads((out / CONFIG_NAME).read_text(encoding="utf-8"))
    assert written.get("model_type") == MODEL_TYPE, written
    GenerationConfig(eos_token_id=[tok.eos_id, tok.end_id], pad_token_id=tok.pad_id).save_pretrained(str(out))
    save_hf_tokenizer(tok, out)
    write_remote_code(out)
    return out
