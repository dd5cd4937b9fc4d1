"""What the speed benchmarks share: their result file, with the command, machine and versions."""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from dataclasses import replace

import numpy as np
import torch

from conferprint._io import atomic_write_text
from conferprint.allocator import tune_cpu_allocator, tuned as allocator_tuned
from conferprint.experiments.quickstart import DEFAULT, versions

ROOT = Path(__file__).resolve().parents[1]
# The papers' candidate pool (inputs the source classifies correctly) at 50 Adam steps: the CEM the separation
# benchmarks measured, the default's step count until stop 21 (25 since; docs/results/separation-summary.md §14).
PAPERS_POOL_CEM = replace(DEFAULT.cem, candidates="correct", steps=50, errors_share=0.5, correct_candidates=None)  # the mixed variants: 50 + 50


def separated(roc_auc: float | None, margin: float | None) -> bool:
    """Issue 3's separation criterion: ROC AUC ≥ 0.95 and the lowest surrogate score above the highest reference."""
    return bool(roc_auc is not None and roc_auc >= 0.95 and margin is not None and margin > 0)


def study_seed(name: str) -> tuple[int, bool]:
    """A finished default study's name, ``seed<N>`` (fp32) or ``seed<N>-bf16`` (its bf16 draw), as ``(N, bf16)``."""
    base, bf16 = name.removesuffix("-bf16"), name.endswith("-bf16")
    if not base.startswith("seed") or not base.removeprefix("seed").isdigit():
        raise ValueError(f"study {name!r} is not seed<N> or seed<N>-bf16")
    return int(base.removeprefix("seed")), bf16


def study_key(name: str) -> tuple[bool, int]:
    """The order of studies in the reports: the fp32 ones first, by seed, then the bf16 draws."""
    seed, bf16 = study_seed(name)
    return bf16, seed


def save_arrays(path: Path, arrays: dict) -> None:
    """``arrays`` as one compressed ``.npz``, written beside ``path`` first so an interrupted run leaves no
    half-written cache."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """An ``.npz`` written by :func:`save_arrays` (arrays only: never unpickled)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def run_studies(argv: list[str] | None, *, script: str, stem: str, description: str, run_study, write_md,
                extra=None) -> int:
    """The separation benchmarks' command line: ``--studies`` (finished default studies, checked) and
    ``--data-dir``; each study's ``run_study(name, data_dir)`` row is put into ``benchmarks/results/<stem>.json``
    (earlier rows and commands kept), ``extra(payload)`` is applied, and ``write_md`` renders
    ``docs/results/<stem>.md`` after every study, so an interrupted run keeps what it finished."""
    from ensemble_families import open_log, put_run  # it imports this module

    tune_cpu_allocator()  # as the conferprint command does
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--studies", nargs="+", default=["seed0", "seed1", "seed2"])
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    for name in args.studies:
        try:
            study_seed(name)
        except ValueError as e:
            p.error(str(e))
    out = ROOT / "benchmarks" / "results" / f"{stem}.json"
    payload = open_log(out, f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv))
    for name in args.studies:
        put_run(payload, run_study(name, args.data_dir), key=lambda r: study_key(r["study"]))
        if extra is not None:
            extra(payload)
        atomic_write_text(out, json.dumps(payload, indent=2))
        write_md(payload, ROOT / "docs" / "results" / f"{stem}.md")
    return 0


def run_draws(argv: list[str] | None, *, script: str, stem: str, description: str, work_name: str, run_draw, write_md,
              options=None, check=None, group=None, extra=None) -> int:
    """The command line of the benchmarks built on `separation.py`'s draws: ``--seeds``, ``--data-dir``, ``--out``
    (work folder, default ``benchmarks/runs/<work_name>``), ``--progress``, ``--smoke`` (the tiny preset, results
    under the work folder only), and what ``options(parser)`` adds. ``check(args)`` may refuse the arguments with a
    ValueError, before any folder is made. Each draw's ``run_draw(seed, args, work)`` row is put into
    ``benchmarks/results/<stem>.json`` (earlier rows and commands kept; rows sorted by ``group(row)``, then by the
    order their draws were first run in, so a rerun of a few keeps the report's order), ``extra(payload)`` is
    applied, and ``write_md`` renders ``docs/results/<stem>.md`` after every draw."""
    from ensemble_families import open_log, put_run  # it imports this module

    tune_cpu_allocator()  # as the conferprint command does
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    if options is not None:
        options(p)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help=f"work folder; default benchmarks/runs/{work_name}")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--smoke", action="store_true", help="the tiny preset, results under the work folder only")
    args = p.parse_args(argv)
    if check is not None:
        try:
            check(args)
        except ValueError as e:
            p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.out or ROOT / "benchmarks" / "runs" / work_name)
    work.mkdir(parents=True, exist_ok=True)
    res_path, md_path = ROOT / "benchmarks" / "results" / f"{stem}.json", ROOT / "docs" / "results" / f"{stem}.md"
    if args.smoke:
        res_path, md_path = work / "smoke.json", work / "smoke.md"
    payload = open_log(res_path, f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv))
    order = list(dict.fromkeys(r["seed"] for r in payload["runs"]))
    order += [s for s in args.seeds if s not in order]
    for seed in args.seeds:
        put_run(payload, run_draw(seed, args, work),
                key=lambda r: (*(group(r) if group is not None else ()), order.index(r["seed"])))
        if extra is not None:
            extra(payload)
        atomic_write_text(res_path, json.dumps(payload, indent=2))
        write_md(payload, md_path)
    return 0


