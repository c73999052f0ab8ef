"""`python -m mmrec_model.train`: pre-training, instruction tuning and chat fine-tuning of MM-Rec.

With no arguments it runs all three stages on the bundled corpus (mmrec_model/corpus), each stage starting
from the previous stage's weights, evaluates held-out loss and perplexity after each stage, prints sample
generations, and ends with a sample chat reply. Outputs go to runs/NAME:

    config.json       the resolved training configuration
    plan.json         the stages this run trains (--resume follows it)
    tokenizer.json    the byte-level BPE (also copied into every checkpoint)
    metrics.jsonl     one JSON record per logged step and per held-out evaluation
    loss.png          train and held-out loss of every stage, stage boundaries marked
    samples.md        sample generations after each stage
    <stage>/ckpt-*    resumable checkpoints (weights, optimizer, RNG, data position), LATEST names the newest
    <stage>/final     the stage's output model (MMRecLM.from_pretrained / python -m mmrec_model.chat)

Distributed: `torchrun --nproc_per_node=N -m mmrec_model.train ...` (gloo on CPU, NCCL on GPU). The global
batch (`batch_size` rows per optimizer step) is split over ranks and micro-batches, and the loss is normalised
by the global number of target tokens, so N processes compute the same step as one.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from . import data as D
from .checkpoint import CheckpointError, atomic_write_text, resolve_checkpoint
from .model import MMRecLM
from .training.config import ConfigError, TrainConfig, config_from_dict, load_config_file, merge, parse_set
from .training.run import RunPlan, run_training
from .training.runtime import Interrupted

PLAN_NAME = "plan.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmrec_model.train", allow_abbrev=False,
                                description="Train MM-Rec: pre-training, instruction tuning, chat fine-tuning.")
    p.add_argument("--stage", choices=D.STAGES + ("all",), default=None,
                   help="the stage(s) to train (default: all; with --resume, the run's own plan)")
    p.add_argument("--preset", choices=("tiny", "small", "base"), default=None)
    p.add_argument("--config", default=None, help="YAML/JSON file of overrides (top-level keys, model:, stages:)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set stages.pretrain.seq_len=256 (repeatable)")
    p.add_argument("--data-dir", default=None, help="a directory with pretrain/, instruct/, chat/ files")
    p.add_argument("--train-data", nargs="+", default=None, help="training files of the selected --stage")
    p.add_argument("--valid-data", nargs="+", default=None, help="held-out files of the selected --stage")
    p.add_argument("--on-bad-record", choices=("skip", "error"), default=None,
                   help="malformed data records: report and skip (default), or refuse to train")
    p.add_argument("--max-steps", default=None, help="optimizer steps of every selected stage (an int >= 1)")
    p.add_argument("--max-tokens", default=None, help="token budget of every selected stage (an int >= 1)")
    p.add_argument("--out", default=None, help="run directory (default runs/run-<time>)")
    p.add_argument("--init", default=None, help="start the first selected stage from this checkpoint directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the newest run in runs/) from its last checkpoint")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", default=None, help="an int >= 0")
    p.add_argument("--compile", choices=("auto", "on", "off"), default=None,
                   help="torch.compile the model: auto = on for CUDA training, off on CPU")
    p.add_argument("--compile-mode", choices=("default", "reduce-overhead"), default=None,
                   help="torch.compile's mode on CUDA (default reduce-overhead: CUDA graphs; DDP runs take default)")
    p.add_argument("--backend", default=None, help="force an mmrec_ops backend: ref, cpu, cuda, triton")
    p.add_argument("--threads", default=None, help="torch CPU threads per process (an int >= 1)")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    return p


def resolve_config(args, out: Path, stages: Sequence[str]) -> TrainConfig:
    """The run's settings: the run folder's config.json (when continuing), then --config, the flags and --set."""
    values: Dict[str, Any] = {}
    saved = out / "config.json"
    if saved.is_file():           # continuing a run (--resume, or a later stage): its settings are the base
        values = load_config_file(saved)
    if args.config:
        values = merge(values, load_config_file(args.config))
    flat = {"preset": args.preset, "data_dir": args.data_dir, "seed": args.seed, "device": args.device,
            "compile": args.compile, "compile_mode": args.compile_mode, "backend": args.backend, "on_bad_record": args.on_bad_record,
            "threads": args.threads}
    values = merge(values, {k: v for k, v in flat.items() if v is not None})
    if args.no_progress:
        values["progress"] = False
    stage_over: Dict[str, Any] = {}
    if args.max_steps is not None:
        stage_over["max_steps"] = args.max_steps
    if args.max_tokens is not None:
        stage_over["max_tokens"] = args.max_tokens
    if stage_over:
        values = merge(values, {"stages": {s: stage_over for s in stages}})
    if args.train_data or args.valid_data:
        if len(stages) != 1:
            raise ConfigError("--train-data/--valid-data need a single --stage")
        files = {}
        if args.train_data:
            files["train"] = args.train_data
        if args.valid_data:
            files["valid"] = args.valid_data
        values = merge(values, {"stages": {stages[0]: files}})
    if args.sets:
        values = merge(values, parse_set(args.sets))
    return config_from_dict(values)


def _default_out(resume: bool) -> Path:
    runs = Path("runs")
    if resume:
        found = sorted((p for p in runs.glob("*") if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError("--resume without --out, and no run in runs/")
        return found[-1]
    return runs / time.strftime("run-%Y%m%d-%H%M%S")


def _plan_stages(args, out: Path) -> Sequence[str]:
    """The stages to train: --stage, else (resuming) the run's saved plan, else all three."""
    saved = out / PLAN_NAME
    if args.stage is not None:
        return D.STAGES if args.stage == "all" else (args.stage,)
    if args.resume and saved.is_file():
        try:
            stages = tuple(json.loads(saved.read_text(encoding="utf-8"))["stages"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise ConfigError(f"{saved} is unreadable ({e}); pass --stage") from None
        if not stages or any(s not in D.STAGES for s in stages):
            raise ConfigError(f"{saved} names unknown stages {stages}; pass --stage")
        return stages
    return D.STAGES


def _resume_command(argv: Sequence[str], out: Path) -> str:
    """The command that continues this run: the same arguments with --resume and --out."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        if a.startswith("--out=") or a == "--resume":
            continue
        kept.append(a)
    return shlex.join(["python", "-m", "mmrec_model.train", *kept, "--resume", "--out", str(out)])


def main(argv: Optional[Sequence[str]] = None, *, model_class=MMRecLM,
         stop: Optional[Callable[[str, int], bool]] = None) -> int:
    """The CLI; exit code 0 done, 2 bad settings or data, 130 interrupted (a checkpoint was saved).

    model_class: the LM class to train (see training.stage.run_stage; bench/train_baseline.py passes the
    GPT/LSTM baselines); stop(stage, step): end the run after that step as SIGINT does."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        out = Path(args.out) if args.out else _default_out(args.resume)
        if args.resume and not (out / "config.json").is_file():
            raise ConfigError(f"--resume: {out} holds no run (no config.json); check --out")
        stages = _plan_stages(args, out)
        tcfg = resolve_config(args, out, stages)
        started = [s for s in stages if (out / s).is_dir() and any((out / s).iterdir())]
        if started and not args.resume:
            raise ConfigError(f"{out} already holds {'/'.join(started)} training; pass --resume to continue it, "
                              f"or another --out")
        init_dir = resolve_checkpoint(args.init) if args.init else None
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.resume or not (out / PLAN_NAME).is_file():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / PLAN_NAME, json.dumps({"stages": list(stages)}) + "\n")
    plan = RunPlan(out, stages, args.resume, init_dir)
    try:
        summaries = run_training(tcfg, plan, model_class, stop=stop)
    except Interrupted as e:
        print(f"\n{e}\nresume with: {_resume_command(argv, out)}", file=sys.stderr)
        return 130
    except (D.DataError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if stages[-1] == "chat" and summaries and summaries[-1].get("samples"):
        s = summaries[-1]["samples"][0]
        print(f"\nSample chat reply\n  user: {s['prompt']}\n  assistant: {s['output']}\n"
              f"Chat with it: python -m mmrec_model.chat --checkpoint {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
