"""Pre-training data pipeline against corpus size: prepare throughput (MB/s of text), loader throughput
(tokens/s), time to the first training step and peak RSS of a pre-training run.

    PYTHONPATH=python python bench/bench_data.py --sizes-mb 100 1000 --out bench/results/data/cpu.json

For each size a corpus is generated in a temporary folder by shuffling the lines of the bundled pre-training
text with a seed and repeating them (files of at most 100 MB), prepared with `python -m mmrec_model.prepare`
into a fresh token cache, then trained on twice (`--stage pretrain --max-steps 2`, tiny preset, TBPTT default):
both find the BPE prepare trained and the shards in the cache. `bare_encode_batch_mb_per_s` is the
`tokenizers` batch encoder alone on 4 MB of the same text (the bound on prepare). Every step runs in a subprocess whose peak RSS is read from wait4. The folder is deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from mmrec_model.data import DATA_DIR  # noqa: E402

FILE_MB = 100


def generate(folder: Path, size_mb: int, seed: int) -> float:
    lines = []
    for name in ("tinyshakespeare_train.txt", "wikitext103_sample_train.txt"):
        lines += (DATA_DIR / "pretrain" / name).read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    pre = folder / "pretrain"
    pre.mkdir(parents=True)
    (pre / "bench_valid.txt").write_text("".join(lines[:2000]), encoding="utf-8")
    left, k = size_mb * 1_000_000, 0
    while left > 0:
        with open(pre / f"part{k:03d}_train.txt", "w", encoding="utf-8") as f:
            written = 0
            while written < min(left, FILE_MB * 1_000_000):
                rng.shuffle(lines)
                chunk = "".join(lines)
                f.write(chunk)
                written += len(chunk.encode("utf-8"))
        left -= written
        k += 1
    return sum(p.stat().st_size for p in pre.glob("*_train.txt")) / 1e6


def run(cmd, env, marker=None):
    """(wall seconds, seconds until a stdout line containing `marker`, peak RSS MB, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    first, out = None, []
    for line in proc.stdout:
        out.append(line)
        if marker and first is None and marker in line:
            first = time.perf_counter() - t0
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{''.join(out[-30:])}")
    return time.perf_counter() - t0, first, usage.ru_maxrss / 1024, "".join(out)


LOADER = r"""
import json, sys, time, torch
from mmrec_model.data.shards import TokenStream
from mmrec_model.data import TextBatches
s = TokenStream(sys.argv[1], verify=False)
out = {}
for tbptt in (False, True):
    b = TextBatches(s, seq_len=256, batch_size=16, micro_batch=16, seed=0, tbptt=tbptt)
    b.next()
    t = time.perf_counter(); n = 0
    while time.perf_counter() - t < 2.0:
        n += sum(mb.x.numel() for mb in b.next())
    out["tbptt" if tbptt else "random"] = n / (time.perf_counter() - t)
print(json.dumps(out))
"""

ENCODER = r"""
import json, sys, time
from mmrec_model.tokenizer import Tokenizer
from mmrec_model.data.sources import text_pieces
tok = Tokenizer.load(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    text = f.read(4_000_000)
pieces = list(text_pieces(text))
t = time.perf_counter()
tok.encode_batch(pieces)
print(json.dumps({"mb_per_s": round(len(text.encode()) / 1e6 / (time.perf_counter() - t), 2)}))
"""

STEP = r"""
import json, time, torch, torch.nn.functional as F
from mmrec_model import MMRecLM
torch.manual_seed(0)
m = MMRecLM.from_preset("small", vocab_size=2048)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
x = torch.randint(0, 2048, (16, 257))
times = []
for i in range(3):
    t = time.perf_counter()
    logits, _ = m(x[:, :-1], None)
    F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    opt.step(); opt.zero_grad()
    times.append(time.perf_counter() - t)
print(json.dumps({"small_step_s": min(times[1:])}))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "data" / "cpu.json"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="temporary folder (default: the system's)")
    p.add_argument("--step", action="store_true", help="also time one `small` training step (loader overhead)")
    args = p.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    py = sys.executable
    results = {"command": " ".join([Path(py).name] + sys.argv), "cores": os.cpu_count(),
               "load_before": os.getloadavg(), "sizes": []}
    for size in args.sizes_mb:
        work = Path(tempfile.mkdtemp(prefix="mmrec-bench-data-", dir=args.work))
        try:
            mb = generate(work / "data", size, args.seed)
            cache = work / "cache"
            env_c = dict(env, MMREC_CACHE=str(cache))
            wall, _, rss, log = run([py, "-m", "mmrec_model.prepare", "--data-dir", str(work / "data"),
                                     ], env_c)
            encode_s = float(re.search(r"prepared [\d,]+ tokens in \d+ shard\(s\) in ([\d.]+) s", log).group(1))
            r = {"text_mb": round(mb, 1), "prepare_s": round(wall, 1), "prepare_encode_s": encode_s,
                 "prepare_mb_per_s": round(mb / wall, 2), "prepare_encode_mb_per_s": round(mb / encode_s, 2),
                 "prepare_peak_rss_mb": round(rss), "load_during_prepare": os.getloadavg()}
            tok_path = re.search(r"cached in (\S+)\)", log).group(1)
            _, _, _, out = run([py, "-c", ENCODER, tok_path, str(work / "data" / "pretrain" / "part000_train.txt")], env)
            r["bare_encode_batch_mb_per_s"] = json.loads(out.strip().splitlines()[-1])["mb_per_s"]
            train_dir = json.loads(log.split("train: ", 1)[1].splitlines()[0])
            r["tokens"], r["shards"] = train_dir["tokens"], train_dir["shards"]
            r["shard_bytes"] = sum(f.stat().st_size for f in Path(train_dir["directory"]).glob("shard-*"))
            for k in (1, 2):
                cmd = [py, "-m", "mmrec_model.train", "--stage", "pretrain", "--max-steps", "2", "--data-dir",
                       str(work / "data"), "--out", str(work / f"run{k}"), "--no-progress",
                       "--set", "stages.pretrain.eval_every=0"]
                wall, first, rss, log = run(cmd, env_c, marker="pretrain step 1/")
                assert "prepared" not in log, "the training run tokenised again"
                r[f"run{k}"] = {"first_step_s": round(first, 1), "wall_s": round(wall, 1), "peak_rss_mb": round(rss)}
            _, _, _, out = run([py, "-c", LOADER, train_dir["directory"]], env)
            r["loader_tokens_per_s"] = {k: round(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}
            results["sizes"].append(r)
            print(json.dumps(r), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.step:
        _, _, _, out = run([py, "-c", STEP], env)
        step = json.loads(out.strip().splitlines()[-1])["small_step_s"]
        results["small_step_s"] = step
        loader = results["sizes"][-1]["loader_tokens_per_s"]["random"]
        results["loader_overhead_of_small_step"] = (16 * 256 / loader) / step
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