def d_prime(surrogates, references) -> tuple[float, float]:
    """The separation benchmarks' steadier statistic than the margin: the gap (mean surrogate minus mean
    reference score) and d′, the gap over the pooled within-group standard deviation."""
    gap = float(np.mean(surrogates) - np.mean(references))
    return gap, gap / float(np.sqrt((np.var(surrogates, ddof=1) + np.var(references, ddof=1)) / 2))


def write_speed_result(script: str, argv: list[str] | None, stem: str, payload: dict) -> Path:
    """``benchmarks/results/<stem>.json``: ``payload`` after the command that made it, then machine and versions."""
    out = ROOT / "benchmarks" / "results" / f"{stem}.json"
    full = {"command": f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv), **payload,
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "heap_tuned": allocator_tuned()},
            "versions": versions()}
    atomic_write_text(out, json.dumps(full, indent=2))
    return out


def synchronize(dev: torch.device) -> None:
    """Wait for a GPU's queued work, so a timer read next covers it (a no-op on CPU)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def speed_parser(*, n: int, epochs: int, repeats: int, archs: list[str]) -> argparse.ArgumentParser:
    """The options every training-speed benchmark takes: images, epochs, repeats, architectures."""
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--archs", nargs="+", default=archs)
    return p


def input_channels(arch: str) -> int:
    """3 for the 32×32 (CIFAR-10) architectures, 1 for the others."""
    from conferprint.models import arch_info

    return 3 if arch_info(arch).input_size == 32 else 1


def random_images(arch: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random inputs of ``arch``'s shape and random labels (a training step's cost ignores the pixels)."""
    from conferprint.models import arch_info

    size = arch_info(arch).input_size
    return (torch.rand(n, input_channels(arch), size, size, generator=generator),
            torch.randint(0, 10, (n,), generator=generator))


def benchmark_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A fresh 10-class model of ``arch`` for ``random_images``' inputs, seeded."""
    from conferprint.models import build_model

    return build_model(arch, in_channels=input_channels(arch), num_classes=10, seed=seed)


def input_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """One CEM member's cost, ``steps`` times: eval mode, the weights frozen as CEM freezes them, the forward pass
    and the backward pass to the input (in the model's layout). Returns the last gradient."""
    from conferprint.training import uses_channels_last

    model.eval()
    for q in model.parameters():
        q.requires_grad_(False)
    grad = None
    for _ in range(steps):
        xi = x.detach().clone()
        if uses_channels_last(model):
            xi = xi.contiguous(memory_format=torch.channels_last)
        xi.requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xi), y).backward()
        grad = xi.grad
    return grad


def time_interleaved(variants: list, kinds: dict[str, Callable[[Any], Any]], repeats: int,
                     after_repeat: Callable[[dict], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Seconds of ``kinds[kind](variant)`` for every kind and variant, ``repeats`` times, the variants' order rotated
    each repeat so that drifts of the machine's speed hit them alike: ``seconds[kind][variant]``, one per repeat.
    ``after_repeat(outputs)`` sees each repeat's results, ``outputs[kind][variant]``."""
    secs: dict[str, dict[str, list[float]]] = {k: {v: [] for v in variants} for k in kinds}
    for r in range(repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        outputs: dict[str, dict[str, Any]] = {k: {} for k in kinds}
        for kind, fn in kinds.items():
            for v in order:
                t = time.perf_counter()
                outputs[kind][v] = fn(v)
                secs[kind][v].append(time.perf_counter() - t)
        if after_repeat is not None:
            after_repeat(outputs)
    return secs


def paired_speedup(secs: dict[str, list[float]], old: str, new: str) -> float:
    """``new``'s speed-up over ``old``: the median of the repeats' paired ratios (timed in the same repeat)."""
    return statistics.median(a / b for a, b in zip(secs[old], secs[new]))
