"""Folding the frozen members' BatchNorms into their convolutions (``conferprint.models.common.fold_batchnorm``,
which ``fingerprint.ensemble.Member`` applies since stop 38): speed and agreement, in the same run.

    python benchmarks/fold_batchnorm.py [--repeats 7] [--archs cnn_small lenet_bn cnn] [--steps 10]

- **members**: per architecture, CEM's cost of one member (``_common.input_gradients``: eval mode, frozen weights,
  forward and backward to the input of 256 images, 20 times) for the model and for its folded copy, interleaved;
  the paired speed-up, and how far the folded copy's logits and input gradients are from the model's (rounding:
  the products are formed in another order). BatchNorm statistics come from a few training-mode passes first
  (fresh ones are the identity map).
- **cem**: ``CEM.attack`` of the default preset on its whole ensemble (the source and its 26 training models;
  ``cem_step.ensemble``), batch 256, ``--steps`` steps, with the members folded (as ``CEM.generate`` does, once,
  outside the timing) against unfolded (``Member``'s folding switched off in this process), interleaved; and how
  far the two optimised batches end apart.
Writes benchmarks/results/fold-batchnorm.json.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import replace

import torch

import conferprint.fingerprint.ensemble as ensemble
from _common import benchmark_model, input_gradients, paired_speedup, random_images, speed_parser, time_interleaved, \
    write_speed_result
from cem_step import ensemble as preset_ensemble
from conferprint.allocator import tune_cpu_allocator
from conferprint.experiments.quickstart import DEFAULT
from conferprint.models.common import fold_batchnorm


def with_statistics(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """``model`` after three training-mode passes over ``x`` (running statistics of real activations), in eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


@contextlib.contextmanager
def unfolded():
    """``Member`` calls the models themselves while inside (the behaviour before stop 38)."""
    real = ensemble.fold_batchnorm
    ensemble.fold_batchnorm = lambda m: m
    try:
        yield
    finally:
        ensemble.fold_batchnorm = real


def members(archs: list[str], repeats: int, grad_steps: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for arch in archs:
        x, y = random_images(arch, 256, g)
        model = with_statistics(benchmark_model(arch), x)
        fold = fold_batchnorm(model)
        if fold is model:
            raise SystemExit(f"{arch} has no BatchNorm to fold")
        variants = {"model": model, "folded": fold}
        for v in variants.values():  # warm-up
            input_gradients(v, x, y, 2)
        secs = time_interleaved(list(variants), {"grad": lambda v: input_gradients(variants[v], x, y, grad_steps)},
                                repeats)["grad"]
        with torch.no_grad():
            logit_diff = float((model(x) - fold(x)).abs().max())
        ga, gb = input_gradients(model, x, y, 1), input_gradients(fold, x, y, 1)
        rows.append({"arch": arch, "seconds": secs,
                     "images_per_s": {v: 256 * grad_steps / statistics.median(s) for v, s in secs.items()},
                     "speedup": paired_speedup(secs, "model", "folded"),
                     "max_abs_logit_diff": logit_diff,
                     "max_grad_diff_relative": float((ga - gb).abs().max() / ga.abs().max())})
        print(f"{arch}: folded {rows[-1]['speedup']:.3f}x, logits within {logit_diff:.1e}", flush=True)
    return rows


def cem(repeats: int, steps: int) -> dict:
    torch.manual_seed(0)  # a script, not the library: the benchmark's own inputs
    _, source, surr, refs = preset_ensemble("default", 1, torch.device("cpu"))
    x = torch.rand(256, 1, 28, 28)
    y = torch.randint(0, 10, (256,))
    models = [with_statistics(m, x) for m in (source, *surr, *refs)]
    fold = ensemble.folded(models)
    kit = {"unfolded": models, "folded": fold}
    attack = replace(DEFAULT.cem.part("correct"), steps=steps)

    def run(v):
        ms = kit[v]
        with unfolded() if v == "unfolded" else contextlib.nullcontext():
            return attack.attack(ms[0], ms[1: 1 + len(surr)], ms[1 + len(surr):], x, y, torch.Generator().manual_seed(0))

    for v in kit:  # warm-up: the first call of each layout pays oneDNN's one-off set-up
        run(v)
    outs = {}
    secs = time_interleaved(list(kit), {"attack": run}, repeats, after_repeat=lambda o: outs.update(o["attack"]))["attack"]
    delta = (outs["folded"] - outs["unfolded"]).abs()
    row = {"members": len(models), "batch": 256, "steps": steps, "seconds": secs,
           "speedup": paired_speedup(secs, "unfolded", "folded"),
           "max_abs_input_diff": float(delta.max()), "share_of_pixels_apart_over_1e-3": float((delta > 1e-3).float().mean())}
    print(f"CEM step: folded {row['speedup']:.3f}x; optimised inputs at most {row['max_abs_input_diff']:.1e} apart", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    tune_cpu_allocator()  # as the conferprint command does
    p = speed_parser(n=256, epochs=1, repeats=7, archs=["cnn_small", "lenet_bn", "cnn"])
    p.add_argument("--grad-steps", type=int, default=20)
    p.add_argument("--steps", type=int, default=10, help="CEM steps per timed attack")
    args = p.parse_args(argv)
    t = time.perf_counter()
    payload = {"members": members(args.archs, args.repeats, args.grad_steps), "cem": cem(args.repeats, args.steps),
               "goal": "faster CEM passes with the same function up to rounding", "seconds": time.perf_counter() - t}
    print(write_speed_result("fold_batchnorm.py", argv, "fold-batchnorm", payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
