"""`python -m mmrec_model.train`: pre-training, instruction tuning and chat fine-tuning of MM-Rec.

With no arguments it runs all three stages on the bundled data (mmrec_model/data), each stage starting
from the previous stage's weights, evaluates held-out loss and perplexity after each stage, prints
sample generations, and ends with a sample chat reply. Outputs go to runs/NAME:

    config.json       the resolved training configuration
    tokenizer.json    the byte-level BPE (also copied into every checkpoint)
    metrics.jsonl     one JSON record per logged step and per held-out evaluation
    loss.png          train and held-out loss of every stage, stage boundaries marked
    samples.md        sample generations after each stage
    <stage>/ckpt-*    resumable checkpoints (weights, optimizer, RNG, data position), LATEST names the newest
    <stage>/final     the stage's output model (MMRecLM.from_pretrained / python -m mmrec_model.chat)

Distributed: `torchrun --nproc_per_node=N -m mmrec_model.train ...` (gloo on CPU, NCCL on GPU). The
global batch (`batch_size` rows per optimizer step) is split over ranks and micro-batches, and the loss
is normalised by the global number of target tokens, so N processes compute the same step as one.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from . import data as D
from .checkpoint import (atomic_write_text, latest_checkpoint, load_trainer_state, rng_state, save_checkpoint,
                         set_rng_state)
from .tokenizer import Tokenizer

STAGES = D.STAGES


# ------------------------------------------------------------------------------------------ config
@dataclass
class StageConfig:
    train: Optional[List[str]] = None      # data specs; None = the stage's *train* files in data_dir
    valid: Optional[List[str]] = None      # held-out specs; None = the stage's *valid*/*test* files
    max_steps: int = 100                   # optimizer steps
    max_tokens: Optional[int] = None       # caps max_steps at ceil(max_tokens / (batch_size * seq_len))
    batch_size: int = 8                    # rows per optimizer step (global, over all ranks)
    micro_batch_size: Optional[int] = None  # rows per forward pass per rank; None = batch_size / world
    seq_len: int = 128                     # tokens per row (instruct/chat: longer examples are cut)
    lr: float = 2e-3
    min_lr_ratio: float = 0.1              # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    tbptt: bool = False                    # pretrain: carry the recurrent state across consecutive segments
    eval_every: int = 0                    # held-out evaluation every N steps (0: only at the end)
    eval_windows: int = 16                 # per held-out set: windows (pretrain) or examples (instruct/chat)
    eval_batch_size: int = 8
    save_every: int = 50                   # resumable checkpoint every N steps (and at the end)
    log_every: int = 1
    sample_tokens: int = 48                # tokens per sample generation after the stage


@dataclass
class TrainConfig:
    preset: str = "tiny"
    model: Dict[str, Any] = field(default_factory=dict)    # MMRecConfig overrides
    vocab_size: int = 2048
    tokenizer_max_chars: int = 4_000_000   # pre-training text used to train the BPE
    data_dir: Optional[str] = None         # None = the bundled data
    on_bad_record: str = "skip"            # malformed records: "skip" (reported) or "error"
    seed: int = 1234
    device: str = "auto"
    compile: bool = False
    backend: Optional[str] = None
    amp: str = "auto"                      # "auto" = bf16 autocast on GPU, none on CPU; "bf16"; "none"
    threads: Optional[int] = None          # torch CPU threads per process (None = torch's default)
    keep_checkpoints: int = 2
    progress: bool = True
    stages: Dict[str, StageConfig] = field(default_factory=dict)

    def __post_init__(self):
        stages = {name: StageConfig(**DEFAULT_STAGES[name]) for name in STAGES}
        for name, values in (self.stages or {}).items():
            if name not in STAGES:
                raise ValueError(f"config: unknown stage {name!r}; stages are {STAGES}")
            if isinstance(values, StageConfig):
                stages[name] = values
            else:
                _check_keys(values, StageConfig, f"stages.{name}")
                stages[name] = dataclasses.replace(stages[name], **values)
        self.stages = stages

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        return out


# The default run: all three stages on the bundled data with the tiny preset. Measured with the C++ CPU
# kernels of every op (branches cpu-rec + cpu-mdi) and --threads 1 on a shared, loaded 2-core machine: 284 s + 84 s + 44 s of training,
# 431 s in all (about 4,000 tokens/s). With the pure-PyTorch reference ops it is about 4x slower.
DEFAULT_STAGES: Dict[str, Dict[str, Any]] = {
    "pretrain": dict(max_steps=600, batch_size=16, seq_len=128, lr=4e-3, warmup_steps=30, tbptt=True,
                     eval_every=150, save_every=150),
    "instruct": dict(max_steps=200, batch_size=16, seq_len=192, lr=2e-3, warmup_steps=10, eval_every=50,
                     save_every=100),
    "chat": dict(max_steps=120, batch_size=8, seq_len=256, lr=1e-3, warmup_steps=6, eval_every=40,
                 save_every=60),
}

SAMPLE_PROMPTS = {
    "pretrain": ["ROMEO:\n", "The history of the"],
    "instruct": [("Give three tips for staying healthy.", ""), ("Translate the sentence into French.", "Good morning!")],
    "chat": ["Hello! What can you help me with?"],
}


def _check_keys(values: Dict[str, Any], cls, where: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"config: {where} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"config: unknown key(s) {sorted(unknown)} in {where}; known: {sorted(known)}")


def config_from_dict(values: Dict[str, Any]) -> TrainConfig:
    _check_keys(values, TrainConfig, "the top level")
    return TrainConfig(**values)


def load_config_file(path) -> Dict[str, Any]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml
        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the config must be a mapping at the top level")
    return values


def merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: Sequence[str]) -> Dict[str, Any]:
    """--set a.b.c=VALUE (VALUE parsed as YAML: numbers, true/false, lists) -> nested dict."""
    import yaml
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


# ------------------------------------------------------------------------------------------ runtime
@dataclass
class Runtime:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def all_sum(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return float(t.item())

    def all_max(self, value: int) -> int:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def setup_runtime(device_arg: str) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_arg)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device_arg}: CUDA is not available")
        if world > 1 or device.index is None:
            device = torch.device("cuda", local_rank if world > 1 else 0)
        torch.cuda.set_device(device)
    rt = Runtime(rank, world, local_rank, device, world > 1)
    if rt.distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rt


def select_backend(name: str) -> None:
    """Forces mmrec_ops backend `name` for every op in this process (and its autograd threads)."""
    import mmrec_ops
    with mmrec_ops.backend(name):      # raises a clear error if the backend cannot run here
        pass
    os.environ["MMREC_BACKEND"] = name


def seed_everything(seed: int) -> None:
    import numpy as np
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def lr_at(step: int, cfg: StageConfig, max_steps: int) -> float:
    """Linear warmup for warmup_steps, then cosine from lr to lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, progress)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stage_steps(cfg: StageConfig) -> int:
    steps = cfg.max_steps
    if cfg.max_tokens is not None:
        steps = min(steps, math.ceil(cfg.max_tokens / (cfg.batch_size * cfg.seq_len)))
    return max(1, steps)


