"""A whole run: the run folder (its config.json and stage plan), the tokenizer, every selected stage's data
checked before any training, then the stages in order, each starting from the previous stage's output."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .. import data as D
from ..checkpoint import atomic_write_text
from ..data.prepare import cached_tokenizer
from ..data.stage import load_stage_sources
from ..tokenizer import Tokenizer
from .config import ConfigError, TrainConfig
from .report import Metrics, plot_metrics
from .runtime import Runtime, select_backend, setup_runtime
from .stage import run_stage


@dataclass
class RunPlan:
    """What to run: the stages in order, whether to continue the run in `out`, an optional starting checkpoint."""
    out: Path
    stages: Sequence[str]
    resume: bool = False
    init_dir: Optional[Path] = None


def get_tokenizer(tcfg: TrainConfig, rt: Runtime, out: Path, init_dir: Optional[Path], log,
                  pretrain_sources: Optional[tuple] = None) -> Tokenizer:
    """The run's tokenizer: runs/NAME/tokenizer.json once a stage of the run has trained with it, else the --init
    checkpoint's, else trained here. A tokenizer.json left by a run that trained nothing (it failed before its
    first checkpoint) is replaced, and said so."""
    path = out / "tokenizer.json"
    trained_with = any((out / s).is_dir() and any((out / s).iterdir()) for s in D.STAGES)
    if path.is_file() and not trained_with and rt.main:
        log(f"tokenizer: {path} was left by a run that trained nothing; replacing it")
        path.unlink()
    if path.is_file():
        log(f"tokenizer: using the run's {path}")
    if not path.is_file() and rt.main:
        if init_dir is not None and (init_dir / "tokenizer.json").is_file():
            shutil.copyfile(init_dir / "tokenizer.json", path)
        else:
            if pretrain_sources is None:
                cfg = tcfg.stages["pretrain"]
                pretrain_sources = load_stage_sources("pretrain", cfg.train, cfg.valid, tcfg.data_dir,
                                                      tcfg.on_bad_record, log)
            _, cached = cached_tokenizer(pretrain_sources[0], tcfg.vocab_size, tcfg.tokenizer_max_chars,
                                         tcfg.cache_dir, log)
            shutil.copyfile(cached, path)
    rt.barrier()
    tok = Tokenizer.load(path)
    if trained_with and init_dir is None and tok.vocab_size > tcfg.vocab_size:
        raise ConfigError(f"{path} has {tok.vocab_size} tokens but vocab_size={tcfg.vocab_size}")
    return tok


def run_training(tcfg: TrainConfig, plan: RunPlan, model_class, *, log: Optional[Callable[[str], None]] = None,
                 stop: Optional[Callable[[str, int], bool]] = None) -> List[Dict]:
    """Runs the plan's stages; returns their summaries. Raises training.runtime.Interrupted when a signal (or
    `stop`) ends a stage early, data.DataError on unusable data. model_class: see stage.run_stage."""
    if tcfg.backend:
        select_backend(tcfg.backend)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    rt = setup_runtime(tcfg.device)
    if log is None:
        log = (lambda s: print(s, flush=True)) if rt.main else (lambda s: None)
    out = plan.out
    try:
        if rt.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps(tcfg.to_dict(), indent=2) + "\n")
        rt.barrier()
        todo = [s for s in plan.stages if not (plan.resume and (out / s / "final" / "meta.json").is_file())]
        sources = {s: load_stage_sources(s, tcfg.stages[s].train, tcfg.stages[s].valid, tcfg.data_dir,
                                         tcfg.on_bad_record, log) for s in todo}
        tok = get_tokenizer(tcfg, rt, out, plan.init_dir, log, sources.get("pretrain"))
        metrics = Metrics(out / "metrics.jsonl", rt.main)
        prev: Optional[Path] = plan.init_dir
        if prev is None and plan.stages[0] != "pretrain":
            before = D.STAGES[D.STAGES.index(plan.stages[0]) - 1]
            if (out / before / "final" / "config.json").is_file():
                prev = out / before / "final"
        summaries = []
        t_start = time.perf_counter()
        for stage in plan.stages:
            final = out / stage / "final"
            if plan.resume and (final / "meta.json").is_file():
                log(f"{stage}: already complete ({final})")
                prev = final
                continue
            prev, summary = run_stage(stage, tcfg, rt, out, tok, prev, plan.resume, metrics, model_class,
                                      sources.get(stage), stop)
            summaries.append(summary)
            if rt.main:
                plot_metrics(out / "metrics.jsonl", out / "loss.png")
        if rt.main:
            log(f"done in {time.perf_counter() - t_start:.0f} s; outputs in {out} (loss curve: {out / 'loss.png'})")
        return summaries
    except BaseException:
        if rt.main and (out / "metrics.jsonl").is_file():
            plot_metrics(out / "metrics.jsonl", out / "loss.png")
        raise
    finally:
        if rt.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
