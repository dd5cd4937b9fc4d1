"""The zoo's executors on this machine: the same models trained one by one on every thread (``local``)
against a pool of single-threaded worker processes (``pool``), same run.

    python benchmarks/executors.py [--n 30000] [--epochs 1] [--models 4] [--repeats 2] [--archs cnn_small lenet_bn mlp cnn]

Each repeat trains ``--models`` fresh models of one architecture into an empty zoo through
:class:`conferprint.experiments.zoo_builder.ZooBuilder` — the quickstart's own path, spawn and data
transfer of the pool included — on random inputs of the quickstart's D1 size (the cost does not
depend on the pixels). Wall seconds and images per second of each executor, and their ratio
(pool / local throughput; > 1: the pool is faster). Writes benchmarks/results/executors.json.
"""
from __future__ import annotations

import tempfile
import time

import torch
from _common import random_images, speed_parser, write_speed_result

from conferprint.data.base import Dataset
from conferprint.experiments.pool_executor import default_workers
from conferprint.experiments.quickstart import DEFAULT
from conferprint.experiments.zoo_builder import ZooBuilder
from conferprint.zoo import Zoo



def train_all(executor: str, data: Dataset, arch: str, models: int, epochs: int, tag: str) -> float:
    options = {"workers": default_workers()} if executor == "pool" else None
    with tempfile.TemporaryDirectory() as zoo:
        builder = ZooBuilder(Zoo(zoo), data, DEFAULT.train, seed=0, executor=executor, executor_options=options)
        jobs = [builder.job(f"{tag}-reference-{arch}-{i}", arch, "reference", "D1", data.x_train, data.y_train,
                            "ground_truth", epochs) for i in range(models)]
        t = time.perf_counter()
        trained = builder.run_all(jobs)
        seconds = time.perf_counter() - t
    assert all(m.trained_now for m in trained)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = speed_parser(n=30000, epochs=1, repeats=2, archs=["cnn_small", "lenet_bn", "mlp", "cnn"])
    p.add_argument("--models", type=int, default=4)
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for arch in args.archs:
        data = Dataset("random", *random_images(arch, args.n, gen), *random_images(arch, 2000, gen),
                       [str(i) for i in range(10)], "torch.rand")
        res: dict[str, list[float]] = {"local": [], "pool": []}
        for r in range(args.repeats):  # alternated, so drifts of machine speed hit both alike
            for ex in (["local", "pool"] if r % 2 == 0 else ["pool", "local"]):
                res[ex].append(train_all(ex, data, arch, args.models, args.epochs, f"r{r}"))
        images = args.n * args.epochs * args.models
        best = {k: min(v) for k, v in res.items()}
        rows.append({"arch": arch, "images": images, "seconds": res,
                     "images_per_s": {k: images / v for k, v in best.items()},
                     "pool_over_local": best["local"] / best["pool"]})
        print(f"{arch:10s} local {images / best['local']:8.0f} img/s  pool {images / best['pool']:8.0f} img/s  "
              f"ratio {rows[-1]['pool_over_local']:.2f}", flush=True)
    write_speed_result("executors.py", argv, "executors", {
        "models": args.models, "epochs": args.epochs, "n": args.n, "workers": default_workers(), "rows": rows,
        "measure": "fastest repeat of each executor; pool_over_local > 1: the pool trains the zoo faster"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
