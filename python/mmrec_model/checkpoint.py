"""Atomic, resumable training checkpoints.

A checkpoint is a directory `ckpt-<step>/` holding what `MMRecLM.save_pretrained` writes
(config.json, model.safetensors), tokenizer.json, trainer_state.pt (optimizer, data position, RNG
states, step, carried TBPTT state) and meta.json, written last. It is assembled in a temporary
directory, fsynced, renamed into place, and only then named in the `LATEST` pointer file (itself
replaced atomically). A kill at any moment leaves either the previous checkpoint or the new one
complete and readable; half-written temporary directories are ignored and cleaned up later.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .errors import CheckpointError
from .model import MMRecLM
from .tokenizer import Tokenizer

__all__ = ["CheckpointError", "save_checkpoint", "latest_checkpoint", "list_checkpoints", "resume_candidates",
           "load_trainer_state", "resolve_checkpoint", "load_for_inference", "rng_state", "set_rng_state",
           "atomic_write_text"]

STAGE_ORDER = ("chat", "instruct", "pretrain")     # a run's newest stage output first
LATEST = "LATEST"
META = "meta.json"
TRAINER_STATE = "trainer_state.pt"
PREFIX = "ckpt-"


def _fsync_path(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def rng_state() -> Dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device), Python and NumPy, as plain tensors and lists."""
    import numpy as np
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate()),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    import numpy as np
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def save_checkpoint(stage_dir, step: int, model, tokenizer, trainer_state: Dict[str, Any], keep: int = 2,
                    meta: Optional[Dict[str, Any]] = None) -> Path:
    """Writes checkpoint `step` into `stage_dir` atomically and points LATEST at it; keeps `keep` newest."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{step:08d}"
    final = stage_dir / name
    tmp = stage_dir / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp)
    tokenizer.save(tmp / "tokenizer.json")
    torch.save(trainer_state, tmp / TRAINER_STATE)
    with open(tmp / META, "w", encoding="utf-8") as f:
        json.dump({"step": step, **(meta or {})}, f, indent=2, sort_keys=True)
    for p in tmp.iterdir():
        _fsync_path(p)
    _fsync_path(tmp)
    if final.exists():                       # a re-save of the same step (resumed exactly here)
        trash = stage_dir / f".{name}.old-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_path(stage_dir)
    atomic_write_text(stage_dir / LATEST, name + "\n")
    _prune(stage_dir, keep, protect=name)
    return final


def _complete(path: Path) -> bool:
    return path.is_dir() and (path / META).is_file() and (path / TRAINER_STATE).is_file()


def list_checkpoints(stage_dir) -> List[Path]:
    """Complete checkpoints in `stage_dir`, oldest first."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return []
    found = [p for p in stage_dir.iterdir() if p.name.startswith(PREFIX) and _complete(p)]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(stage_dir) -> Optional[Path]:
    """The checkpoint LATEST names, or the newest complete one if LATEST is missing or stale."""
    stage_dir = Path(stage_dir)
    pointer = stage_dir / LATEST
    if pointer.is_file():
        candidate = stage_dir / pointer.read_text(encoding="utf-8").strip()
        if _complete(candidate):
            return candidate
    found = list_checkpoints(stage_dir)
    return found[-1] if found else None


def resume_candidates(stage_dir) -> List[Path]:
    """Checkpoints to resume from, best first: the one LATEST names, then the other complete ones newest first
    (a damaged newest checkpoint falls back to the previous intact one)."""
    latest = latest_checkpoint(stage_dir)
    if latest is None:
        return []
    return [latest] + [p for p in reversed(list_checkpoints(stage_dir)) if p != latest]


def load_trainer_state(checkpoint_dir, map_location="cpu") -> Dict[str, Any]:
    path = Path(checkpoint_dir) / TRAINER_STATE
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read the trainer state ({type(e).__name__}: {e})") from None


def resolve_checkpoint(path) -> Path:
    """A directory with config.json + model.safetensors: `path` itself, or the newest stage output of a run."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    for stage in STAGE_ORDER:
        if (path / stage / "final" / "config.json").is_file():
            return path / stage / "final"
    for stage in STAGE_ORDER:
        latest = latest_checkpoint(path / stage)
        if latest is not None:
            return latest
    raise CheckpointError(f"no model checkpoint in {path} (expected a run directory or a directory with "
                          f"config.json and model.safetensors)")


def load_for_inference(path, device="cpu", dtype: Optional[torch.dtype] = None):
    """(model in eval mode, tokenizer, checkpoint directory) for a run or checkpoint directory. The tokenizer is
    the checkpoint's own tokenizer.json, else the run's; its vocabulary must be the model's."""
    ckpt = resolve_checkpoint(path)
    tokenizer_path = ckpt / "tokenizer.json"
    if not tokenizer_path.is_file():
        tokenizer_path = ckpt.parent.parent / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise CheckpointError(f"no tokenizer.json in {ckpt} or {ckpt.parent.parent}")
    tok = Tokenizer.load(tokenizer_path)
    model = MMRecLM.from_pretrained(ckpt, device=device, dtype=dtype)
    if tok.vocab_size != model.config.vocab_size:
        raise CheckpointError(f"{tokenizer_path} has {tok.vocab_size} tokens but the model in {ckpt} has a "
                              f"vocabulary of {model.config.vocab_size}: they are not from the same run")
    return model, tok, ckpt


def _prune(stage_dir: Path, keep: int, protect: str) -> None:
    for p in stage_dir.iterdir():                     # leftovers of interrupted saves
        if p.name.startswith(f".{PREFIX}") and ".tmp-" in p.name and not p.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)
    complete = list_checkpoints(stage_dir)
    for p in complete[:-keep] if keep > 0 else []:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)
