"""CEM's optimisation step against the bare cost of its ensemble, in the same run.

    python benchmarks/cem_step.py [--steps 10] [--repeats 3] [--batch 256]
    python benchmarks/cem_step.py --device cuda --preset cifar10 --batch 256
    python benchmarks/cem_step.py --bf16

The ensemble is a quickstart preset's (``--preset``, default `default`: the source and its 26 training
models — cnn_small, lenet_bn, mlp — on 28×28 inputs; `cifar10`: ResNet-20 and its 24 training models
of ResNet-20, VGG-16-BN and a small DenseNet on 32×32). Weights are freshly initialised: the cost
does not depend on them. On CUDA (``--device cuda``) every timing ends with a synchronisation.
- **CEM**: `CEM.attack` (member dropout 0.5, soft conferrability loss, Adam on the perturbation,
  projection) for `--steps` steps on one batch; model-images/s counts every member call it made.
- **bare**: the same models, each called on the same batch and summed, one backward to the input, no
  dropout, no loss, no optimiser — the models' own forward and backward cost. Both sides call the members with
  their BatchNorms folded (``Member``; since stop 38), as CEM does.
- **vmap**: the group of the source's architecture through `torch.func.vmap` over stacked weights
  (one batched call), against a plain loop over that group.
- ``--bf16``: ``CEM(bf16=True)`` (bf16 autocast in the optimisation) against the bare models under the same
  autocast, and the fp32 CEM timed in the same run for the speed-up (no vmap row).
Goal (issue 7): CEM / bare ≥ 0.9. Writes benchmarks/results/cem-step.json (the CPU `default` run) or
cem-step-<preset>-<device>.json; ``-bf16`` appended with ``--bf16``.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from _common import synchronize

from conferprint._io import atomic_write_text
from conferprint.device import resolve_device
from conferprint.experiments.quickstart import PRESETS, versions
from conferprint.fingerprint.ensemble import folded, freeze
from conferprint.models import arch_info, build_model
from conferprint.training import uses_channels_last

ROOT = Path(__file__).resolve().parents[1]


class Counted(nn.Module):
    """Counts the images a model is called on (for CEM's dropout-varying member count)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.model(x)


def ensemble(preset: str, c: int, dev: torch.device) -> tuple[list[str], nn.Module, list[nn.Module], list[nn.Module]]:
    """The preset's source and training models (fresh weights, ``c`` input channels) on ``dev``; first
    their architectures."""
    cfg = PRESETS[preset]

    def make(arch, i):
        return build_model(arch, in_channels=c, num_classes=10, mean=(0.5,) * c, std=(0.25,) * c, seed=i).eval().to(dev)

    archs = [cfg.source_arch] + [g.arch for role in ("surrogate", "reference") for g in cfg.training if g.role == role
                                 for _ in range(g.count)]
    models = [make(a, i) for i, a in enumerate(archs)]
    n_surr = sum(g.count for g in cfg.training if g.role == "surrogate")
    return archs, models[0], models[1: 1 + n_surr], models[1 + n_surr:]


def bare(models: list[nn.Module], x: torch.Tensor, steps: int, bf16: bool = False) -> float:
    """Seconds for `steps` forward+backward passes (to the input) through every model (under bf16 autocast
    with ``bf16``, as CEM then runs them)."""
    members = freeze(models)
    synchronize(x.device)
    t = time.perf_counter()
    for _ in range(steps):
        xi = x.clone().requires_grad_(True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = sum(m.logits(xi).float().sum() for m in members)
        torch.autograd.grad(out, xi)
    synchronize(x.device)
    return time.perf_counter() - t


def time_cem(cem, source, surr, refs, x, y, steps: int) -> tuple[float, int]:
    # folded first, as CEM.generate folds its members once per run: the wrapper itself is not folded
    counted = [Counted(m) for m in folded([source, *surr, *refs])]
    cem = replace(cem, steps=steps)
    synchronize(x.device)
    t = time.perf_counter()
    cem.attack(counted[0], counted[1: 1 + len(surr)], counted[1 + len(surr):], x, y, torch.Generator().manual_seed(0))
    synchronize(x.device)
    seconds = time.perf_counter() - t
    return seconds, sum(c.images for c in counted)


def vmap_group(models: list[nn.Module], x: torch.Tensor, steps: int) -> dict[str, float]:
    from torch.func import functional_call, stack_module_state, vmap

    if any(uses_channels_last(m) for m in models):  # vmap cannot query channels_last layouts (BatchNorm on CUDA)
        models = [copy.deepcopy(m).to(memory_format=torch.contiguous_format) for m in models]
    params, buffers = stack_module_state(models)
    base = models[0]
    for p in params.values():
        p.requires_grad_(False)

    def call(p, b, xi):
        return functional_call(base, (p, b), (xi,))

    layout = (lambda t: t.contiguous(memory_format=torch.channels_last)) if uses_channels_last(base) else (lambda t: t)
    synchronize(x.device)
    t = time.perf_counter()
    for _ in range(steps):
        xi = x.clone().requires_grad_(True)
        out = vmap(call, in_dims=(0, 0, None))(params, buffers, layout(xi)).sum()
        torch.autograd.grad(out, xi)
    synchronize(x.device)
    v = time.perf_counter() - t
    loop = bare(models, x, steps)
    n = len(models) * len(x) * steps
    return {"models": len(models), "vmap_model_images_per_s": n / v, "loop_model_images_per_s": n / loop,
            "vmap_over_loop": loop / v}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--preset", choices=["default", "cifar10", "cifar10-cpu"], default="default")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true",
                   help="CEM.bf16 (bf16 autocast in the optimisation) against the bare models under the same autocast; "
                        "the fp32 CEM is timed in the same run for the speed-up")
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    cfg = PRESETS[args.preset]
    torch.manual_seed(0)  # a script, not the library: the benchmark's own inputs
    c, size = (3, 32) if arch_info(cfg.source_arch).input_size == 32 else (1, 28)
    archs, source, surr, refs = ensemble(args.preset, c, dev)
    x = torch.rand(args.batch, c, size, size).to(dev)
    y = torch.randint(0, 10, (args.batch,)).to(dev)
    cem = replace(cfg.cem, bf16=args.bf16)
    time_cem(cem, source, surr, refs, x, y, 2)  # warm-up
    bare([source, *surr, *refs], x, 2, args.bf16)
    runs = []
    for _ in range(args.repeats):  # alternate, so drifts of machine speed hit both alike
        sec, images = time_cem(cem, source, surr, refs, x, y, args.steps)
        b = bare([source, *surr, *refs], x, args.steps, args.bf16)
        n_bare = (1 + len(surr) + len(refs)) * args.batch * args.steps
        run = {"cem_seconds": sec, "cem_model_images": images, "cem_model_images_per_s": images / sec,
               "bare_seconds": b, "bare_model_images": n_bare, "bare_model_images_per_s": n_bare / b,
               "ratio": (images / sec) / (n_bare / b)}
        if args.bf16:  # the same CEM in fp32, same run: the speed-up bf16 buys
            sec32, images32 = time_cem(cfg.cem, source, surr, refs, x, y, args.steps)
            run.update(fp32_cem_seconds=sec32, fp32_cem_model_images_per_s=images32 / sec32,
                       bf16_speedup=(images / sec) / (images32 / sec32))
        runs.append(run)
    group = [m for a, m in zip(archs, [source, *surr, *refs]) if a == cfg.source_arch]
    median = lambda k: sorted(r[k] for r in runs)[len(runs) // 2]  # noqa: E731
    payload = {
        "command": "python benchmarks/cem_step.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "ensemble": {"preset": args.preset, "source": cfg.source_arch, "surrogates": len(surr), "references": len(refs),
                     "batch": args.batch, "steps": args.steps, "dropout": cfg.cem.dropout, "bf16": args.bf16},
        "runs": runs,
        "ratio_median": median("ratio"),
        "goal": "CEM model-images/s ≥ 0.9 × bare",
        **({"bf16_speedup_median": median("bf16_speedup")} if args.bf16 else
           {"vmap_same_architecture": {"arch": cfg.source_arch, **vmap_group(group, x, args.steps)}}),
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads()},
        "versions": versions(),
    }
    stem = ("cem-step" if (args.preset, dev.type) == ("default", "cpu") else f"cem-step-{args.preset}-{dev.type}") \
        + ("-bf16" if args.bf16 else "")
    out = ROOT / "benchmarks" / "results" / f"{stem}.json"
    atomic_write_text(out, json.dumps(payload, indent=2))
    print(json.dumps({k: payload[k] for k in ("ratio_median", "vmap_same_architecture", "bf16_speedup_median")
                      if k in payload}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
