"""The ``conferprint`` command: parses arguments, calls the API, prints. No logic of its own."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _quickstart(args: argparse.Namespace) -> int:
    from conferprint.experiments.quickstart import resolve_config, run_quickstart

    cfg = resolve_config(args.preset)
    res = run_quickstart(args.out, cfg, seed=args.seed, data_dir=args.data_dir, progress=not args.no_progress)
    sep = res["separation"]
    print(f"source {res['source']['arch']}: test accuracy {res['source']['test_acc']:.4f}; "
          f"fingerprint {res['fingerprint']['size']} examples (CEM)")
    print(f"held-out models: {sep['n_surrogates']} surrogates, {sep['n_references']} references")
    auc = res["roc_auc"]
    name = {"cae_acc": "CAEAcc", "control_diff": "CAEAcc(CEM) - CAEAcc(PGD control)",
            "family_null": "CAEAcc - family null"}[res["score"]]
    if auc is not None:
        print(f"score {name}: ROC AUC {auc:.3f} (lowest surrogate {sep['min_surrogate']:+.3f}, "
              f"highest reference {sep['max_reference']:+.3f})")
    raw = res["raw_cae_acc"]
    if res["score"] != "cae_acc" and "roc_auc" in raw:
        print(f"raw CAEAcc on the CEM fingerprint: ROC AUC {raw['roc_auc']:.3f}")
    for k, b in res["baselines"].items():
        if "roc_auc" in b:
            print(f"raw CAEAcc on the {k.upper()} fingerprint: ROC AUC {b['roc_auc']:.3f}")
    print(f"threshold {res['threshold']}: {res['decisions']['true_positives']}/{sep['n_surrogates']} surrogates "
          f"and {res['decisions']['false_positives']}/{sep['n_references']} references called stolen")
    print(f"total {res['timings']['total']:.0f} s; wrote {Path(args.out) / 'results.json'}, report.md, roc.png, fingerprint.png")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from conferprint.verify.local import verify_local_model

    res = verify_local_model(args.fingerprint, args.model, args.arch, threshold=args.threshold)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def _archs(args: argparse.Namespace) -> int:
    from conferprint.models import ARCHITECTURES

    for name, info in sorted(ARCHITECTURES.items()):
        print(f"{name:16s} {info.input_size}×{info.input_size}  family={info.family}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conferprint", description="Fingerprint classifiers with conferrable adversarial examples.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="train, fingerprint and verify on Fashion-MNIST, end to end")
    q.add_argument("--out", required=True, help="output folder (its zoo/ makes reruns resume)")
    q.add_argument("--preset", choices=["tiny", "default"], default="default")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST .gz files")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=_quickstart)

    v = sub.add_parser("verify", help="verify a local model file against a fingerprint")
    v.add_argument("--fingerprint", required=True, help="fingerprint .safetensors or .json")
    v.add_argument("--model", required=True, help="model weights (.safetensors)")
    v.add_argument("--arch", required=True, help="architecture name (see `conferprint archs`)")
    v.add_argument("--threshold", type=float, default=0.75)
    v.add_argument("--out", default=None, help="also write the JSON result here")
    v.set_defaults(func=_verify)

    a = sub.add_parser("archs", help="list the architectures")
    a.set_defaults(func=_archs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from conferprint.data import DataFormatError, DataNotFoundError
    from conferprint.fingerprint import FingerprintError, GenerationError
    from conferprint.zoo import ZooError

    try:
        return args.func(args)
    except (DataNotFoundError, DataFormatError, FingerprintError, GenerationError, ZooError, ValueError) as e:
        print(f"conferprint: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
