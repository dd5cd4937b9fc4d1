"""Max-pooling before the ReLU against the textbook ReLU-then-pool order: speed, and the same weights.

    python benchmarks/pool_order.py [--n 8192] [--epochs 2] [--repeats 3] [--archs cnn_small lenet_bn cnn]

The zoo's networks pool before the ReLU wherever the two meet (``conferprint/models/small.py``): ReLU is
monotone, so the orders compute the same function with bit-identical gradients, and the ReLU runs on a
quarter of the values. For each architecture this times, interleaved and rotated, on random inputs:

- **train**: the zoo's training loop (``train_model``, augmented, as the zoo trains every model) from the same
  initial weights, in both orders; after every repeat the two trained models' parameters must be equal bit for
  bit (``identical``), else the script fails: the speed-up may not change what is trained;
- **gradient**: CEM's cost per member, a forward pass in eval mode and the backward pass to the input, on the
  same batch, whose input gradients must also be equal.

Images per second of each (median of repeats) and the speed-up, new order over old: the median of the repeats'
paired ratios, and the ratio of the fastest timings. Writes
benchmarks/results/pool-order.json.
"""
from __future__ import annotations

import statistics
import time

import torch
from _common import random_images, speed_parser, write_speed_result
import torch.nn.functional as F
from torch import nn

from conferprint.models import arch_info, build_model
from conferprint.training import TrainConfig, train_model, uses_channels_last


def relu_first(model: nn.Module) -> nn.Module:
    """``model`` with every (MaxPool2d, ReLU) pair of its Sequentials swapped back to (ReLU, MaxPool2d), in place:
    the textbook order, the same parameters at the same indices."""
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            mods = list(m)
            for i in range(len(mods) - 1):
                if isinstance(mods[i], nn.MaxPool2d) and isinstance(mods[i + 1], nn.ReLU):
                    m[i], m[i + 1] = mods[i + 1], mods[i]
                    mods[i], mods[i + 1] = mods[i + 1], mods[i]
    return model


def pairs(model: nn.Module) -> int:
    """How many max-poolings are directly followed by a ReLU in ``model``'s Sequentials."""
    return sum(isinstance(a, nn.MaxPool2d) and isinstance(b, nn.ReLU)
               for m in model.modules() if isinstance(m, nn.Sequential) for a, b in zip(m, list(m)[1:]))


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of the cross-entropy to the input, the model in eval mode: one member's share of a CEM step."""
    model.eval()
    if uses_channels_last(model):
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.detach().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return x.grad


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    p = speed_parser(n=8192, epochs=2, repeats=3, archs=["cnn_small", "lenet_bn", "cnn"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--grad-steps", type=int, default=20, help="input-gradient passes per timing")
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.05, augment=True)
    rows = []
    for arch in args.archs:
        c = 3 if arch_info(arch).input_size == 32 else 1
        x, y = random_images(arch, args.n, gen)
        xb, yb = x[: args.batch], y[: args.batch]

        def fresh(order: str) -> nn.Module:
            m = build_model(arch, in_channels=c, num_classes=10, seed=0)
            return relu_first(m) if order == "relu_first" else m

        swapped = pairs(fresh("pool_first"))
        if swapped == 0:
            raise SystemExit(f"{arch} has no max-pooling followed by a ReLU: nothing to compare")

        def train(order: str) -> nn.Module:
            m = fresh(order)
            train_model(m, x, y, cfg, seed=0)
            return m

        def grads(order: str) -> torch.Tensor:
            m = fresh(order)
            g = None
            for _ in range(args.grad_steps):
                g = input_gradient(m, xb, yb)
            return g

        for o in ("pool_first", "relu_first"):  # warm-up
            train_model(fresh(o), x[: args.batch * 2], y[: args.batch * 2], TrainConfig(epochs=1, batch_size=args.batch), seed=0)
        secs = {"train": {"pool_first": [], "relu_first": []}, "gradient": {"pool_first": [], "relu_first": []}}
        identical = True
        for r in range(args.repeats):  # interleaved and rotated, so drifts of the machine's speed hit both alike
            order = ["pool_first", "relu_first"][r % 2:] + ["pool_first", "relu_first"][: r % 2]
            trained, grad = {}, {}
            for o in order:
                secs["train"][o].append(timed(lambda: trained.setdefault(o, train(o)))[0])
                secs["gradient"][o].append(timed(lambda: grad.setdefault(o, grads(o)))[0])
            identical &= all(torch.equal(a, b) for a, b in zip(trained["pool_first"].state_dict().values(),
                                                               trained["relu_first"].state_dict().values()))
            identical &= torch.equal(grad["pool_first"], grad["relu_first"])
        if not identical:
            raise SystemExit(f"{arch}: the two orders trained different weights or gave different gradients")
        row = {"arch": arch, "swapped_pairs": swapped, "identical": identical, "seconds": secs}
        work = {"train": args.n * args.epochs, "gradient": args.batch * args.grad_steps}
        for kind, images in work.items():
            med = {o: statistics.median(v) for o, v in secs[kind].items()}
            row[f"{kind}_images_per_s"] = {o: images / s for o, s in med.items()}
            # the machine's speed drifts within seconds: the median of each repeat's paired ratio (the two orders
            # timed back to back), and the ratio of the fastest timings, which drifts can only have slowed
            row[f"{kind}_speedup"] = statistics.median(
                old / new for old, new in zip(secs[kind]["relu_first"], secs[kind]["pool_first"]))
            row[f"{kind}_speedup_fastest"] = min(secs[kind]["relu_first"]) / min(secs[kind]["pool_first"])
        rows.append(row)
        print(f"{arch:10s} train {row['train_images_per_s']['relu_first']:7.0f} -> "
              f"{row['train_images_per_s']['pool_first']:7.0f} img/s (x{row['train_speedup']:.3f})  "
              f"fastest x{row['train_speedup_fastest']:.3f}; input gradient x{row['gradient_speedup']:.3f}, "
              f"fastest x{row['gradient_speedup_fastest']:.3f}; identical: {identical}", flush=True)
    write_speed_result("pool_order.py", argv, "pool-order", {
        "batch": args.batch, "epochs": args.epochs, "n": args.n, "grad_steps": args.grad_steps, "rows": rows,
        "question": "speed-up of max-pooling before the ReLU over ReLU then pooling, the same weights trained"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
