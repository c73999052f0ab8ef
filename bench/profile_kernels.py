"""Who launches a training step's kernels: the CUDA kernels whose name contains --match, summed by the CPU operator
that launched them, that operator's input shapes, its chain of parent operators and the innermost Python frames of
mmrec / the model (torch.profiler with stacks). Answers "which op makes these copies?" for one compiled or eager
step of `bench/compare_models.py throughput`'s models.

    python bench/profile_kernels.py --arch mmrec-linear --T 1024 --batch 16 --compile on --match copy \
        --out bench/results/device/run-X/launchers.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_common import command_line, machine  # noqa: E402
from compare_models import build_model  # noqa: E402

OWN_FRAMES = ("mmrec_ops", "mmrec_model", "triton_kernels")


def _own_frames(stack: List[str], keep: int) -> List[str]:
    """The innermost `keep` frames of the project's packages (the torch frames between them dropped)."""
    return [f for f in stack if any(k in f for k in OWN_FRAMES)][:keep]


def _parents(event, depth: int) -> List[str]:
    out, p = [], event.cpu_parent
    while p is not None and len(out) < depth:
        out.append(p.name)
        p = p.cpu_parent
    return out


def attribute(prof, match: str, frames: int) -> Dict[str, Any]:
    """Kernels matching `match` summed by (launching operator, its input shapes, parents, own frames)."""
    groups: Dict[tuple, Dict[str, Any]] = defaultdict(lambda: {"us": 0.0, "kernels": 0})
    total = matched = 0.0
    for e in prof.events():
        for k in getattr(e, "kernels", []) or []:
            us = k.duration
            total += us
            if match not in k.name:
                continue
            matched += us
            key = (e.name, str(e.input_shapes), tuple(_parents(e, 4)), tuple(_own_frames(e.stack or [], frames)))
            g = groups[key]
            g["us"] += us
            g["kernels"] += 1
    rows = [dict(op=k[0], shapes=k[1], parents=list(k[2]), frames=list(k[3]), **v) for k, v in groups.items()]
    rows.sort(key=lambda r: r["us"], reverse=True)
    return {"kernel_us_total": total, "matched_us": matched, "groups": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="mmrec-linear")
    ap.add_argument("--preset", default="base")
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--compile", choices=("on", "off"), default="on")
    ap.add_argument("--warmup", type=int, default=3, help="steps before the profiled one (compiling included)")
    ap.add_argument("--match", default="copy", help="substring of the kernel names to attribute")
    ap.add_argument("--frames", type=int, default=4, help="project frames kept per group")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device (the question is which CPU op launches which CUDA kernels)")
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(a.arch, a.preset).to(device).train()
    step_model = torch.compile(model) if a.compile == "on" else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    data = torch.randint(0, model.config.vocab_size, (a.batch, a.T + 1), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, _ = step_model(data[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), data[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True,
                 with_stack=True) as prof:
        step()
        torch.cuda.synchronize()
    out = attribute(prof, a.match, a.frames)
    print(f"{a.arch} T={a.T} B={a.batch} compile={a.compile}: kernels matching {a.match!r} "
          f"{out['matched_us'] / 1e3:.2f} of {out['kernel_us_total'] / 1e3:.2f} ms")
    print(f"{'ms':>7} {'n':>4}  op / shapes / parents / frames")
    for r in out["groups"][:a.top]:
        print(f"{r['us'] / 1e3:7.3f} {r['kernels']:4d}  {r['op']} {r['shapes']}")
        print(f"{'':13}parents: {' < '.join(r['parents'])}")
        for f in r["frames"]:
            print(f"{'':13}{f}")
    if a.out:
        payload = dict(kind="kernel_launchers", command=command_line(), machine=machine("cuda"),
                       settings=vars(a), **out)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
