"""Inference speed by batch size: `predict_logits` (accuracies, a thief's queries, CEM's selection, verification).

    python benchmarks/predict_batch.py [--n 8192] [--repeats 3] [--batches 64 128 256 512 1024]
                                       [--archs cnn_small lenet_bn cnn mlp]

Every model's answers on many images go through `conferprint.training.predict_logits`, in batches. This times it
per architecture and batch size on random inputs (eval mode, no gradients; repeats interleaved over the batch sizes;
the median and the fastest), and checks that every batch size gives the same logits bit for bit as the largest, so the default
batch (`PREDICT_BATCH`) is a choice of speed only; the script fails otherwise. Writes
benchmarks/results/predict-batch.json.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from _common import benchmark_model, random_images, synchronize, time_interleaved, write_speed_result

from conferprint.allocator import tune_cpu_allocator
from conferprint.device import resolve_device
from conferprint.training import PREDICT_BATCH, PREDICT_BATCH_DEFAULT, predict_logits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--archs", nargs="+", default=["cnn_small", "lenet_bn", "cnn", "mlp"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    tune_cpu_allocator()  # as the conferprint command does
    dev = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for arch in args.archs:
        x = random_images(arch, args.n, gen)[0].to(dev)
        model = benchmark_model(arch).to(dev)
        reference = predict_logits(model, x, max(args.batches))
        same = {}
        for b in args.batches:  # warm-up, and the logits compared
            same[b] = torch.equal(predict_logits(model, x, b), reference)
        if not all(same.values()):
            raise SystemExit(f"{arch}: batch sizes {[b for b, s in same.items() if not s]} change the logits")

        def predict(b: int) -> None:
            predict_logits(model, x, b)
            synchronize(dev)

        secs = time_interleaved(args.batches, {"predict": predict}, args.repeats)["predict"]
        ips = {b: args.n / statistics.median(v) for b, v in secs.items()}
        fastest = {b: args.n / min(v) for b, v in secs.items()}
        rows.append({"arch": arch, "images_per_s": ips, "images_per_s_fastest": fastest, "seconds": secs,
                     "same_logits": same})
        print(f"{arch:11s} median " + "  ".join(f"{b}: {v:7.0f}" for b, v in ips.items()) + " img/s; fastest "
              + "  ".join(f"{b}: {v:7.0f}" for b, v in fastest.items()), flush=True)
    default = PREDICT_BATCH.get(dev.type, PREDICT_BATCH_DEFAULT)
    write_speed_result("predict_batch.py", argv, "predict-batch" + ("" if dev.type == "cpu" else f"-{dev.type}"), {
        "device": str(dev), "n": args.n, "default_batch": default, "rows": rows,
        "question": "images per second of predict_logits by batch size (median and fastest of repeats), the same logits"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