# ------------------------------------------------------------------------------------------ logging
class Metrics:
    """Appends JSON records to metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:    # a line cut by a kill
                continue
        return out

    def truncate_after(self, stage: str, step: int) -> None:
        """Drops records written after checkpoint `step` of `stage` (they are recomputed on resume)."""
        if not self.enabled or not self.path.is_file():
            return
        order = STAGES.index(stage)
        kept = [r for r in self.read()
                if STAGES.index(r["stage"]) < order or (r["stage"] == stage and r["step"] <= step)]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_metrics(metrics_path: Path, png_path: Path) -> Optional[Path]:
    """Train loss and held-out losses of every stage on one step axis, with the stage boundaries."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed; no loss plot", file=sys.stderr)
        return None
    records = Metrics(metrics_path, False).read()
    if not records:
        return None
    offsets, offset = {}, 0
    for stage in STAGES:
        steps = [r["step"] for r in records if r["stage"] == stage]
        if steps:
            offsets[stage] = offset
            offset += max(steps)
    fig, ax = plt.subplots(figsize=(9, 5))
    for stage in offsets:
        train = [r for r in records if r["kind"] == "train" and r["stage"] == stage]
        ax.plot([offsets[stage] + r["step"] for r in train], [r["loss"] for r in train], lw=1, color="tab:blue",
                label="train" if stage == next(iter(offsets)) else None)
    sets = sorted({r["set"] for r in records if r["kind"] == "eval"})
    for i, name in enumerate(sets):
        ev = [r for r in records if r["kind"] == "eval" and r["set"] == name]
        ax.plot([offsets[r["stage"]] + r["step"] for r in ev], [r["loss"] for r in ev], marker="o", ms=4,
                lw=1, ls="--", label=f"held-out {name}", color=f"C{(i + 1) % 10}")
    for stage, start in offsets.items():
        ax.axvline(start, color="gray", lw=0.8, ls=":")
        ax.text(start, 1.0, f" {stage}", transform=ax.get_xaxis_transform(), va="top", fontsize=9, color="gray")
    ax.set_xlabel("optimizer step (stages concatenated)")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path


