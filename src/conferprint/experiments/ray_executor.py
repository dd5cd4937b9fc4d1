"""Train a study's models as Ray tasks (``pip install 'conferprint[ray]'``).

Training the zoo is embarrassingly parallel: every model that the zoo does not already hold becomes
one task with its own CPU (and GPU) request. A task rebuilds the model from its spec, labels its
inputs with the teacher (the source, read from the zoo by its spec) when it is a surrogate, trains,
and writes its entry into the zoo folder with the zoo's atomic writes — the folder must be on a
filesystem every Ray worker sees (on one machine any folder; on a cluster a shared path). The
driver then loads every entry from the zoo, so an interrupted study resumes from whatever finished.

Connects to ``address`` (``None``: a Ray instance already initialised in this process, else a new
local one; ``"auto"``: the running cluster).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch

from conferprint.allocator import tune_cpu_allocator
from conferprint.zoo import ModelSpec, Zoo

if TYPE_CHECKING:
    from conferprint.experiments.zoo_builder import Job, Trained, ZooBuilder

log = logging.getLogger(__name__)


def train_task(zoo_root: str, spec_json: dict, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
               y_test: torch.Tensor, teacher_spec_json: dict | None, threads: int, amp: bool = False) -> dict:
    """The body of one Ray task: train the model of ``spec_json`` into the zoo at ``zoo_root``; its metadata."""
    from conferprint.experiments.zoo_builder import fit_model
    from conferprint.training import teacher_labels

    tune_cpu_allocator()  # as the conferprint command does for itself (the worker's CONFERPRINT_TUNE_MALLOC)
    torch.set_num_threads(threads)  # a Ray worker process: one model, the CPUs it was granted
    zoo = Zoo(zoo_root)
    spec = ModelSpec.from_json(spec_json)
    target = y
    if spec.labels != "ground_truth":
        if teacher_spec_json is None:
            raise ValueError(f"{spec.name}: a surrogate needs its teacher")
        found = zoo.load(ModelSpec.from_json(teacher_spec_json))
        if found is None:
            raise RuntimeError(f"{spec.name}: teacher {teacher_spec_json['name']} is not in the zoo at {zoo_root}")
        target = teacher_labels(found[0], x, spec.labels, spec.train["temperature"])  # type: ignore[arg-type]
    device = "cuda" if torch.cuda.is_available() and ray_gpu_ids() else "cpu"
    _, meta, _ = zoo.get_or_train(spec, lambda m: fit_model(m, spec, x, target, x_test, y_test, device=device, amp=amp))
    return meta


def ray_gpu_ids() -> list:
    """The GPUs Ray granted this task (none outside a task or without a GPU request)."""
    try:
        import ray

        return list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - not inside a Ray worker
        return []


def run_jobs_on_ray(builder: "ZooBuilder", jobs: list["Job"], *, address: str | None = None, num_cpus: float = 1,
                    num_gpus: float = 0) -> list["Trained"]:
    """Train the jobs the zoo lacks as Ray tasks, then load every job's model from the zoo."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("the Ray executor needs ray: pip install 'conferprint[ray]'") from e
    from conferprint.experiments.zoo_builder import collect_from_zoo

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    found = {j.spec.name: builder.zoo.load(j.spec) for j in jobs}  # entries already there are loaded once
    missing = [j for j in jobs if found[j.spec.name] is None]
    t0 = time.perf_counter()
    if missing:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1)(train_task)
        refs: dict[int, object] = {}  # one object per distinct tensor (a split's inputs are shared by many jobs)
        test = (ray.put(builder.data.x_test), ray.put(builder.data.y_test))

        def ref(t: torch.Tensor):
            if id(t) not in refs:
                refs[id(t)] = ray.put(t)
            return refs[id(t)]

        futures = [remote.remote(str(builder.zoo.root), j.spec.to_json(), ref(j.x), ref(j.y), *test,
                                 j.teacher.meta["spec"] if j.teacher is not None else None, max(1, int(num_cpus)),
                                 builder.amp)
                   for j in missing]
        ray.get(futures)  # a failed task raises here, naming the model
        log.info("ray: trained %d models in %.1f s", len(missing), time.perf_counter() - t0)
    return collect_from_zoo(builder, jobs, found, {j.spec.name for j in missing})
