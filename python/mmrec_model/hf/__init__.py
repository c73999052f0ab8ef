"""MM-Rec in the Hugging Face ecosystem (the ``hf`` extra: pip install 'mmrec[hf]').

Importing this module registers model_type "mmrec" with AutoConfig and AutoModelForCausalLM; ``import
mmrec_model`` does it as soon as transformers is imported (see mmrec_model._hf_hook), so

    import mmrec_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder)      # an export() or save_pretrained folder

`export(run_or_final_dir, out_dir)` turns a trainer output into such a folder; TASKS_DIR holds lm-evaluation-harness
tasks over the bundled corpus (lm_eval --include_path TASKS_DIR --tasks mmrec_wikitext2,mmrec_shakespeare_mc).
"""
from __future__ import annotations

import os

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration import MODEL_TYPE, MMRecHFConfig
from .export import export
from .modeling import MMRecCausalLMOutput, MMRecForCausalLM
from .tokenization import CHAT_TEMPLATE, save_hf_tokenizer, to_hf_tokenizer

TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")


def register() -> None:
    """Registers model_type "mmrec" with AutoConfig and AutoModelForCausalLM (idempotent)."""
    AutoConfig.register(MODEL_TYPE, MMRecHFConfig, exist_ok=True)
    AutoModelForCausalLM.register(MMRecHFConfig, MMRecForCausalLM, exist_ok=True)


register()

__all__ = ["MMRecHFConfig", "MMRecForCausalLM", "MMRecCausalLMOutput", "export", "save_hf_tokenizer",
           "to_hf_tokenizer", "CHAT_TEMPLATE", "TASKS_DIR", "register"]
