"""MMRecForCausalLM: MMRecLM as a transformers causal LM (AutoModelForCausalLM, generate, labels -> loss).

The module tree is MMRecLM's own (embed, blocks, norm, lm_head at the top level), so the weights have the same
names in both formats and one model.safetensors serves MMRecLM.from_pretrained and from_pretrained here. The
forward pass is MMRecLM's: the wrapper keeps an MMRecLM that shares these very submodules.

generate() carries the recurrent MMRecState as its cache under the keyword ``state``: the prompt is prefilled in
one forward call, then each step feeds only the tokens the state has not consumed (one per step), so memory per
generated token is constant. MM-Rec has no attention mask: padding would enter the state, so an attention_mask
with zeros is refused (evaluate padded batches row by row, e.g. lm-eval's batch_size=1 for generation tasks).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from ..errors import CheckpointError
from ..model import MMRecLM
from ..state import MMRecState
from .configuration import MODEL_TYPE, MMRecHFConfig

HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")

# files written beside config.json so that a folder on the hub loads with trust_remote_code=True where mmrec is
# installed but mmrec_model was not imported (e.g. the lm_eval CLI); each re-exports the installed class
REMOTE_CODE = {
    "configuration_mmrec.py": "from mmrec_model.hf.configuration import MMRecHFConfig\n",
    "modeling_mmrec.py": "from mmrec_model.hf.modeling import MMRecForCausalLM\n",
}
AUTO_MAP = {"AutoConfig": "configuration_mmrec.MMRecHFConfig",
            "AutoModelForCausalLM": "modeling_mmrec.MMRecForCausalLM"}


@dataclass
class MMRecCausalLMOutput(ModelOutput):
    """loss (with labels), logits [B, T, V] and the recurrent state after the segment (None with use_cache=False)."""
    loss: Optional[Tensor] = None
    logits: Optional[Tensor] = None
    state: Optional[MMRecState] = None


class MMRecForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MMRecHFConfig
    base_model_prefix = "mmrec"
    main_input_name = "input_ids"
    _no_split_modules = ["MMRecBlock"]
    _is_stateful = True          # no assisted generation: a state cannot be rewound
    _tied_weights_keys = {"lm_head.weight": "embed.weight"}

    def __init__(self, config: MMRecHFConfig):
        super().__init__(config)
        lm = MMRecLM(config.to_mmrec())
        self.embed, self.drop, self.blocks, self.norm, self.lm_head = lm.embed, lm.drop, lm.blocks, lm.norm, lm.lm_head
        # not a registered submodule: its parameters are the ones above, under the same names
        object.__setattr__(self, "_lm", lm)
        if not config.tie_word_embeddings:
            self._tied_weights_keys = {}
        self.post_init()

    def _init_weights(self, module) -> None:
        """MMRecLM's constructor initialises every parameter (its own scheme); nothing to add."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False             # the cache is the MMRecState, made by forward

    @classmethod
    def from_mmrec(cls, lm: MMRecLM) -> "MMRecForCausalLM":
        """The HF model of an MMRecLM, with a copy of its weights."""
        model = cls(MMRecHFConfig.from_mmrec(lm.config))
        model._lm.load_state_dict(lm.state_dict())
        return model.to(device=next(lm.parameters()).device, dtype=next(lm.parameters()).dtype)

    def to_mmrec(self) -> MMRecLM:
        """The MMRecLM that runs this model's forward pass (it shares the parameters)."""
        return self._lm

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = self._lm.embed = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = self._lm.lm_head = value

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                state: Optional[MMRecState] = None, labels: Optional[Tensor] = None,
                use_cache: Optional[bool] = None, return_dict: Optional[bool] = None,
                inputs_embeds: Optional[Tensor] = None, logits_to_keep: int = 0, **kwargs: Any):
        """input_ids [B, T] (continuing `state` if given) -> logits [B, T, V] (the last `logits_to_keep` positions
        if > 0), the new state, and with labels [B, T] the mean next-token cross-entropy (labels shifted inside,
        -100 ignored)."""
        if inputs_embeds is not None:
            raise ValueError("MMRecForCausalLM: inputs_embeds is not supported; pass input_ids")
        if input_ids is None:
            raise ValueError("MMRecForCausalLM: input_ids is required")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("MMRecForCausalLM: attention_mask has zeros, but a recurrent model has no mask (padding "
                             "would enter the state); run padded rows one at a time")
        x, new_state = self._lm.hidden(input_ids, state)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(x)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("MMRecForCausalLM: labels need the logits of every position (logits_to_keep=0)")
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        out = MMRecCausalLMOutput(loss=loss, logits=logits, state=new_state if use_cache is not False else None)
        return out if return_dict is not False else out.to_tuple()

    # -------------------------------------------------------------------------------------- generation
    def prepare_inputs_for_generation(self, input_ids: Tensor, state: Optional[MMRecState] = None,
                                      attention_mask: Optional[Tensor] = None, use_cache: Optional[bool] = None,
                                      inputs_embeds: Optional[Tensor] = None, **kwargs: Any) -> Dict[str, Any]:
        """With a state, only the tokens it has not consumed yet (the last generated one); the prompt in full on
        the first step."""
        if inputs_embeds is not None:
            raise ValueError("MMRecForCausalLM.generate: inputs_embeds is not supported; pass input_ids")
        inputs: Dict[str, Any] = {"use_cache": use_cache, "state": state}
        if state is not None:
            if state.position >= input_ids.shape[1]:
                raise ValueError(f"MMRecForCausalLM.generate: the state has consumed {state.position} tokens, the "
                                 f"sequence holds {input_ids.shape[1]}")
            input_ids = input_ids[:, state.position:]
        else:
            inputs["attention_mask"] = attention_mask      # checked once, on the prompt
        inputs["input_ids"] = input_ids.contiguous()
        if "logits_to_keep" in kwargs:
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs: Dict[str, Any], *args, **kwargs
                                            ) -> Dict[str, Any]:
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        model_kwargs["state"] = outputs.get("state")
        return model_kwargs

    # -------------------------------------------------------------------------------------- folders
    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' save_pretrained, plus the auto_map and the two re-exporting files it names (for
        trust_remote_code loading)."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained, with missing or unexpected weights an error naming the folder (another
        model's weights, or a damaged file) rather than a warning and random parameters."""
        want_info = kwargs.pop("output_loading_info", False)
        if kwargs.get("config") is None:
            # transformers only warns when a config of another model_type meets this class
            hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
            values, _ = MMRecHFConfig.get_config_dict(pretrained_model_name_or_path, **hub)
            if values.get("model_type") != MODEL_TYPE:
                raise CheckpointError(f"{os.path.join(str(pretrained_model_name_or_path), 'config.json')}: "
                                      f"model_type is {values.get('model_type')!r}, not {MODEL_TYPE!r}")
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                              **kwargs)
        missing = sorted(set(info.get("missing_keys", ())) - set(model._tied_weights_keys))
        unexpected = sorted(info.get("unexpected_keys", ()))
        mismatched = sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", ()))
        if missing or unexpected or mismatched:
            raise CheckpointError(
                f"{pretrained_model_name_or_path}: the weights do not fit MM-Rec with its config.json "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]})")
        # transformers may leave parameters as views into its load buffer at unaligned addresses, where the CPU
        # GEMMs take other code paths and logits differ from MMRecLM's in the last bits: give each its own storage
        with torch.no_grad():
            for p in model.parameters():
                if p.device.type == "cpu" and p.data_ptr() % 64:
                    p.data = p.data.clone()
        return (model, info) if want_info else model


def write_remote_code(directory) -> None:
    for name, text in REMOTE_CODE.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(f'"""Re-exports the installed mmrec package\'s class (pip install \'mmrec[hf]\')."""\n{text}')

