"""Human-readable outputs of a run: markdown tables and PNG plots (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from conferprint.fingerprint import Fingerprint
from conferprint.verify import roc_curve


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for _, h in cols) + " |"
    sep = "|" + "|".join(" --- " for _ in cols) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def plot_roc(path: Path, models: list[dict], methods: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from conferprint.verify import roc_auc

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for key, label in methods.items():
        pos = [r["scores"][key] for r in models if r["role"] == "surrogate"]
        neg = [r["scores"][key] for r in models if r["role"] == "reference"]
        if not pos or not neg:
            continue
        fpr, tpr, _ = roc_curve(pos, neg)
        ax.step(fpr, tpr, where="post", label=f"{label} (AUC {roc_auc(pos, neg):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("false positive rate (references)")
    ax.set_ylabel("true positive rate (surrogates)")
    ax.set_title(f"Held-out models: {sum(r['role'] == 'surrogate' for r in models)} surrogates, "
                 f"{sum(r['role'] == 'reference' for r in models)} references", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fingerprint(path: Path, fp: Fingerprint, classes: list[str], n: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = fp.example_rows().tolist()  # the examples themselves, not their shifted copies
    n = min(n, len(shown))
    rows = 2 if fp.originals is not None else 1
    fig, axes = plt.subplots(rows, n, figsize=(1.3 * n, 1.55 * rows), squeeze=False)

    def show(ax, img, title):
        img = img.permute(1, 2, 0).numpy()
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=6)
        ax.axis("off")

    for col, i in enumerate(shown[:n]):
        key = classes[int(fp.keys[i])]
        if fp.originals is not None:
            orig = classes[int(fp.original_labels[i])] if fp.original_labels is not None else "?"
            show(axes[0][col], fp.originals[i], f"original\n{orig}")
        show(axes[rows - 1][col], fp.inputs[i], f"fingerprint\n{key}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fit_text(fit: dict[str, Any] | None) -> str:
    if not fit:
        return ""
    bound = ("prediction bound" if fit.get("rule", "normal upper prediction bound") == "normal upper prediction bound"
             else f"tolerance bound at {fit['confidence']:.0%} confidence")
    text = (f" (upper {1 - fit['alpha']:.0%} {bound} of {fit['n_references']} calibration references' scores: "
            f"mean {fit['mean']:+.3f}, sd {fit['sd']:.3f}, highest {max(fit['scores']):+.3f})")
    raw = fit.get("raw_cae_acc_rule")
    if raw:
        text += (f", or raw CAEAcc of at least {raw['critical_matches']} matches (p ≤ {raw['alpha']:g} under the "
                 f"beta-binomial null of the same references, mean {raw['null_mean']:.3f}: near-copies follow the "
                 "source on the control set too)")
    return text


def _null_lines(nt: dict[str, Any] | None) -> list[str]:
    if not nt or nt.get("null") is None:
        return []
    n_s = sum(v["role"] == "surrogate" for v in nt["per_model"].values())
    n_r = len(nt["per_model"]) - n_s
    return [f"p-value test of `conferprint verify` (raw CAEAcc, beta-binomial null fitted on the testing references, "
            f"mean {nt['null_mean']:.3f}; references judged leave-one-out): at α = {nt['alpha']:g}, "
            f"{nt['true_positives']} of {n_s} surrogates called stolen, {nt['false_positives']} of {n_r} references; "
            f"'stolen' needs {nt['critical_matches']} matches.", ""]


def timing_rows(results: dict) -> list[dict]:
    """One row per phase: this run's seconds and the recorded cost (a phase may have only one of them:
    the pool and Ray time all models as one phase)."""
    rec = results["recorded_costs"]
    phases = [k for k in [*results["timings"], *rec] if k != "total"]
    phases = list(dict.fromkeys(phases)) + ["total"]
    return [{"phase": k, "seconds": results["timings"].get(k), "recorded": rec.get(k)} for k in phases]


def write_report(out: Path, results: dict[str, Any], fp: Fingerprint, classes: list[str],
                 baselines: dict[str, Fingerprint]) -> None:
    methods = {"cem": "CEM", **{k: k.upper() for k in baselines}}
    if results.get("score") == "family_null":
        methods["calibrated"] = "CEM, family-null score"
    elif results.get("score") == "control_diff":
        methods["calibrated"] = "CEM − PGD control"
    plot_roc(out / "roc.png", results["models"], methods)
    plot_fingerprint(out / "fingerprint.png", fp, classes)
    sep = results["separation"]
    lines = [
        f"# conferprint quickstart ({results['config']['preset']}, seed {results['seed']})",
        "",
        f"Dataset {results['data']['dataset']} (D1 = {results['data']['d1']}, D2 = {results['data']['d2']}, "
        f"test = {results['data']['test']}). Source `{results['source']['arch']}`: test accuracy "
        f"{results['source']['test_acc']:.4f}, CAEAcc on its own fingerprint {results['source']['cae_acc']:.3f}.",
        "",
        "## Verification of held-out models",
        "",
        table([{"method": methods[k], **(results["raw_cae_acc"] if k == "cem" else sep if k == "calibrated"
                                         else results["baselines"][k]),
                "size": len(baselines[k]) if k in baselines else len(fp)} for k in methods],
              [("method", "fingerprint"), ("size", "size"), ("n_surrogates", "surrogates"), ("n_references", "references"),
               ("roc_auc", "ROC AUC"), ("margin", "min surr − max ref"), ("tpr_at_fpr_0", "TPR @ FPR 0"),
               ("mean_surrogate", "mean surr"), ("mean_reference", "mean ref")]),
        "",
        f"Decision threshold {results['threshold']:.3f}{_fit_text(results.get('threshold_fit'))}: "
        f"{results['decisions']['true_positives']} of {sep['n_surrogates']} "
        f"surrogates called stolen, {results['decisions']['false_positives']} of {sep['n_references']} references "
        "wrongly called stolen.",
        "",
        *_null_lines(results.get("null_test")),
        "## Per testing model (CEM fingerprint)",
        "",
        f"Decisive score: `{results.get('score', 'cae_acc')}`"
        + {"cae_acc": "",
           "control_diff": " = CAEAcc on the CEM fingerprint − CAEAcc on the plain PGD control set (labels only)",
           "family_null": " = CAEAcc − the null of the family inferred from the suspect's labels"}[results.get("score", "cae_acc")]
        + ("" if results.get("score", "cae_acc") == "cae_acc" else
           f"; raw-CAEAcc AUC {_fmt(results['raw_cae_acc'].get('roc_auc'))}, margin {_fmt(results['raw_cae_acc'].get('margin'))}."),
        "",
        table(results["models"], [("name", "model"), ("role", "role"), ("arch", "arch"), ("labels", "labels"),
                                  ("test_acc", "test acc"), ("cae_acc", "CAEAcc"), ("inferred_family", "inferred family"),
                                  ("score", "score"), ("verdict", "verdict")]),
        "",
        "## Per architecture (testing models)",
        "",
        table([{"arch": a, "surr": ", ".join(f"{v:.2f}" for v in d["surrogates"]),
                "refs": ", ".join(f"{v:.2f}" for v in d["references"]), "auc": d["roc_auc"], "margin": d["margin"]}
               for a, d in results["per_arch"].items()],
              [("arch", "arch"), ("surr", "surrogates' CAEAcc"), ("refs", "references' CAEAcc"), ("auc", "AUC"),
               ("margin", "margin")]),
        "",
        "## Training models (used by generation; their scores are optimistic by construction)",
        "",
        table(results["training_models"], [("name", "model"), ("arch", "arch"), ("test_acc", "test acc"),
                                           ("cae_acc", "CAEAcc")]),
        "",
        "## Fingerprint",
        "",
        table([{**results["fingerprint"]["stats"], "size": results["fingerprint"]["size"],
                "queries": results["fingerprint"].get("queries"), "max_linf": results["fingerprint"]["max_linf"]}],
              [("size", "size"), ("queries", "queries"), ("candidates_used", "candidates"), ("adversarial_rate", "adversarial rate"),
               ("conferrable_found", "conferrable found"), ("mean_train_confer", "mean train Confer"),
               ("max_linf", "max L∞"), ("seconds", "seconds")]),
        "",
        f"Parameters: `{results['fingerprint']['params']}`",
        "",
        "## Timings (seconds)",
        "",
        "'this run': wall time of each phase now (≈ 0 for what was reused from the zoo or the study folder); "
        "'recorded cost': what the phase cost when its models and fingerprints were made (summed per model), "
        "so its total is the study's cost from nothing.",
        "",
        table(timing_rows(results), [("phase", "phase"), ("seconds", "this run"), ("recorded", "recorded cost")]),
        "",
        "![ROC](roc.png)  ![fingerprint](fingerprint.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
