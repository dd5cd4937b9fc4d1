"""Max-pooling before the ReLU against the textbook ReLU-then-pool order: speed, and the same weights.

    python benchmarks/pool_order.py [--n 8192] [--epochs 2] [--repeats 3] [--archs cnn_small lenet_bn cnn]

The zoo's networks pool before the ReLU wherever the two meet (``conferprint/models/small.py``): ReLU is
monotone, so the orders compute the same function with bit-identical gradients, and the ReLU runs on a
quarter of the values. For each architecture this times, interleaved and rotated, on random inputs:

- **train**: the zoo's training loop (``train_model``, augmented, as the zoo trains every model) from the same
  initial weights, in both orders; after every repeat the two trained models' parameters must be equal bit for
  bit (``identical``), else the script fails: the speed-up may not change what is trained;
- **gradient**: CEM's cost per member (``_common.input_gradients``: eval mode, the weights frozen, the forward pass
  and the backward pass to the input) on the same batch, whose input gradients must also be equal.

Images per second of each (median of repeats) and the speed-up, new order over old: the median of the repeats'
paired ratios, and the ratio of the fastest timings. Writes
benchmarks/results/pool-order.json.
"""
from __future__ import annotations

import statistics

import torch
from _common import (benchmark_model, input_gradients, paired_speedup, random_images, speed_parser, time_interleaved,
                     write_speed_result)
from torch import nn

from conferprint.training import TrainConfig, train_model

ORDERS = ["pool_first", "relu_first"]


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


def main(argv: list[str] | None = None) -> int:
    p = speed_parser(n=8192, epochs=2, repeats=3, archs=["cnn_small", "lenet_bn", "cnn"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--grad-steps", type=int, default=20, help="input-gradient passes per timing")
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.05, augment=True)
    rows = []
    for arch in args.archs:
        x, y = random_images(arch, args.n, gen)
        xb, yb = x[: args.batch], y[: args.batch]

        def fresh(order: str) -> nn.Module:
            m = benchmark_model(arch)
            return relu_first(m) if order == "relu_first" else m

        swapped = pairs(fresh("pool_first"))
        if swapped == 0:
            raise SystemExit(f"{arch} has no max-pooling followed by a ReLU: nothing to compare")

        def train(order: str) -> nn.Module:
            m = fresh(order)
            train_model(m, x, y, cfg, seed=0)
            return m

        for o in ORDERS:  # warm-up
            train_model(fresh(o), x[: args.batch * 2], y[: args.batch * 2], TrainConfig(epochs=1, batch_size=args.batch), seed=0)
        identical = []

        def compare(out: dict) -> None:  # each repeat: the same weights trained, the same input gradients
            trained, grad = out["train"], out["gradient"]
            identical.append(all(torch.equal(a, b) for a, b in zip(trained["pool_first"].state_dict().values(),
                                                                  trained["relu_first"].state_dict().values()))
                             and torch.equal(grad["pool_first"], grad["relu_first"]))

        secs = time_interleaved(ORDERS, {"train": train,
                                         "gradient": lambda o: input_gradients(fresh(o), xb, yb, args.grad_steps)},
                                args.repeats, after_repeat=compare)
        if not all(identical):
            raise SystemExit(f"{arch}: the two orders trained different weights or gave different gradients")
        row = {"arch": arch, "swapped_pairs": swapped, "identical": True, "seconds": secs}
        work = {"train": args.n * args.epochs, "gradient": args.batch * args.grad_steps}
        for kind, images in work.items():
            row[f"{kind}_images_per_s"] = {o: images / statistics.median(v) for o, v in secs[kind].items()}
            # the machine's speed drifts within seconds: the median of each repeat's paired ratio (the two orders
            # timed back to back), and the ratio of the fastest timings, which drifts can only have slowed
            row[f"{kind}_speedup"] = paired_speedup(secs[kind], "relu_first", "pool_first")
            row[f"{kind}_speedup_fastest"] = min(secs[kind]["relu_first"]) / min(secs[kind]["pool_first"])
        rows.append(row)
        print(f"{arch:10s} train {row['train_images_per_s']['relu_first']:7.0f} -> "
              f"{row['train_images_per_s']['pool_first']:7.0f} img/s (x{row['train_speedup']:.3f})  "
              f"fastest x{row['train_speedup_fastest']:.3f}; input gradient x{row['gradient_speedup']:.3f}, "
              f"fastest x{row['gradient_speedup_fastest']:.3f}; identical: True", flush=True)
    write_speed_result("pool_order.py", argv, "pool-order", {
        "batch": args.batch, "epochs": args.epochs, "n": args.n, "grad_steps": args.grad_steps, "rows": rows,
        "question": "speed-up of max-pooling before the ReLU over ReLU then pooling, the same weights trained"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
