"""The zoo's training loop against a bare PyTorch train step on the same model and batches, same run.

    python benchmarks/training.py [--n 8192] [--epochs 2] [--repeats 3] [--archs cnn_small lenet_bn mlp cnn resnet20]
    python benchmarks/training.py --bf16   # CPU bf16 autocast (pays on CPUs with AVX-512 BF16 / AMX)
    python benchmarks/training.py --device cuda --bf16 --batch 512 --n 25000 --archs resnet20 vgg16_bn ...

- **ours**: `conferprint.training.train_model` as the zoo calls it (seeded shuffling, random-shift
  augmentation — and flips for 32×32 colour —, one-cycle schedule, loss bookkeeping), once with
  augmentation and once without;
- **bare**: the textbook loop: a random permutation, index a batch, forward, cross-entropy,
  `zero_grad`, backward, SGD (Nesterov) step — same model, batch size, memory layout (the one the zoo trains it in).
Images per second of each; goal (issue 7): ours / bare ≥ 0.9. Random inputs (the cost does not
depend on the pixels). On CUDA (``--device cuda``, ``--bf16`` for bf16 autocast in both loops) the
data is resident on the GPU and each timing ends with a synchronisation. Writes
benchmarks/results/training[-bf16].json (CPU; ``--bf16`` works there too) or training-cuda[-bf16].json.
"""
from __future__ import annotations

import time

import torch
from _common import benchmark_model, random_images, speed_parser, synchronize, write_speed_result
import torch.nn.functional as F

from conferprint.device import resolve_device
from conferprint.models import arch_info
from conferprint.training import TrainConfig, train_model, uses_channels_last


def bare_loop(model, x, y, epochs: int, batch: int, lr: float, bf16: bool = False) -> float:
    want = getattr(model, "train_channels_last", None)
    if want is not None and x.device.type == "cpu":  # the layout train_model trains it in (ArchInfo.train_channels_last)
        model.to(memory_format=torch.channels_last if want else torch.contiguous_format)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    cl = uses_channels_last(model)
    model.train()
    synchronize(x.device)
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=x.device)
        for i in range(0, len(x), batch):
            idx = perm[i: i + batch]
            xb = x[idx]
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    synchronize(x.device)
    return time.perf_counter() - t


def ours(model, x, y, epochs: int, batch: int, lr: float, augment: bool, bf16: bool = False) -> float:
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, augment=augment)
    synchronize(x.device)
    t = time.perf_counter()
    train_model(model, x, y, cfg, seed=0, device=x.device, amp=bf16)  # its last loss read-back waits for the GPU
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = speed_parser(n=8192, epochs=2, repeats=3, archs=["cnn_small", "lenet_bn", "mlp", "cnn", "resnet20"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in both loops (CUDA or CPU)")
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for arch in args.archs:
        size = arch_info(arch).input_size
        # on CPU ResNet-20 is ~15× slower per image than the 28×28 nets: fewer images for 32×32 models
        n = args.n if size == 28 or dev.type == "cuda" else max(args.batch * 4, args.n // 8)
        x, y = (t.to(dev) for t in random_images(arch, n, gen))

        def fresh():
            return benchmark_model(arch).to(dev)

        bf16 = args.bf16
        ours(fresh(), x[: args.batch * 2], y[: args.batch * 2], 1, args.batch, 0.05, True, bf16)  # warm-up
        bare_loop(fresh(), x[: args.batch * 2], y[: args.batch * 2], 1, args.batch, 0.05, bf16)
        res = {"bare": [], "ours_augment": [], "ours_plain": []}
        runners = {"bare": lambda: bare_loop(fresh(), x, y, args.epochs, args.batch, 0.05, bf16),
                   "ours_augment": lambda: ours(fresh(), x, y, args.epochs, args.batch, 0.05, True, bf16),
                   "ours_plain": lambda: ours(fresh(), x, y, args.epochs, args.batch, 0.05, False, bf16)}
        order = list(runners)
        for r in range(args.repeats):  # interleaved and rotated, so drifts of machine speed hit all alike
            for k in order[r % 3:] + order[: r % 3]:
                res[k].append(runners[k]())  # each loop times itself, its fresh model's build left out
        images = n * args.epochs
        med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
        rows.append({"arch": arch, "images": images, "seconds": res,
                     "images_per_s": {k: images / v for k, v in med.items()},
                     "ratio_augment": med["bare"] / med["ours_augment"], "ratio_plain": med["bare"] / med["ours_plain"]})
        print(f"{arch:10s} bare {images / med['bare']:8.0f} img/s  ours {images / med['ours_augment']:8.0f} "
              f"(augment, ratio {rows[-1]['ratio_augment']:.3f})  {images / med['ours_plain']:8.0f} "
              f"(no augment, ratio {rows[-1]['ratio_plain']:.3f})", flush=True)
    stem = ("training" if dev.type == "cpu" else f"training-{dev.type}") + ("-bf16" if args.bf16 else "")
    write_speed_result("training.py", argv, stem, {
        "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "bf16": args.bf16, "batch": args.batch, "epochs": args.epochs, "rows": rows,
        "goal": "ours / bare ≥ 0.9 (images per second, median of repeats)"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
