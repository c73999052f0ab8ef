"""The trainer's configuration: a TrainConfig (run-wide settings, model overrides) holding one StageConfig per
stage, the default stage settings, and the readers of config files and `--set KEY=VALUE` overrides.

Every field has a type and a range (pydantic). Values from YAML/JSON files, `--set` and the CLI are parsed by
the field's type: YAML scalars are read as text (no YAML 1.1 octal `010` = 8, sexagesimal `1:30` = 90 or
`3e-4`-is-a-string surprises) and converted by the field, so `lr=3e-4`, `lr=0.0003` and `lr=3E-4` are one
float. A bad value raises ConfigError with one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import json
import math
import typing
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from ..config import MMRecConfig
from ..data import STAGES


class ConfigError(ValueError):
    """A setting that cannot be used: the message names the key, the value and what is allowed."""


PositiveInt = typing.Annotated[int, Field(ge=1)]
Finite = dict(allow_inf_nan=False)


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: Optional[List[str]] = None       # data specs; None = the stage's *train* files in data_dir
    valid: Optional[List[str]] = None       # held-out specs; None = the stage's *valid*/*test* files
    max_steps: int = Field(100, ge=1)       # optimizer steps
    max_tokens: Optional[int] = Field(None, ge=1)   # caps max_steps at ceil(max_tokens / (batch_size * seq_len))
    batch_size: int = Field(8, ge=1)        # rows per optimizer step (global, over all ranks)
    micro_batch_size: Optional[int] = Field(None, ge=1)  # rows per forward pass per rank; None = batch / world
    seq_len: int = Field(128, ge=2)         # tokens per row (instruct/chat: longer examples are cut)
    lr: float = Field(2e-3, gt=0, **Finite)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, **Finite)   # cosine decays to lr * min_lr_ratio
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0, **Finite)
    beta1: float = Field(0.9, ge=0, lt=1, **Finite)
    beta2: float = Field(0.95, ge=0, lt=1, **Finite)
    grad_clip: float = Field(1.0, ge=0, **Finite)            # 0: no clipping
    tbptt: bool = False                     # pretrain: carry the recurrent state across consecutive segments
    eval_every: int = Field(0, ge=0)        # held-out evaluation every N steps (0: only at the end)
    eval_windows: int = Field(16, ge=1)     # per held-out set: windows (pretrain) or examples (instruct/chat)
    eval_batch_size: int = Field(8, ge=1)
    save_every: int = Field(50, ge=0)       # resumable checkpoint every N steps (0: only at the end)
    log_every: int = Field(1, ge=1)
    sample_tokens: int = Field(48, ge=0)    # tokens per sample generation after the stage


# The default run: all three stages on the bundled corpus with the tiny preset, sized for <= 8 minutes on a 2-core
# CPU. Measured at equal idle compute (~100 s of pre-training, 2026-12-01): tiny over 2.0M tokens reached
# tinyshakespeare perplexity 74, d_model 96 x 3 layers over 1.0M tokens 96, d_model 128 x 4 layers over 0.73M 93, so
# the budget goes to more tokens for tiny (the previous 600 pre-training steps gave 83).
DEFAULT_STAGES: Dict[str, Dict[str, Any]] = {
    "pretrain": dict(max_steps=1800, batch_size=16, seq_len=128, lr=4e-3, warmup_steps=60, tbptt=True,
                     eval_every=450, save_every=300),
    "instruct": dict(max_steps=400, batch_size=16, seq_len=192, lr=2e-3, warmup_steps=20, eval_every=100,
                     save_every=200),
    "chat": dict(max_steps=240, batch_size=8, seq_len=256, lr=1e-3, warmup_steps=12, eval_every=80,
                 save_every=120),
}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: Literal["tiny", "small", "base"] = "tiny"
    model: Dict[str, Any] = Field(default_factory=dict)   # MMRecConfig overrides, typed by its fields
    vocab_size: int = Field(2048, ge=262)                  # 256 bytes + 6 control tokens at least
    tokenizer_max_chars: int = Field(4_000_000, ge=1)      # pre-training text used to train the BPE
    data_dir: Optional[str] = None                         # None = the bundled corpus
    cache_dir: Optional[str] = None                        # token shards; None = $MMREC_CACHE/tokens or ~/.cache/mmrec/tokens
    shard_tokens: int = Field(1 << 26, ge=1)               # tokens per shard file of a newly prepared stream
    on_bad_record: Literal["skip", "error"] = "skip"       # malformed records: skip (reported) or refuse
    seed: int = Field(1234, ge=0)
    device: str = "auto"                                   # auto, cpu, cuda, cuda:N
    compile: Literal["auto", "on", "off"] = "auto"         # torch.compile: auto = on for CUDA training
    # torch.compile's mode on CUDA: reduce-overhead replays CUDA graphs (no per-kernel launch cost from Python;
    # single-process runs, DDP runs compile with the default mode)
    compile_mode: Literal["default", "reduce-overhead"] = "reduce-overhead"
    backend: Optional[Literal["ref", "cpu", "cuda", "triton"]] = None
    amp: Literal["auto", "bf16", "none"] = "auto"          # auto = bf16 autocast on GPU, none on CPU
    threads: Optional[int] = Field(None, ge=1)             # torch CPU threads per process (None = torch's)
    keep_checkpoints: int = Field(2, ge=1)
    progress: bool = True
    stages: Dict[Literal["pretrain", "instruct", "chat"], StageConfig] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, values: Any) -> Any:
        """Each stage's settings are its defaults overridden by the given (possibly partial) mapping."""
        if not isinstance(values, dict):
            return values
        given = values.get("stages") or {}
        if not isinstance(given, dict):
            return values
        stages: Dict[str, Any] = {}
        for name in STAGES:
            over = given.get(name, {})
            if isinstance(over, StageConfig):
                over = over.model_dump(exclude_unset=True)
            stages[name] = {**DEFAULT_STAGES[name], **over} if isinstance(over, dict) else over
        stages.update({k: v for k, v in given.items() if k not in STAGES})   # unknown names: refused below
        return {**values, "stages": stages}

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_bool(cls, value: Any) -> Any:
        """Run folders of earlier versions saved compile as a bool."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        kind, _, index = value.partition(":")
        if value in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit()):
            return value
        raise ValueError("must be auto, cpu, cuda or cuda:N")

    @field_validator("model")
    @classmethod
    def _model_overrides(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        return {key: _model_field(key, value) for key, value in values.items()}

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump(mode="json")


def _model_field(key: str, value: Any) -> Any:
    """An MMRecConfig override converted to that field's type."""
    hints = typing.get_type_hints(MMRecConfig)
    names = [f.name for f in dataclass_fields(MMRecConfig)]
    if key not in names:
        raise ValueError(f"unknown model field {key!r}; known: {', '.join(names)}")
    try:
        parsed = TypeAdapter(hints[key]).validate_python(value)
    except ValidationError as e:
        raise ValueError(f"model.{key}: {e.errors()[0]['msg']}") from None
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise ValueError(f"model.{key} must be finite")
    return parsed


