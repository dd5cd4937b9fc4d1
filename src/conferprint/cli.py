"""The ``conferprint`` command: parses arguments, calls the API, prints. No logic of its own."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

# experiments.quickstart.PRESETS' names, spelled here so that --help needs no torch (a test keeps them equal)
PRESET_NAMES = ("tiny", "default", "cifar10", "cifar10-cpu", "cifar10-cpu-hour")


def _quickstart(args: argparse.Namespace) -> int:
    from conferprint.experiments.quickstart import resolve_config, run_quickstart

    if args.workers is not None and args.executor != "pool":
        raise ValueError(f"--workers applies to --executor pool, not {args.executor!r}")
    cfg = resolve_config(args.preset)
    if args.threshold_rule is not None or args.threshold_confidence is not None:
        if cfg.threshold != "calibrated":
            raise ValueError(f"--threshold-rule and --threshold-confidence apply to presets with a calibrated threshold; "
                             f"{args.preset!r} has a fixed one ({cfg.threshold})")
        cfg = replace(cfg, threshold_rule=args.threshold_rule if args.threshold_rule is not None else cfg.threshold_rule,
                      threshold_confidence=(args.threshold_confidence if args.threshold_confidence is not None
                                            else cfg.threshold_confidence))
        if args.threshold_confidence is not None and cfg.threshold_rule != "tolerance":
            raise ValueError("--threshold-confidence applies to --threshold-rule tolerance")
    if args.calibration_without_origins is not None:
        if cfg.threshold != "calibrated":
            raise ValueError(f"--calibration-without-origins applies to presets with a calibrated threshold; "
                             f"{args.preset!r} has a fixed one ({cfg.threshold})")
        cfg = replace(cfg, calibration_without_origins=args.calibration_without_origins)
    if args.batch_size is not None:  # bigger batches for a GPU, with the linear learning-rate rule
        from conferprint.training import scale_batch

        cfg = replace(cfg, train=scale_batch(cfg.train, args.batch_size))
    options = {"ray": {"address": args.ray_address, "num_cpus": args.ray_cpus, "num_gpus": args.ray_gpus},
               "pool": {"workers": args.workers}}.get(args.executor)
    res = run_quickstart(args.out, cfg, seed=args.seed, data_dir=args.data_dir, progress=not args.no_progress,
                         executor=args.executor, executor_options=options,
                         device=args.device, amp=args.bf16)
    sep = res["separation"]
    print(f"source {res['source']['arch']}: test accuracy {res['source']['test_acc']:.4f}; "
          f"fingerprint {res['fingerprint']['size']} examples (CEM)"
          + (f", asked as {q} queries" if (q := res["fingerprint"].get("queries", 0)) > res["fingerprint"]["size"] else ""))
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
    fit = res.get("threshold_fit")
    how = (f" ({fit['rule']}, fitted on {fit['n_references']} calibration references, alpha {fit['alpha']}"
           + (f", confidence {fit['confidence']}" if "confidence" in fit else "") + ")") if fit else ""
    if fit and fit.get("raw_cae_acc_rule"):
        how += f", or raw CAEAcc >= {fit['raw_cae_acc_rule']['critical_matches']}/{res['fingerprint']['size']}"
    print(f"threshold {res['threshold']:.3f}{how}: {res['decisions']['true_positives']}/{sep['n_surrogates']} surrogates "
          f"and {res['decisions']['false_positives']}/{sep['n_references']} references called stolen")
    print(f"total {res['timings']['total']:.0f} s; wrote {Path(args.out) / 'results.json'}, report.md, roc.png, fingerprint.png")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from conferprint.experiments.evaluate import load_config, run_evaluation

    cfg = load_config(args.config, args.preset, args.repeats)
    res = run_evaluation(cfg, args.out, progress=not args.no_progress)
    dec = res["decision"]
    print(f"source {res['source']['arch']}: test accuracy {res['source']['test_acc']:.4f}; decision: "
          f"stolen when {dec['statistic']} >= {dec['threshold']:.3f}")
    for r in res["attacks"]:
        print(f"{r['label']:28s} acc {r['test_acc']['mean']:.3f}  CAEAcc {r['cae_acc']['mean']:.3f} "
              f"± {r['cae_acc']['std']:.3f}  {r['verdict']:10s} removed: {'yes' if r['removal_succeeded'] else 'no'}"
              f"{'' if r['agrees_with_paper'] else '  (differs from the paper)'}")
    agree = res["agreement_with_paper"]
    print(f"{agree['agree']}/{agree['of']} attacks agree with the paper; wrote {Path(args.out) / 'results.json'}, "
          "report.md, removal.png")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from conferprint.experiments.compare import load_compare_config, run_compare

    res = run_compare(load_compare_config(args.config, args.preset), args.out, progress=not args.no_progress)
    for k, v in res["roc"].items():
        if "error" in v:
            print(f"{k:9s} no fingerprint: {v['error']}")
        else:
            extra = f"  mean L∞ {v['linf_mean']:.3f}" if "linf_mean" in v else f"  ({v.get('note', '')})"
            print(f"{k:9s} ROC AUC {v['roc_auc']:.3f}  margin {v['margin']:+.3f}  size {v['size']}{extra}")
    ev = res["evasion"]
    if ev is not None:
        f = ev["fingerprint"]
        print(f"evasion detector on the fingerprint: ROC AUC {f['roc_auc']:.3f}; "
              f"{f['benign_flagged']:.1%} of benign queries flagged at 90 % catch")
    print(f"wrote {Path(args.out) / 'results.json'}, report.md, roc.png, conferrability.png")
    return 0


def _attack(args: argparse.Namespace) -> int:
    import yaml

    from conferprint.attacks import make_attack
    from conferprint.data import load_dataset, split_defender_attacker
    from conferprint.experiments.evaluate import steal
    from conferprint.suspects import load_torch_model
    from conferprint.zoo import Zoo, sha256_file

    params = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        params[key] = yaml.safe_load(value)
    attack = make_attack(args.name, params, "--set")
    data = load_dataset(args.dataset, args.data_dir)
    d1, d2 = split_defender_attacker(len(data.y_train), args.split_seed)
    source = load_torch_model(args.source, args.arch, in_channels=data.in_channels, num_classes=data.num_classes)
    name = args.model_name or f"{attack.name}-s{args.seed}"
    _, meta = steal(Zoo(args.out), name, attack, source=source, source_arch=args.arch,
                    source_sha256=sha256_file(Path(args.source)), data=data, d1=d1, d2=d2, seed=args.seed,
                    split=f"D2(n={len(d2)},seed={args.split_seed})", data_dir=args.data_dir,
                    progress=not args.no_progress)
    print(f"{name} ({meta['arch']}): test accuracy {meta['test_acc']:.4f}, fidelity {meta['fidelity']:.4f}, "
          f"{meta['source_queries']} source queries; wrote {Path(args.out) / (name + '.safetensors')}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from conferprint.verify.local import verify_target
    from conferprint.verify.session import VerifyOptions

    if args.onnx is not None and not args.onnx.endswith(".onnx"):
        raise ValueError(f"--onnx expects a .onnx file, got {args.onnx}")
    model = args.model or args.onnx
    if args.model is not None and args.arch is None:
        raise ValueError("--model needs --arch (see `conferprint archs`); ONNX files go with --onnx")
    options = VerifyOptions(alpha=args.alpha, batch_size=args.batch_size, decoy_ratio=args.decoy_ratio,
                            budget=args.budget, threshold=args.threshold, sequential=not args.no_sequential)
    http = {"timeout": args.timeout, "retries": args.retries, "rate_limit": args.rate_limit}
    res = verify_target(args.fingerprint, model=model, arch=args.arch, url=args.url, options=options,
                        journal=args.journal, expect_digest=args.expect_digest, http=http, control=args.control)
    text = json.dumps(res, indent=2)
    if args.out:
        from conferprint._io import atomic_write_text

        atomic_write_text(Path(args.out), text + "\n")
    print(text)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from conferprint.serve import serve_model

    print(f"serving {args.model} ({args.arch}) on http://{args.host}:{args.port}/predict", flush=True)
    serve_model(args.model, args.arch, host=args.host, port=args.port, top1_only=args.top1_only,
                max_batch=args.max_batch, threads=args.threads)
    return 0


def _commit(args: argparse.Namespace) -> int:
    from conferprint.fingerprint import load_fingerprint

    fp = load_fingerprint(args.fingerprint)
    print(f"{fp.digest()}  {args.fingerprint}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from conferprint.fingerprint import load_fingerprint, save_fingerprint
    from conferprint.suspects import load_suspect
    from conferprint.verify.session import fit_null, with_null

    fp = load_fingerprint(args.fingerprint)
    refs = {}
    for item in args.reference:
        path, _, arch = item.rpartition(":") if not item.endswith(".onnx") else (item, "", "")
        s = load_suspect(path, arch or None, input_shape=fp.input_shape, num_classes=fp.num_classes)
        refs[Path(path).name] = s.oracle
    null = fit_null(fp, refs)
    save_fingerprint(with_null(fp, null), args.out)
    out = load_fingerprint(args.out)
    print(json.dumps({"null": null.to_json(), "mean": null.mean,
                      "critical_matches": null.critical_count(fp.n_examples, args.alpha), "alpha": args.alpha,
                      "fingerprint": str(args.out), "digest": out.digest()}, indent=2))
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from conferprint.suspects import export_onnx, load_torch_model, model_input_shape

    model = load_torch_model(args.model, args.arch)
    path = export_onnx(model, args.out, model_input_shape(model, args.arch))
    print(f"wrote {path}")
    return 0


def _archs(args: argparse.Namespace) -> int:
    from conferprint.models import ARCHITECTURES

    for name, info in sorted(ARCHITECTURES.items()):
        print(f"{name:16s} {info.input_size}×{info.input_size}  family={info.family}")
    return 0


def _attacks(args: argparse.Namespace) -> int:
    from conferprint.attacks import ATTACKS

    for name, cls in sorted(ATTACKS.items()):
        params = ", ".join(f"{k}={v}" for k, v in cls().params().items())
        print(f"{name:14s} {params}\n{'':14s} ({cls.cite})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conferprint", description="Fingerprint classifiers with conferrable adversarial examples.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="train, fingerprint and verify on Fashion-MNIST, end to end")
    q.add_argument("--out", required=True, help="output folder (its zoo/ makes reruns resume)")
    q.add_argument("--preset", choices=PRESET_NAMES, default="default")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST .gz files")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.add_argument("--executor", choices=["local", "pool", "ray"], default="local",
                   help="train the models one by one in this process on every thread (default; the fastest on a "
                   "2-core CPU, benchmarks/results/executors.json), in local worker processes with one "
                   "single-threaded model per CPU, or as Ray tasks (pip install 'conferprint[ray]')")
    q.add_argument("--workers", type=int, default=None, help="worker processes of --executor pool (default: one per CPU)")
    q.add_argument("--ray-address", default=None, help="Ray cluster address ('auto': the running cluster; "
                   "default: a local instance); the output folder must be on a filesystem all workers share")
    q.add_argument("--ray-cpus", type=float, default=1, help="CPUs per training task")
    q.add_argument("--ray-gpus", type=float, default=0,
                   help="GPUs per training task (a fraction such as 0.25 trains several small models per GPU)")
    q.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    q.add_argument("--bf16", action="store_true", help="bf16 autocast while training and in CEM's optimisation (CUDA, or a CPU with bf16 support)")
    q.add_argument("--threshold-rule", choices=["prediction", "tolerance"], default=None,
                   help="how the verdict's threshold is fitted on the calibration references: 'prediction' (false "
                   "accusations at rate alpha on average; the CIFAR-10 presets') or 'tolerance' (at most alpha with "
                   "probability --threshold-confidence; a higher bar, fewer stolen models caught; the default preset's)")
    q.add_argument("--threshold-confidence", type=float, default=None,
                   help="confidence of the tolerance rule (default 0.9)")
    q.add_argument("--calibration-without-origins", action=argparse.BooleanOptionalAction, default=None,
                   help="also train the calibration references on the defender's data without the images the "
                   "fingerprint's and the control's examples were made from, and fit the verdict on both sets "
                   "(default: the preset's)")
    q.add_argument("--batch-size", type=int, default=None,
                   help="training batch size (default: the preset's); the peak learning rate scales linearly with it")
    q.set_defaults(func=_quickstart)

    ev = sub.add_parser("evaluate", help="run the removal attacks of a config against the quickstart's fingerprint")
    ev.add_argument("--config", required=True, help="YAML config (see configs/fmnist-removal.yaml)")
    ev.add_argument("--out", required=True, help="output folder (study/ and zoo/ inside make reruns resume)")
    ev.add_argument("--preset", choices=PRESET_NAMES, default=None, help="override the config's study preset")
    ev.add_argument("--repeats", type=int, default=None, help="override the config's evaluation.repeats")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_evaluate)

    at = sub.add_parser("attack", help="run one removal attack on a source model and save the stolen model to a zoo")
    at.add_argument("name", help="attack name (see `conferprint attacks`)")
    at.add_argument("--source", required=True, help="the source's weights (.safetensors or weights-only .pt)")
    at.add_argument("--arch", required=True, help="the source's architecture")
    at.add_argument("--dataset", default="fashion-mnist")
    at.add_argument("--data-dir", default=None)
    at.add_argument("--split-seed", type=int, default=0, help="seed of the D1/D2 split (the attacker gets D2)")
    at.add_argument("--seed", type=int, default=0, help="the attack's own seed")
    at.add_argument("--set", action="append", metavar="KEY=VALUE", help="an attack parameter; repeat")
    at.add_argument("--model-name", default=None, help="zoo entry name (default: NAME-sSEED)")
    at.add_argument("--out", required=True, help="zoo folder")
    at.add_argument("--no-progress", action="store_true")
    at.set_defaults(func=_attack)

    cp = sub.add_parser("compare", help="CEM against IPGuard and the classic attacks on the same held-out models; evasion")
    cp.add_argument("--config", required=True, help="YAML config (see configs/fmnist-compare.yaml)")
    cp.add_argument("--out", required=True)
    cp.add_argument("--preset", choices=PRESET_NAMES, default=None)
    cp.add_argument("--no-progress", action="store_true")
    cp.set_defaults(func=_compare)

    la = sub.add_parser("attacks", help="list the removal attacks and their parameters")
    la.set_defaults(func=_attacks)

    v = sub.add_parser("verify", help="verify a suspect (model file, ONNX file or HTTP API) against a fingerprint")
    v.add_argument("--fingerprint", required=True, help="fingerprint .safetensors or .json")
    who = v.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="model weights (.safetensors, or a weights-only .pt/.pth); needs --arch")
    who.add_argument("--onnx", help="an ONNX model file")
    who.add_argument("--url", help="the suspect's prediction endpoint, e.g. http://host:8000/predict")
    v.add_argument("--arch", default=None, help="architecture name of --model (see `conferprint archs`)")
    v.add_argument("--budget", type=int, default=None, help="most queries to send, decoys included")
    v.add_argument("--alpha", type=float, default=1e-3, help="false-accusation rate of the test (default 1e-3)")
    v.add_argument("--threshold", type=float, default=None,
                   help="fixed CAEAcc threshold; only for fingerprints without a stored null")
    v.add_argument("--control", default=None,
                   help="the study's control set (fingerprint-control.json of a quickstart): decide as the quickstart "
                        "does, CAEAcc minus CAEAcc on the control at the stored threshold, or a significant raw CAEAcc; "
                        "asks both sets in full (--budget applies to each)")
    v.add_argument("--batch-size", type=int, default=32, help="largest batch per request (sizes vary below it)")
    v.add_argument("--decoy-ratio", type=float, default=1.0, help="benign decoys per fingerprint query")
    v.add_argument("--no-sequential", action="store_true", help="ask every fingerprint query, no early stop")
    v.add_argument("--journal", default=None, help="JSON-lines journal: an interrupted verification resumes from it")
    v.add_argument("--expect-digest", default=None, help="refuse a fingerprint whose digest is not this commitment")
    v.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    v.add_argument("--retries", type=int, default=4, help="retries on timeouts, dropped connections and 5xx")
    v.add_argument("--rate-limit", type=float, default=None, help="most HTTP requests per second")
    v.add_argument("--out", default=None, help="also write the JSON result here")
    v.set_defaults(func=_verify)

    s = sub.add_parser("serve", help="serve a model over HTTP (POST /predict)")
    s.add_argument("--model", required=True, help="model weights (.safetensors or weights-only .pt)")
    s.add_argument("--arch", required=True, help="architecture name (see `conferprint archs`)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--top1-only", action="store_true", help="answer labels only, no probabilities")
    s.add_argument("--max-batch", type=int, default=256)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.set_defaults(func=_serve)

    c = sub.add_parser("commit", help="print the fingerprint's digest: the commitment to publish before a dispute")
    c.add_argument("fingerprint")
    c.set_defaults(func=_commit)

    cal = sub.add_parser("calibrate", help="fit the CAEAcc null on independent reference models; writes a new fingerprint")
    cal.add_argument("--fingerprint", required=True)
    cal.add_argument("--reference", action="append", required=True,
                     help="PATH:ARCH of a weights file, or PATH.onnx; repeat (generation must not have used them)")
    cal.add_argument("--out", required=True, help="the calibrated fingerprint (new digest)")
    cal.add_argument("--alpha", type=float, default=1e-3, help="report the critical count at this rate")
    cal.set_defaults(func=_calibrate)

    e = sub.add_parser("export-onnx", help="write a model file as ONNX")
    e.add_argument("--model", required=True)
    e.add_argument("--arch", required=True)
    e.add_argument("--out", required=True)
    e.set_defaults(func=_export_onnx)

    a = sub.add_parser("archs", help="list the architectures")
    a.set_defaults(func=_archs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from conferprint.allocator import tune_cpu_allocator
    from conferprint.errors import ConferprintError

    try:
        tune_cpu_allocator()  # keep freed tensor memory in the process (allocator.py: up to 1.2x in fresh processes)
        return args.func(args)
    except (ConferprintError, ValueError) as e:
        print(f"conferprint: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