class Progress:
    def __init__(self, enabled: bool, total: int, initial: int, desc: str):
        self.bar = None
        self.enabled = enabled
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                            mininterval=0.5, file=sys.stderr)

    def update(self, postfix: Dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StopFlag:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop at the next step boundary; a second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:        # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class Interrupted(Exception):
    pass


# ------------------------------------------------------------------------------------------ data
def load_stage_sources(stage: str, tcfg: TrainConfig, log) -> tuple:
    """(train sources, held-out sources) of a stage, every record checked (see data.load_sources)."""
    kind = D.STAGE_KIND[stage]
    cfg = tcfg.stages[stage]
    data_dir = tcfg.data_dir or D.DATA_DIR
    train_specs = D.stage_files(stage, "train", cfg.train, data_dir)
    valid_specs = D.stage_files(stage, "valid", cfg.valid, data_dir)
    train = D.load_sources(train_specs, kind, tcfg.on_bad_record, data_dir, log)
    valid = D.load_sources(valid_specs, kind, tcfg.on_bad_record, data_dir, log) if valid_specs else []
    return train, valid


class StageData:
    """A stage's training batches and held-out evaluation batches."""

    def __init__(self, stage: str, cfg: StageConfig, sources: tuple, tok: Tokenizer, rt: Runtime,
                 micro: int, seed: int, cache_dir: Optional[Path], chunk_len: int, log):
        kind = D.STAGE_KIND[stage]
        train_sources, valid_sources = sources
        self.eval_sets: Dict[str, List[D.MicroBatch]] = {}
        if kind == "text":
            stream = _cached(cache_dir, tok, train_sources,
                             lambda: D.encode_documents(tok, [r for s in train_sources for r in s.records]))
            self.batches = D.TextBatches(stream, cfg.seq_len, cfg.batch_size, micro, seed, cfg.tbptt,
                                         rt.rank, rt.world)
            self.train_tokens = len(stream)
            for s in valid_sources:
                ids = _cached(cache_dir, tok, [s], lambda: D.encode_documents(tok, s.records))
                self.eval_sets[_set_name(s.name)] = D.eval_text_batches(ids, cfg.seq_len, cfg.eval_batch_size,
                                                                        cfg.eval_windows)
        else:
            records = [r for s in train_sources for r in s.records]
            examples, dropped = D.render_examples(tok, kind, records, cfg.seq_len + 1)
            if dropped:
                log(f"{stage}: {dropped} example(s) have no target token within seq_len={cfg.seq_len} "
                    f"and were left out")
            self.batches = D.ExampleBatches(examples, cfg.batch_size, micro, seed, tok.pad_id, rt.rank, rt.world,
                                            pad_multiple=chunk_len)
            self.train_tokens = sum(len(e[0]) for e in examples)
            for s in valid_sources:
                ex, _ = D.render_examples(tok, kind, s.records, cfg.seq_len + 1)
                if ex:
                    self.eval_sets[_set_name(s.name)] = D.eval_example_batches(
                        ex, cfg.eval_batch_size, cfg.eval_windows, tok.pad_id, pad_multiple=chunk_len)


def _set_name(spec: str) -> str:
    return spec if spec.startswith("hf:") else Path(spec).stem


def _cached(cache_dir: Optional[Path], tok: Tokenizer, sources, build):
    """Token streams cached per (tokenizer, files) in the run directory (they are re-read on resume)."""
    if cache_dir is None or any(s.name.startswith("hf:") for s in sources):
        return build()
    h = hashlib.sha1(tok.to_str().encode())
    for s in sources:
        st = os.stat(s.name)
        h.update(f"{os.path.abspath(s.name)}|{st.st_size}|{st.st_mtime_ns}".encode())
    path = cache_dir / f"tokens-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            pass
    ids = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(ids, tmp)
    os.replace(tmp, path)
    return ids


# ------------------------------------------------------------------------------------------ state helpers
def _pack_state(state) -> Optional[Dict[str, Any]]:
    if state is None:
        return None
    return {"position": state.position,
            "layers": [[s.h.cpu(), s.m.cpu(), s.slots.cpu(), s.chunk_sum.cpu()] for s in state.layers]}


def _unpack_state(packed, device):
    if packed is None:
        return None
    from .model import LayerState, MMRecState
    return MMRecState([LayerState(*(t.to(device) for t in layer)) for layer in packed["layers"]],
                      int(packed["position"]))


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "M0" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _amp_context(tcfg: TrainConfig, device: torch.device):
    use = tcfg.amp == "bf16" or (tcfg.amp == "auto" and device.type == "cuda")
    if tcfg.amp not in ("auto", "bf16", "none"):
        raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {tcfg.amp!r}")
    if use:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.no_grad()
def evaluate(model, sets: Dict[str, List[D.MicroBatch]], device, amp) -> Dict[str, Dict[str, float]]:
    """Token-weighted held-out loss and perplexity of each set (each row from a fresh state)."""
    was_training = model.training
    model.eval()
    out = {}
    for name, batches in sets.items():
        total, count = 0.0, 0
        for mb in batches:
            x, y = mb.x.to(device), mb.y.to(device)
            with amp():
                logits, _ = model(x)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=D.IGNORE,
                                     reduction="sum").item()
            count += int((y != D.IGNORE).sum())
        if count:
            loss = total / count
            out[name] = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}
    model.train(was_training)
    return out