def _describe(error: Dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-") and str(p) != "[key]")
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    message = error["msg"].removeprefix("Value error, ")
    shown = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 80 else type(value).__name__
    return f"{key or 'the top level'} = {shown}: {message}"


def config_from_dict(values: Any) -> TrainConfig:
    """A TrainConfig from nested values (files, --set, flags); ConfigError names every bad key."""
    if not isinstance(values, dict):
        raise ConfigError(f"config: the top level must be a mapping, got {type(values).__name__}")
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as e:
        raise ConfigError("config: " + "; ".join(_describe(err) for err in e.errors())) from None


class _TextScalarLoader(yaml.SafeLoader):
    """YAML with numbers left as text (typed later by each field); mappings, lists, true/false, null as usual."""


_TextScalarLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_TextScalarLoader)


def load_config_file(path) -> Dict[str, Any]:
    """The mapping in a JSON or YAML file (by suffix; anything else is tried as JSON, then YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            values = parse_yaml(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            try:
                values = json.loads(text)
            except ValueError:
                values = parse_yaml(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid JSON/YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the config must be a mapping at the top level, got "
                          f"{type(values).__name__}")
    return values


def merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: Sequence[str]) -> Dict[str, Any]:
    """--set a.b.c=VALUE -> nested dict. VALUE is YAML with numbers left as text: each field types it."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects KEY=VALUE (KEY like stages.pretrain.lr), got {item!r}")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse {raw!r} ({str(e).splitlines()[0]})") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is given a value and sub-keys")
        node[parts[-1]] = value
    return out
