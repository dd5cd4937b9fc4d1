"""Train a study's models in a pool of local worker processes, one model per worker at a time.

A small model cannot keep many cores busy with its own threads; the pool runs one single-threaded
model per core instead. That should pay where cores are many and models small; on this project's
2-core machine the result was mixed: ``python benchmarks/executors.py`` (4 models of one epoch
each, spawning and data transfer included) gave 0.71× the throughput of the sequential executor for
cnn_small, 0.90× for lenet_bn, 0.27× for mlp and 0.86× for cnn (an earlier run: 0.62×, 0.76×, 0.25×,
0.99×); on one H100 (``--device cuda``) 4 workers sharing the GPU gave 0.38× for ResNet-20, since
without MPS the processes time-slice it. The default quickstart's 42 models
(3–8 epochs each) trained in 494 s against 548 s in an earlier sequential run — a gap within the
machine's drift between runs. The sequential executor therefore stays the default.

The pool starts ``workers`` processes (spawned, so no thread pool is forked), hands each the study's
inputs once, and sends it specs: the worker rebuilds the model, trains it with ``threads`` threads
and writes it into the zoo with the zoo's atomic writes. The parent labels the surrogates' inputs
with the teacher once per split and label kind, then loads every entry from the zoo — so an
interrupted run resumes from whatever finished, exactly as with the sequential and Ray executors.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING

import numpy as np
import torch

from conferprint.allocator import tune_cpu_allocator
from conferprint.zoo import ModelSpec, Zoo

if TYPE_CHECKING:
    from conferprint.experiments.zoo_builder import Job, Trained, ZooBuilder

log = logging.getLogger(__name__)

_STATE: dict = {}  # a worker's resident inputs, set once by _init_worker


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_options(workers: int | None = None, threads: int = 1) -> None:
    """Refuse pool options that cannot work (called when the study starts, before any training)."""
    if (workers is not None and workers < 1) or threads < 1:
        raise ValueError(f"workers and threads must be ≥ 1, got {workers} and {threads}")


def _init_worker(inputs: dict[int, np.ndarray], x_test: np.ndarray, y_test: np.ndarray, threads: int) -> None:
    tune_cpu_allocator()  # as the conferprint command does for itself
    torch.set_num_threads(threads)
    _STATE.update(inputs={k: torch.from_numpy(v) for k, v in inputs.items()}, x_test=torch.from_numpy(x_test),
                  y_test=torch.from_numpy(y_test))


def _train_one(zoo_root: str, spec_json: dict, key: int, target: np.ndarray, device: str, amp: bool) -> dict:
    """The body of one pool task: train the model of ``spec_json`` into the zoo; its metadata."""
    from conferprint.experiments.zoo_builder import fit_model

    spec = ModelSpec.from_json(spec_json)
    x = _STATE["inputs"][key]
    _, meta, _ = Zoo(zoo_root).get_or_train(
        spec, lambda m: fit_model(m, spec, x, torch.from_numpy(target), _STATE["x_test"], _STATE["y_test"], device=device, amp=amp))
    return meta


def run_jobs_in_pool(builder: "ZooBuilder", jobs: list["Job"], *, workers: int | None = None,
                     threads: int = 1) -> list["Trained"]:
    """Train the jobs the zoo lacks in ``workers`` processes of ``threads`` threads, then load every job's model."""
    from conferprint.experiments.zoo_builder import collect_from_zoo

    check_options(workers, threads)
    workers = default_workers() if workers is None else workers
    found = {j.spec.name: builder.zoo.load(j.spec) for j in jobs}
    missing = [j for j in jobs if found[j.spec.name] is None]
    if missing:
        t0 = time.perf_counter()
        # a split's inputs are shared by many jobs: sent once per worker, as arrays through the pipe (torch's
        # own tensor passing would need a /dev/shm as large as the data, which containers often lack)
        inputs = {id(j.x): j.x.cpu().numpy() for j in missing}
        targets = [builder.targets(j) for j in missing]  # the thief queries the teacher once per input
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=ctx, initializer=_init_worker,
                                 initargs=(inputs, builder.data.x_test.cpu().numpy(), builder.data.y_test.cpu().numpy(), threads)) as pool:
            futures = [pool.submit(_train_one, str(builder.zoo.root), j.spec.to_json(), id(j.x), t.cpu().numpy(),
                                   str(builder.device), builder.amp) for j, t in zip(missing, targets)]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:  # a failure: stop handing out work (finished entries stay in the zoo)
                f.cancel()
            for f in done:
                f.result()  # re-raises the first failure here
        log.info("pool: trained %d models in %.1f s with %d workers", len(missing), time.perf_counter() - t0, workers)
    return collect_from_zoo(builder, jobs, found, {j.spec.name for j in missing})
