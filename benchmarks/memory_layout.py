"""channels_last against the default (contiguous) memory layout, per architecture, for training and for CEM.

    python benchmarks/memory_layout.py [--n 8192] [--epochs 1] [--repeats 6] [--archs cnn_small lenet_bn cnn]

The registry records, per architecture, the layout its weights and inputs use (``ArchInfo.channels_last``: CEM's
forward and backward passes, verification) and the layout it trains in on a CPU (``ArchInfo.train_channels_last``;
``train_model`` switches to it for the run and back). This times both layouts on random inputs, interleaved and
rotated:

- **train**: the zoo's training loop (``train_model``, augmented) from the same initial weights;
- **gradient**: one CEM member's cost, the forward pass in eval mode and the backward pass to the input, the
  weights frozen as CEM freezes them.

Images per second (median of repeats) and channels_last's speed-up over contiguous (the median of the repeats'
paired ratios). Writes benchmarks/results/memory-layout.json.
"""
from __future__ import annotations

import statistics

import torch
from _common import (benchmark_model, input_gradients, paired_speedup, random_images, speed_parser, time_interleaved,
                     write_speed_result)
from torch import nn

from conferprint.models import arch_info
from conferprint.training import TrainConfig, train_model

LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def main(argv: list[str] | None = None) -> int:
    p = speed_parser(n=8192, epochs=1, repeats=6, archs=["cnn_small", "lenet_bn", "cnn"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--grad-steps", type=int, default=15, help="input-gradient passes per timing")
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.05, augment=True)
    rows = []
    for arch in args.archs:
        info = arch_info(arch)
        x, y = random_images(arch, args.n, gen)
        xb, yb = x[: args.batch], y[: args.batch]

        def fresh(layout: str) -> nn.Module:
            m = benchmark_model(arch).to(memory_format=LAYOUTS[layout])
            m.train_channels_last = layout == "channels_last"  # train in this layout, not the registry's
            return m

        def train(layout: str) -> None:
            train_model(fresh(layout), x, y, cfg, seed=0)

        def gradients(layout: str) -> None:
            input_gradients(fresh(layout), xb, yb, args.grad_steps)

        for layout in LAYOUTS:  # warm-up
            train_model(fresh(layout), x[: args.batch * 2], y[: args.batch * 2],
                        TrainConfig(epochs=1, batch_size=args.batch), seed=0)
            gradients(layout)
        secs = time_interleaved(list(LAYOUTS), {"train": train, "gradient": gradients}, args.repeats)
        row = {"arch": arch, "registry": {"channels_last": info.channels_last,
                                          "train_channels_last": info.train_channels_last}, "seconds": secs}
        work = {"train": args.n * args.epochs, "gradient": args.batch * args.grad_steps}
        for kind, images in work.items():
            row[f"{kind}_images_per_s"] = {k: images / statistics.median(v) for k, v in secs[kind].items()}
            row[f"{kind}_channels_last_speedup"] = paired_speedup(secs[kind], "contiguous", "channels_last")
        rows.append(row)
        print(f"{arch:12s} train: channels_last {row['train_images_per_s']['channels_last']:7.0f}, contiguous "
              f"{row['train_images_per_s']['contiguous']:7.0f} img/s (channels_last x{row['train_channels_last_speedup']:.3f}); "
              f"gradient: channels_last x{row['gradient_channels_last_speedup']:.3f}", flush=True)
    write_speed_result("memory_layout.py", argv, "memory-layout", {
        "batch": args.batch, "epochs": args.epochs, "n": args.n, "grad_steps": args.grad_steps, "rows": rows,
        "question": "speed-up of channels_last over the contiguous layout, training and CEM's input gradients"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
