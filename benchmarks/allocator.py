"""glibc's default heap settings against `conferprint.allocator.tune_cpu_allocator`, each in its own process.

    python benchmarks/allocator.py [--repeats 4] [--n 8192] [--epochs 1] [--archs cnn_small lenet_bn mlp cnn]
    python benchmarks/allocator.py --archs resnet20 cnn_small32 cnn32 --stem allocator-cifar ...

The settings are per process and cannot be undone, so every measurement is a fresh child process
(``--child default|tuned``), the two kinds alternating and their order rotated each repeat. A child does
what a quickstart process does with each architecture in turn, on random images of its input shape
(28×28 grey, or 32×32 colour for the CIFAR-10 architectures): it trains a seeded model with the zoo's loop (`train_model`), then predicts on the same images
(`predict_logits`) and runs CEM's input-gradient pass on a batch of candidates (`_common.input_gradients`),
timing each and counting the minor page faults (`getrusage`) it took. It first allocates and frees a
dataset-sized tensor, as loading the data does. Reports per architecture and kind the median images/s,
the paired speed-up (median of the repeats' ratios) and the page faults, and the children's peak
resident memory; fails unless every child trained the same weights, bit for bit (the settings must not
change the numbers). Writes benchmarks/results/allocator.json (``--stem``: another name).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import benchmark_model, random_images, speed_parser, write_speed_result

from conferprint.allocator import tune_cpu_allocator
from conferprint.training import TrainConfig, predict_logits, train_model

KINDS = ("default", "tuned")
STAGES = ("train", "predict", "gradients")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def child(kind: str, archs: list[str], n: int, epochs: int, grad_steps: int) -> dict:
    """One process's measurements (module docstring)."""
    from _common import input_gradients

    applied = tune_cpu_allocator(respect_env=False) if kind == "tuned" else False
    if kind == "tuned" and not applied:
        raise SystemExit("this C library took no settings (not glibc?): nothing to compare")
    data = torch.rand(60000, 1, 28, 28)  # the dataset's size, allocated and freed as loading it does
    del data
    rows = {}
    for arch in archs:
        x, y = random_images(arch, n, torch.Generator().manual_seed(1))
        model = benchmark_model(arch, seed=0)
        row = {}
        f, t = _faults(), time.perf_counter()
        train_model(model, x, y, TrainConfig(epochs=epochs, batch_size=256, lr=0.05), seed=0)
        row["train"] = {"seconds": time.perf_counter() - t, "images": n * epochs, "faults": _faults() - f}
        row["digest"] = weights_digest(model)
        f, t = _faults(), time.perf_counter()
        predict_logits(model, x)
        row["predict"] = {"seconds": time.perf_counter() - t, "images": n, "faults": _faults() - f}
        f, t = _faults(), time.perf_counter()
        input_gradients(model, x[:256], y[:256], grad_steps)
        row["gradients"] = {"seconds": time.perf_counter() - t, "images": 256 * grad_steps, "faults": _faults() - f}
        rows[arch] = row
    return {"kind": kind, "applied": applied, "rows": rows,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def summarize(runs: list[dict], archs: list[str]) -> tuple[dict[str, set[str]], dict]:
    """The children's runs (one default and one tuned per repeat, in that repeat's order) as the weights' digests
    seen per architecture and, per architecture and stage, the median images/s of each kind, the median of the
    repeats' paired speed-ups (tuned over default), and the page faults' median and range."""
    digests = {a: {run["rows"][a]["digest"] for run in runs} for a in archs}
    summary: dict = {}
    for a in archs:
        summary[a] = {}
        for stage in STAGES:
            speed = {k: [run["rows"][a][stage]["images"] / run["rows"][a][stage]["seconds"]
                         for run in runs if run["kind"] == k] for k in KINDS}
            faults = {k: [run["rows"][a][stage]["faults"] for run in runs if run["kind"] == k] for k in KINDS}
            summary[a][stage] = {
                "images_per_s_median": {k: statistics.median(v) for k, v in speed.items()},
                "speedup_paired_median": statistics.median(t / d for d, t in zip(speed["default"], speed["tuned"])),
                "faults_median": {k: statistics.median(v) for k, v in faults.items()},
                "faults_range": {k: [min(v), max(v)] for k, v in faults.items()},
            }
    return digests, summary


def main(argv: list[str] | None = None) -> int:
    p = speed_parser(n=8192, epochs=1, repeats=4, archs=["cnn_small", "lenet_bn", "mlp", "cnn"])
    p.add_argument("--grad-steps", type=int, default=20, help="CEM input-gradient passes over 256 candidates")
    p.add_argument("--stem", default="allocator", help="results file: benchmarks/results/<stem>.json")
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.archs, args.n, args.epochs, args.grad_steps)))
        return 0
    script = Path(__file__).resolve()
    runs: list[dict] = []
    for r in range(args.repeats):
        for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
            cmd = [sys.executable, str(script), "--child", kind, "--n", str(args.n), "--epochs", str(args.epochs),
                   "--grad-steps", str(args.grad_steps), "--archs", *args.archs]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=script.parent).stdout
            runs.append({"repeat": r, **json.loads(out.strip().splitlines()[-1])})
            print(f"repeat {r} {kind}: " + ", ".join(
                f"{a} {v['train']['images'] / v['train']['seconds']:.0f} img/s ({v['train']['faults']} faults)"
                for a, v in runs[-1]["rows"].items()), flush=True)
    digests, summary = summarize(runs, args.archs)
    same = all(len(d) == 1 for d in digests.values())
    rss = {k: [run["max_rss_mib"] for run in runs if run["kind"] == k] for k in KINDS}
    path = write_speed_result("allocator.py", argv, args.stem, {
        "n": args.n, "epochs": args.epochs, "grad_steps": args.grad_steps, "repeats": args.repeats,
        "same_weights": same, "summary": summary, "max_rss_mib": rss, "runs": runs,
    })
    for a, stages in summary.items():
        print(a, "  ".join(f"{s} x{v['speedup_paired_median']:.2f} (faults {v['faults_median']['default']:.0f} -> "
                           f"{v['faults_median']['tuned']:.0f})" for s, v in stages.items()))
    print(f"peak RSS MiB default {statistics.median(rss['default']):.0f}, tuned {statistics.median(rss['tuned']):.0f}")
    print(f"wrote {path}")
    if not same:
        print(f"FAILED: the kinds trained different weights: {digests}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