def stage_samples(stage: str, model, tok: Tokenizer, max_new_tokens: int, seed: int) -> List[Dict[str, str]]:
    """Sample generations for `stage` (a fixed generator, so the training RNG is not touched)."""
    from .chat import ChatSession, continue_stream
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for prompt in SAMPLE_PROMPTS[stage]:
        if stage == "pretrain":
            ids, _ = continue_stream(model, tok.encode(prompt), None, max_new_tokens, stop=(tok.eos_id,),
                                     temperature=0.8, top_k=40, top_p=0.95, generator=g)
            out.append({"prompt": prompt, "output": tok.decode(ids)})
        elif stage == "instruct":
            instruction, inp = prompt
            ids, _ = continue_stream(model, tok.render_instruction(instruction, inp)[0], None, max_new_tokens,
                                     stop=(tok.end_id, tok.eos_id), temperature=0.7, top_k=40, top_p=0.95,
                                     generator=g)
            out.append({"prompt": tok.instruction_prompt(instruction, inp), "output": tok.decode(ids)})
        else:
            session = ChatSession(model, tok, max_new_tokens=max_new_tokens, temperature=0.7, seed=seed)
            out.append({"prompt": prompt, "output": session.reply(prompt)})
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------ one stage
def save_final(stage_dir: Path, model, tok: Tokenizer, meta: Dict[str, Any]) -> Path:
    """Writes the stage's output model to stage_dir/final atomically (temp dir + rename)."""
    final = stage_dir / "final"
    tmp = stage_dir / f".final.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tok.save(tmp / "tokenizer.json")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def run_stage(stage: str, tcfg: TrainConfig, rt: Runtime, out: Path, tok: Tokenizer, init_dir: Optional[Path],
              resume: bool, metrics: Metrics, halt_at: Optional[tuple] = None, sources: Optional[tuple] = None,
              model_class=None):
    """Trains one stage; returns (final model directory, summary dict).

    model_class (benchmarks only, default MMRecLM): another LM class with MMRecLM's interface plus a
    classmethod from_preset(preset, **overrides), e.g. the baselines of bench/baselines.py."""
    from . import MMRecConfig, MMRecLM
    model_class = model_class or MMRecLM
    cfg = tcfg.stages[stage]
    stage_dir = out / stage
    max_steps = stage_steps(cfg)
    log = (lambda s: print(s, flush=True)) if rt.main else (lambda s: None)
    seed = tcfg.seed + 1000 * (STAGES.index(stage) + 1)
    seed_everything(seed)

    micro = cfg.micro_batch_size or cfg.batch_size // rt.world
    if cfg.batch_size % rt.world or (cfg.batch_size // rt.world) % micro:
        raise ValueError(f"{stage}: batch_size={cfg.batch_size} does not split into {rt.world} rank(s) x "
                         f"micro-batches of {micro}")
    accum = cfg.batch_size // rt.world // micro
    tbptt = cfg.tbptt and stage == "pretrain"
    if cfg.tbptt and not tbptt:
        log(f"{stage}: tbptt applies to pre-training only (rows here are separate examples); ignored")

    resume_dir = latest_checkpoint(stage_dir) if resume else None
    if resume_dir is not None:
        model = model_class.from_pretrained(resume_dir)
        log(f"{stage}: resuming from {resume_dir}")
    elif init_dir is not None:
        model = model_class.from_pretrained(init_dir)
        log(f"{stage}: starting from {init_dir}")
    else:
        overrides = dict(tcfg.model)
        overrides["vocab_size"] = tok.vocab_size
        if model_class is MMRecLM:
            model = MMRecLM(MMRecConfig.preset(tcfg.preset, **overrides))
        else:
            model = model_class.from_preset(tcfg.preset, **overrides)
        if stage != "pretrain":
            log(f"{stage}: no previous stage's checkpoint; starting from random weights")
    if model.config.vocab_size != tok.vocab_size:
        raise ValueError(f"{stage}: the model's vocab_size {model.config.vocab_size} differs from the "
                         f"tokenizer's {tok.vocab_size}")
    if cfg.seq_len < model.config.chunk_len:
        raise ValueError(f"{stage}: seq_len={cfg.seq_len} must be >= the model's chunk_len={model.config.chunk_len}")
    model.to(rt.device)
    model.train()

    if sources is None:
        sources = load_stage_sources(stage, tcfg, log)
    data = StageData(stage, dataclasses.replace(cfg, tbptt=tbptt), sources, tok, rt, micro, seed, out / "cache",
                     model.config.chunk_len, log)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    step, tokens_seen, elapsed = 0, 0, 0.0
    lane_states: Dict[int, Any] = {}
    if resume_dir is not None:
        state = load_trainer_state(resume_dir)
        optimizer.load_state_dict(state["optimizer"])
        data.batches.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        step, tokens_seen, elapsed = state["step"], state["tokens"], state["elapsed"]
        packed = state.get("tbptt")
        if packed is not None and state.get("world") == rt.world and state.get("micro") == micro:
            lane_states = {k: _unpack_state(v, rt.device) for k, v in packed[rt.rank].items()}
        elif packed is not None:
            log(f"{stage}: world size or micro-batch changed; the carried TBPTT state restarts")
        metrics.truncate_after(stage, step)
    else:
        metrics.truncate_after(stage, -1)     # records of an earlier attempt that saved no checkpoint

    train_model = model
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # a carried TBPTT state replaces the learned initial slots M0, which then get no gradient
        train_model = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                          find_unused_parameters=tbptt)
    if tcfg.compile:
        train_model = torch.compile(train_model)
    amp = _amp_context(tcfg, rt.device)
    params = [p for p in model.parameters() if p.requires_grad]

    n_params = model.num_parameters()
    if resume_dir is None:
        log(f"{stage}: {n_params / 1e6:.2f}M parameters, {data.train_tokens:,} training tokens, {max_steps} steps "
            f"x {cfg.batch_size} rows x {cfg.seq_len} tokens (micro-batch {micro}, accumulation {accum}, "
            f"world {rt.world}){', TBPTT' if tbptt else ''}")

    def checkpoint() -> None:
        packed_lanes = {k: _pack_state(v) for k, v in lane_states.items()} if tbptt else None
        gathered = [packed_lanes]
        if rt.distributed and tbptt:
            gathered = [None] * rt.world
            torch.distributed.all_gather_object(gathered, packed_lanes)
        if rt.main:
            trainer_state = {"step": step, "tokens": tokens_seen, "elapsed": elapsed,
                             "optimizer": optimizer.state_dict(), "data": data.batches.state_dict(),
                             "rng": rng_state(), "world": rt.world, "micro": micro,
                             "tbptt": gathered if tbptt else None}
            save_checkpoint(stage_dir, step, model, tok, trainer_state, keep=tcfg.keep_checkpoints,
                            meta={"stage": stage, "tokens": tokens_seen})
        rt.barrier()

    def run_eval() -> Dict[str, Dict[str, float]]:
        results = {}
        if rt.main and data.eval_sets:
            results = evaluate(model, data.eval_sets, rt.device, amp)
            for name, r in results.items():
                metrics.write({"kind": "eval", "stage": stage, "step": step, "set": name, **r})
        rt.barrier()
        return results

    progress = Progress(rt.main and tcfg.progress, max_steps, step, stage)
    first_losses: List[float] = []
    last_losses: List[float] = []
    if cfg.eval_every and step == 0:
        for name, r in run_eval().items():
            progress.write(f"{stage} step 0: held-out {name} loss {r['loss']:.4f} ppl {r['ppl']:.1f}")
    with StopFlag() as stop:
        while step < max_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg, max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = data.batches.next()
            n_targets = rt.all_sum(float(sum(int((mb.y != D.IGNORE).sum()) for mb in micro_batches)))
            loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)   # one host sync per step
            step_tokens = 0
            for i, mb in enumerate(micro_batches):
                x, y = mb.x.to(rt.device), mb.y.to(rt.device)
                carried = None
                if tbptt and not mb.reset:
                    carried = lane_states.get(mb.lane)
                last = i == len(micro_batches) - 1
                sync = contextlib.nullcontext() if (last or not rt.distributed) else train_model.no_sync()
                with sync:
                    with amp():
                        logits, new_state = train_model(x, carried)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=D.IGNORE,
                                           reduction="sum")
                    (loss * (rt.world / max(n_targets, 1.0))).backward()
                if tbptt:
                    lane_states[mb.lane] = new_state.detach()
                loss_sum += loss.detach().double()
                step_tokens += x.numel()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_loss = rt.all_sum(float(loss_sum)) / max(n_targets, 1.0)
            step_tokens = int(rt.all_sum(float(step_tokens)))
            tokens_seen += step_tokens
            dt = time.perf_counter() - t0
            elapsed += dt
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"{stage}: the loss became {step_loss} at step {step}")
            (first_losses if len(first_losses) < 10 else last_losses).append(step_loss)
            last_losses = last_losses[-10:]
            if step % cfg.log_every == 0 or step == max_steps:
                metrics.write({"kind": "train", "stage": stage, "step": step, "loss": step_loss, "lr": lr,
                               "grad_norm": None if grad_norm is None else float(grad_norm),
                               "tokens": tokens_seen, "targets": int(n_targets), "tok_per_s": step_tokens / dt,
                               "time": elapsed})
            progress.update({"loss": f"{step_loss:.3f}", "lr": f"{lr:.1e}", "tok/s": f"{step_tokens / dt:,.0f}"})
            if not tcfg.progress and rt.main and (step % max(1, max_steps // 10) == 0 or step == max_steps):
                log(f"{stage} step {step}/{max_steps} loss {step_loss:.4f} lr {lr:.2e} {step_tokens / dt:,.0f} tok/s")
            if cfg.eval_every and step % cfg.eval_every == 0 and step < max_steps:
                for name, r in run_eval().items():
                    progress.write(f"{stage} step {step}: held-out {name} loss {r['loss']:.4f} ppl {r['ppl']:.1f}")
            halt = halt_at == (stage, step)
            if (cfg.save_every and step % cfg.save_every == 0) or step == max_steps:
                checkpoint()
            if rt.all_max(int(stop.requested or halt)):
                if not ((cfg.save_every and step % cfg.save_every == 0) or step == max_steps):
                    checkpoint()
                progress.close()
                raise Interrupted(f"{stage}: stopped at step {step}; checkpoint saved in {stage_dir}")
        progress.close()
    results = run_eval()
    summary = {"stage": stage, "steps": step, "tokens": tokens_seen, "time_s": elapsed,
               "loss_first": sum(first_losses) / len(first_losses) if first_losses else None,
               "loss_last": sum(last_losses) / len(last_losses) if last_losses else None,
               "held_out": results}
    final = stage_dir / "final"
    if rt.main:
        samples = stage_samples(stage, model, tok, cfg.sample_tokens, tcfg.seed)
        summary["samples"] = samples
        save_final(stage_dir, model, tok, summary)
        _report_stage(summary, out, log)
    rt.barrier()
    return final, summary


def _report_stage(summary: Dict[str, Any], out: Path, log) -> None:
    stage = summary["stage"]
    lines = [f"== {stage}: {summary['steps']} steps, {summary['tokens']:,} tokens, {summary['time_s']:.0f} s"]
    if summary["loss_first"] is not None and summary["loss_last"] is not None:
        lines.append(f"   train loss {summary['loss_first']:.3f} (first 10 steps) -> {summary['loss_last']:.3f} "
                     f"(last 10 steps)")
    for name, r in summary["held_out"].items():
        lines.append(f"   held-out {name}: loss {r['loss']:.3f}, perplexity {r['ppl']:.1f} ({r['tokens']:,} tokens)")
    md = [f"## {stage}\n"]
    for s in summary.get("samples", []):
        lines.append(f"   sample | {s['prompt']!r} -> {s['output']!r}")
        md.append(f"**prompt:** {s['prompt']!r}\n\n**output:** {s['output']!r}\n")
    log("\n".join(lines))
    with open(out / "samples.md", "a", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")


# ------------------------------------------------------------------------------------------ tokenizer
def get_tokenizer(tcfg: TrainConfig, rt: Runtime, out: Path, init_dir: Optional[Path], log,
                  pretrain_sources: Optional[tuple] = None) -> Tokenizer:
    """The run's tokenizer: runs/NAME/tokenizer.json, else the --init checkpoint's, else trained here."""
    path = out / "tokenizer.json"
    if not path.is_file() and rt.main:
        if init_dir is not None and (init_dir / "tokenizer.json").is_file():
            shutil.copyfile(init_dir / "tokenizer.json", path)
        else:
            t0 = time.perf_counter()
            sources = (pretrain_sources or load_stage_sources("pretrain", tcfg, log))[0]
            tok = Tokenizer.train(D.tokenizer_corpus(sources, tcfg.tokenizer_max_chars), tcfg.vocab_size)
            tok.save(path)
            log(f"tokenizer: byte-level BPE with {tok.vocab_size} tokens trained on "
                f"{min(tcfg.tokenizer_max_chars, sum(len(r) for s in sources for r in s.records)):,} characters "
                f"in {time.perf_counter() - t0:.1f} s")
    rt.barrier()
    return Tokenizer.load(path)


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmrec_model.train",
                                description="Train MM-Rec: pre-training, instruction tuning, chat fine-tuning.")
    p.add_argument("--stage", choices=STAGES + ("all",), default="all")
    p.add_argument("--preset", choices=("tiny", "small", "base"), default=None)
    p.add_argument("--config", default=None, help="YAML/JSON file of overrides (top-level keys, model:, stages:)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set stages.pretrain.seq_len=256 (repeatable)")
    p.add_argument("--data-dir", default=None, help="a directory with pretrain/, instruct/, chat/ files")
    p.add_argument("--train-data", nargs="+", default=None, help="training files of the selected --stage")
    p.add_argument("--valid-data", nargs="+", default=None, help="held-out files of the selected --stage")
    p.add_argument("--on-bad-record", choices=("skip", "error"), default=None,
                   help="malformed data records: report and skip (default), or refuse to train")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps of every selected stage")
    p.add_argument("--max-tokens", type=int, default=None, help="token budget of every selected stage")
    p.add_argument("--out", default=None, help="run directory (default runs/run-<time>)")
    p.add_argument("--init", default=None, help="start the first selected stage from this checkpoint directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the newest run in runs/) from its last checkpoint")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--backend", default=None, help="force an mmrec_ops backend: ref, cpu, cuda, triton")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--halt-at", default=None, help=argparse.SUPPRESS)  # tests: STAGE:STEP, stop as if interrupted
    return p


def resolve_config(args, out: Path) -> TrainConfig:
    values: Dict[str, Any] = {}
    saved = out / "config.json"
    if saved.is_file():           # continuing a run (--resume, or a later stage): its settings are the base
        values = json.loads(saved.read_text(encoding="utf-8"))
    if args.config:
        values = merge(values, load_config_file(args.config))
    flat = {"preset": args.preset, "data_dir": args.data_dir, "seed": args.seed, "device": args.device,
            "compile": args.compile, "backend": args.backend, "on_bad_record": args.on_bad_record,
            "threads": args.threads}
    values = merge(values, {k: v for k, v in flat.items() if v is not None})
    if args.no_progress:
        values["progress"] = False
    selected = STAGES if args.stage == "all" else (args.stage,)
    stage_over: Dict[str, Any] = {}
    if args.max_steps is not None:
        stage_over["max_steps"] = args.max_steps
    if args.max_tokens is not None:
        stage_over["max_tokens"] = args.max_tokens
    if stage_over:
        values = merge(values, {"stages": {s: stage_over for s in selected}})
    if args.train_data or args.valid_data:
        if args.stage == "all":
            raise ValueError("--train-data/--valid-data need a single --stage")
        files = {}
        if args.train_data:
            files["train"] = args.train_data
        if args.valid_data:
            files["valid"] = args.valid_data
        values = merge(values, {"stages": {args.stage: files}})
    if args.sets:
        values = merge(values, parse_set(args.sets))
    return config_from_dict(values)


def _default_out(resume: bool) -> Path:
    runs = Path("runs")
    if resume:
        found = sorted((p for p in runs.glob("*") if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SystemExit("error: --resume without --out, and no run in runs/")
        return found[-1]
    return runs / time.strftime("run-%Y%m%d-%H%M%S")


def main(argv: Optional[Sequence[str]] = None, *, model_class=None) -> int:
    """The CLI. model_class: see run_stage (bench/train_baseline.py trains the baselines through it)."""
    args = build_parser().parse_args(argv)
    out = Path(args.out) if args.out else _default_out(args.resume)
    try:
        tcfg = resolve_config(args, out)
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    selected = STAGES if args.stage == "all" else (args.stage,)
    started = [s for s in selected if (out / s).is_dir() and any((out / s).iterdir())]
    if started and not args.resume:
        print(f"error: {out} already holds {'/'.join(started)} training; pass --resume to continue it, "
              f"or another --out", file=sys.stderr)
        return 2
    if tcfg.backend:
        select_backend(tcfg.backend)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    rt = setup_runtime(tcfg.device)
    log = (lambda s: print(s, flush=True)) if rt.main else (lambda s: None)
    try:
        if rt.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps(tcfg.to_dict(), indent=2) + "\n")
        rt.barrier()
        init_dir = Path(args.init) if args.init else None
        if init_dir is not None:
            from .chat import resolve_checkpoint
            init_dir = resolve_checkpoint(init_dir)
        # every selected stage's data is read and checked before any training starts
        todo = [s for s in selected if not (args.resume and (out / s / "final" / "meta.json").is_file())]
        sources = {s: load_stage_sources(s, tcfg, log) for s in todo}
        tok = get_tokenizer(tcfg, rt, out, init_dir, log, sources.get("pretrain"))
        metrics = Metrics(out / "metrics.jsonl", rt.main)
        prev: Optional[Path] = init_dir
        if prev is None and selected[0] != "pretrain":
            before = STAGES[STAGES.index(selected[0]) - 1]
            if (out / before / "final" / "config.json").is_file():
                prev = out / before / "final"
        summaries = []
        t_start = time.perf_counter()
        for stage in selected:
            final = out / stage / "final"
            if args.resume and (final / "meta.json").is_file():
                log(f"{stage}: already complete ({final})")
                prev = final
                continue
            halt_at = None
            if args.halt_at:
                halt_stage, _, halt_step = args.halt_at.partition(":")
                halt_at = (halt_stage, int(halt_step))
            prev, summary = run_stage(stage, tcfg, rt, out, tok, prev, args.resume, metrics, halt_at,
                                      sources.get(stage), model_class)
            summaries.append(summary)
            if rt.main:
                plot_metrics(out / "metrics.jsonl", out / "loss.png")
        if rt.main:
            log(f"done in {time.perf_counter() - t_start:.0f} s; outputs in {out} (loss curve: {out / 'loss.png'})")
            if selected[-1] == "chat" and summaries and summaries[-1].get("samples"):
                s = summaries[-1]["samples"][0]
                log(f"\nSample chat reply\n  user: {s['prompt']}\n  assistant: {s['output']}\n"
                    f"Chat with it: python -m mmrec_model.chat --checkpoint {out}")
        return 0
    except Interrupted as e:
        if rt.main:
            plot_metrics(out / "metrics.jsonl", out / "loss.png")
            print(f"\n{e}\nresume with: python -m mmrec_model.train --resume --out {out}", file=sys.stderr)
        return 130
    except D.DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2
    finally:
        if rt.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
