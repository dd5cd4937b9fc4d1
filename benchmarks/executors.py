"""The zoo's executors on this machine: the same models trained one by one on every thread (``local``)
against a pool of single-threaded worker processes (``pool``), same run.

    python benchmarks/executors.py [--n 30000] [--epochs 1] [--models 4] [--repeats 2] [--archs cnn_small lenet_bn mlp cnn]
    python benchmarks/executors.py --device cuda --bf16 --batch 512 --workers 4 --models 8 --archs resnet20

Each repeat trains ``--models`` fresh models of one architecture into an empty zoo through
:class:`conferprint.experiments.zoo_builder.ZooBuilder` — the quickstart's own path, spawn and data
transfer of the pool included — on random inputs of the quickstart's D1 size (the cost does not
depend on the pixels). Wall seconds and images per second of each executor, and their ratio
(pool / local throughput; > 1: the pool is faster). On CUDA every worker trains on the one GPU: the
question is whether several small models at once fill it better than one after the other. Writes
benchmarks/results/executors.json (CPU) or executors-cuda.json.
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
from conferprint.training import TrainConfig, scale_batch
from conferprint.zoo import Zoo



def train_all(executor: str, data: Dataset, arch: str, models: int, epochs: int, tag: str, *, workers: int,
              train: TrainConfig = DEFAULT.train, device: str = "cpu", bf16: bool = False) -> float:
    options = {"workers": workers} if executor == "pool" else None
    with tempfile.TemporaryDirectory() as zoo:
        builder = ZooBuilder(Zoo(zoo), data, train, seed=0, executor=executor, executor_options=options,
                             device=device, amp=bf16)
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
    p.add_argument("--workers", type=int, default=None, help="pool workers (default: one per CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--batch", type=int, default=None, help="batch size with the linear lr rule (default: the preset's)")
    args = p.parse_args(argv)
    workers = args.workers or default_workers()
    train = scale_batch(DEFAULT.train, args.batch) if args.batch else DEFAULT.train
    kw = dict(workers=workers, train=train, device=args.device, bf16=args.bf16)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for arch in args.archs:
        data = Dataset("random", *random_images(arch, args.n, gen), *random_images(arch, 2000, gen),
                       [str(i) for i in range(10)], "torch.rand")
        res: dict[str, list[float]] = {"local": [], "pool": []}
        for r in range(args.repeats):  # alternated, so drifts of machine speed hit both alike
            for ex in (["local", "pool"] if r % 2 == 0 else ["pool", "local"]):
                res[ex].append(train_all(ex, data, arch, args.models, args.epochs, f"r{r}", **kw))
        images = args.n * args.epochs * args.models
        best = {k: min(v) for k, v in res.items()}
        rows.append({"arch": arch, "images": images, "seconds": res,
                     "images_per_s": {k: images / v for k, v in best.items()},
                     "pool_over_local": best["local"] / best["pool"]})
        print(f"{arch:10s} local {images / best['local']:8.0f} img/s  pool {images / best['pool']:8.0f} img/s  "
              f"ratio {rows[-1]['pool_over_local']:.2f}", flush=True)
    write_speed_result("executors.py", argv, "executors" if args.device == "cpu" else f"executors-{args.device}", {
        "device": args.device, "bf16": args.bf16, "batch": train.batch_size,
        "models": args.models, "epochs": args.epochs, "n": args.n, "workers": workers, "rows": rows,
        "measure": "fastest repeat of each executor; pool_over_local > 1: the pool trains the zoo faster"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
