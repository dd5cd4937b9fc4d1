"""The zoo's training loop against a bare PyTorch train step on the same model and batches, same run.

    python benchmarks/training.py [--n 8192] [--epochs 2] [--repeats 3] [--archs cnn_small lenet_bn mlp cnn resnet20]

- **ours**: `conferprint.training.train_model` as the zoo calls it (seeded shuffling, random-shift
  augmentation — and flips for 32×32 colour —, one-cycle schedule, loss bookkeeping), once with
  augmentation and once without;
- **bare**: the textbook loop: a random permutation, index a batch, forward, cross-entropy,
  `zero_grad`, backward, SGD (Nesterov) step — same model, batch size, memory layout.
Images per second of each; goal (issue 7): ours / bare ≥ 0.9. Random inputs (the cost does not
depend on the pixels). Writes benchmarks/results/training.json.
"""
from __future__ import annotations

import time

import torch
from _common import random_images, speed_parser, write_speed_result
import torch.nn.functional as F

from conferprint.models import arch_info, build_model
from conferprint.training import TrainConfig, train_model, uses_channels_last



def bare_loop(model, x, y, epochs: int, batch: int, lr: float) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    cl = uses_channels_last(model)
    model.train()
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i: i + batch]
            xb = x[idx]
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t


def ours(model, x, y, epochs: int, batch: int, lr: float, augment: bool) -> float:
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, augment=augment)
    t = time.perf_counter()
    train_model(model, x, y, cfg, seed=0)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = speed_parser(n=8192, epochs=2, repeats=3, archs=["cnn_small", "lenet_bn", "mlp", "cnn", "resnet20"])
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for arch in args.archs:
        size = arch_info(arch).input_size
        c = 3 if size == 32 else 1
        n = args.n if size == 28 else max(args.batch * 4, args.n // 8)  # ResNet-20 is ~15× slower per image
        x, y = random_images(arch, n, gen)

        def fresh():
            return build_model(arch, in_channels=c, num_classes=10, seed=0)

        ours(fresh(), x[: args.batch * 2], y[: args.batch * 2], 1, args.batch, 0.05, True)  # warm-up
        bare_loop(fresh(), x[: args.batch * 2], y[: args.batch * 2], 1, args.batch, 0.05)
        res = {"bare": [], "ours_augment": [], "ours_plain": []}
        runners = {"bare": lambda: bare_loop(fresh(), x, y, args.epochs, args.batch, 0.05),
                   "ours_augment": lambda: ours(fresh(), x, y, args.epochs, args.batch, 0.05, True),
                   "ours_plain": lambda: ours(fresh(), x, y, args.epochs, args.batch, 0.05, False)}
        order = list(runners)
        for r in range(args.repeats):  # interleaved and rotated, so drifts of machine speed hit all alike
            for k in order[r % 3:] + order[: r % 3]:
                res[k].append(runners[k]())
        images = n * args.epochs
        med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
        rows.append({"arch": arch, "images": images, "seconds": res,
                     "images_per_s": {k: images / v for k, v in med.items()},
                     "ratio_augment": med["bare"] / med["ours_augment"], "ratio_plain": med["bare"] / med["ours_plain"]})
        print(f"{arch:10s} bare {images / med['bare']:8.0f} img/s  ours {images / med['ours_augment']:8.0f} "
              f"(augment, ratio {rows[-1]['ratio_augment']:.3f})  {images / med['ours_plain']:8.0f} "
              f"(no augment, ratio {rows[-1]['ratio_plain']:.3f})", flush=True)
    write_speed_result("training.py", argv, "training", {
        "batch": args.batch, "epochs": args.epochs, "rows": rows,
        "goal": "ours / bare ≥ 0.9 (images per second, median of repeats)"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
