"""One training stage: model from a checkpoint or fresh, AdamW, the step loop with gradient accumulation,
TBPTT lanes and DDP, periodic evaluation and resumable checkpoints, and the stage's final model."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .. import data as D
from ..data import STAGES
from ..checkpoint import (CheckpointError, load_trainer_state, resume_candidates, rng_state, save_checkpoint,
                          set_rng_state)
from ..data.stage import StageData, load_stage_sources
from ..state import pack_state, unpack_state
from ..tokenizer import Tokenizer
from .config import TrainConfig
from .evaluation import evaluate, stage_samples
from .report import Metrics, Progress, report_stage
from .runtime import Interrupted, Runtime, StopFlag, amp_context, seed_everything
from .optimizer import adamw, own_gradients
from .schedule import lr_at, stage_steps


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
              resume: bool, metrics: Metrics, model_class, sources: Optional[tuple] = None,
              stop: Optional[Callable[[str, int], bool]] = None):
    """Trains one stage; returns (final model directory, summary dict).

    model_class: the LM class, e.g. MMRecLM, or a baseline of bench/baselines.py: classmethods
    from_preset(preset, **overrides) and from_pretrained(dir), save_pretrained(dir), forward(ids, state) ->
    (logits, state), and optionally param_groups(weight_decay) and length_multiple (rows are padded to a multiple
    of it, and seq_len must reach it). stop(stage, step), checked after every step, ends the stage as SIGINT
    does: a checkpoint, then Interrupted."""
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

    resume_dir, state = None, None
    candidates = resume_candidates(stage_dir) if resume else []
    for candidate in candidates:
        try:
            model = model_class.from_pretrained(candidate)
            state = load_trainer_state(candidate)
            resume_dir = candidate
            break
        except Exception as e:      # a damaged checkpoint of any kind: safetensors, torch.load, config
            log(f"warning: {stage}: checkpoint {candidate} is damaged ({str(e).splitlines()[0]}); "
                f"trying the previous one")
    if candidates and resume_dir is None:
        raise CheckpointError(f"{stage}: no intact checkpoint in {stage_dir} (tried {len(candidates)})")
    if resume_dir is not None:
        log(f"{stage}: resuming from {resume_dir}")
    elif init_dir is not None:
        model = model_class.from_pretrained(init_dir)
        log(f"{stage}: starting from {init_dir}")
    else:
        model = model_class.from_preset(tcfg.preset, **dict(tcfg.model, vocab_size=tok.vocab_size))
        if stage != "pretrain":
            log(f"{stage}: no previous stage's checkpoint; starting from random weights")
    if model.config.vocab_size != tok.vocab_size:
        raise ValueError(f"{stage}: the model's vocab_size {model.config.vocab_size} differs from the "
                         f"tokenizer's {tok.vocab_size}")
    length_multiple = getattr(model, "length_multiple", 1)
    if cfg.seq_len < length_multiple:
        raise ValueError(f"{stage}: seq_len={cfg.seq_len} must be >= the model's length multiple {length_multiple} "
                         f"(chunk_len)")
    model.to(rt.device)
    model.train()

    if sources is None:
        sources = load_stage_sources(stage, cfg.train, cfg.valid, tcfg.data_dir, tcfg.on_bad_record, log)
    data = StageData(stage, cfg.model_copy(update={"tbptt": tbptt}), sources, tok, rt.rank, rt.world, micro, seed,
                     tcfg.cache_dir, length_multiple, log, tcfg.on_bad_record, tcfg.shard_tokens, rt.barrier)
    optimizer = adamw(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    step, tokens_seen, elapsed = 0, 0, 0.0
    lane_states: Dict[int, Any] = {}
    if resume_dir is not None:
        optimizer.load_state_dict(state["optimizer"])
        data.batches.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        step, tokens_seen, elapsed = state["step"], state["tokens"], state["elapsed"]
        packed = state.get("tbptt")
        if packed is not None and state.get("world") == rt.world and state.get("micro") == micro:
            lane_states = {k: unpack_state(v, rt.device) for k, v in packed[rt.rank].items()}
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
    compiled = tcfg.compile == "on" or (tcfg.compile == "auto" and rt.device.type == "cuda")
    eager_model = train_model
    graphs = compiled and tcfg.compile_mode == "reduce-overhead" and rt.device.type == "cuda" and not rt.distributed
    if compiled:
        train_model = torch.compile(train_model, mode="reduce-overhead" if graphs else None)
    amp = amp_context(tcfg, rt.device)
    params = [p for p in model.parameters() if p.requires_grad]

    n_params = model.num_parameters()
    if resume_dir is None:
        log(f"{stage}: {n_params / 1e6:.2f}M parameters, {data.train_tokens:,} training tokens, {max_steps} steps "
            f"x {cfg.batch_size} rows x {cfg.seq_len} tokens (micro-batch {micro}, accumulation {accum}, "
            f"world {rt.world}){', TBPTT' if tbptt else ''}")

    def checkpoint() -> None:
        packed_lanes = {k: pack_state(v) for k, v in lane_states.items()} if tbptt else None
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

    def forward_backward(net, micro_batches, n_targets: float):
        """Gradients of one step's micro-batches -> (summed loss [float64 scalar], tokens, new TBPTT lane states)."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)   # one host sync per step
        step_tokens, new_lanes = 0, {}
        in_graphs = graphs and net is not eager_model
        for i, mb in enumerate(micro_batches):
            x, y = mb.x.to(rt.device), mb.y.to(rt.device)
            carried = lane_states.get(mb.lane) if tbptt and not mb.reset else None
            # a compiled step takes the carried position as an int input, and CUDA graphs record a graph per value
            # of each int input: hand it the position within its chunk (all the model reads), add the rest after
            base = 0
            if carried is not None and net is not eager_model:
                inner = carried.position % length_multiple
                base = carried.position - inner
                carried = carried.at_position(inner)
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (last or not rt.distributed) else net.no_sync()
            with sync:
                if in_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with amp():
                    logits, new_state = net(x, carried)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=D.IGNORE,
                                       reduction="sum")
                (loss * (rt.world / max(n_targets, 1.0))).backward()
            if in_graphs and i == 0 and not last:
                own_gradients(params)
            if tbptt:
                kept = new_state.copy() if graphs else new_state.detach()
                new_lanes[mb.lane] = kept.at_position(kept.position + base)
            loss_sum += loss.detach().double()
            step_tokens += x.numel()
        return loss_sum, step_tokens, new_lanes

    progress = Progress(rt.main and tcfg.progress, max_steps, step, stage)
    if cfg.eval_every and step == 0:
        for name, r in run_eval().items():
            progress.write(f"{stage} step 0: held-out {name} loss {r['loss']:.4f} ppl {r['ppl']:.1f}")
    with StopFlag() as signals:
        while step < max_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg, max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = data.batches.next()
            n_targets = rt.all_sum(float(sum(int((mb.y != D.IGNORE).sum()) for mb in micro_batches)))
            try:
                loss_sum, step_tokens, new_lanes = forward_backward(train_model, micro_batches, n_targets)
            except Exception as e:
                if not compiled or train_model is eager_model:
                    raise
                log(f"warning: {stage}: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    f"training eagerly (--compile off skips compilation)")
                optimizer.zero_grad(set_to_none=True)
                train_model = eager_model
                loss_sum, step_tokens, new_lanes = forward_backward(train_model, micro_batches, n_targets)
            lane_states.update(new_lanes)
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
            halt = stop is not None and stop(stage, step)
            if (cfg.save_every and step % cfg.save_every == 0) or step == max_steps:
                checkpoint()
            if rt.all_max(int(signals.requested or halt)):
                if not ((cfg.save_every and step % cfg.save_every == 0) or step == max_steps):
                    checkpoint()
                progress.close()
                raise Interrupted(f"{stage}: stopped at step {step}; checkpoint saved in {stage_dir}")
        progress.close()
    results = run_eval()
    first, last = metrics.loss_summary(stage) if rt.main else (None, None)
    summary = {"stage": stage, "steps": step, "tokens": tokens_seen, "time_s": elapsed,
               "loss_first": first, "loss_last": last, "held_out": results}
    final = stage_dir / "final"
    if rt.main:
        samples = stage_samples(stage, model, tok, cfg.sample_tokens, tcfg.seed)
        summary["samples"] = samples
        save_final(stage_dir, model, tok, summary)
        report_stage(summary, out, log)
    rt.barrier()
    return final, summary
