"""The quickstart's fingerprint phases (CEM, the PGD baseline, the control set) of two versions of the code, on the
same trained models, alternating: for a change that leaves training alone and touches generation.

    python benchmarks/fingerprint_phases.py --run DIR --baseline REV [--repeats 2] [--stem fingerprint-phases]

``--run`` is a finished quickstart's output folder (``benchmarks/end_to_end.py --keep``'s ``runs/quickstart``, say):
its zoo is copied for every run, so every model is reused (a run that retrains any is refused) and every fingerprint
is made from nothing. ``--baseline`` is a git revision, checked out into a temporary worktree and run with
``PYTHONPATH`` pointing at its ``src``; the other side is this checkout's code. Each repeat runs both, their order
alternating, with the run's preset and seed. Writes benchmarks/results/<stem>.json: per run the phases' wall times,
the fingerprint's content digest, the separation and the verdicts; and the median paired speed-up per phase.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, write_speed_result

PHASES = ("cem", "pgd", "control")


def run_quickstart(src: Path, zoo: Path, out: Path, preset: str, seed: int) -> dict:
    """``python -m conferprint quickstart`` with ``src`` first on the path, into ``out`` holding a copy of ``zoo``."""
    shutil.copytree(zoo, out / "zoo")
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "conferprint", "quickstart", "--out", str(out), "--preset", preset, "--seed", str(seed),
           "--no-progress"]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    res = json.loads((out / "results.json").read_text())
    if res["retrained"]["count"]:
        raise SystemExit(f"{src}: retrained {res['retrained']['count']} models; the versions do not share the zoo")
    return {"timings": {p: res["timings"][p] for p in PHASES}, "fingerprint_sha256": res["fingerprint"]["content_sha256"],
            "roc_auc": res["separation"]["roc_auc"], "margin": res["separation"]["margin"], "threshold": res["threshold"],
            "called_stolen": {"surrogates": res["decisions"]["true_positives"],
                              "references": res["decisions"]["false_positives"]}}


def summarize(rows: list[dict]) -> dict:
    """Per phase, the median over repeats of the baseline's time over this code's, paired within a repeat."""
    out = {}
    for phase in (*PHASES, "all"):
        def t(kind, r):
            row = next(x for x in rows if x["kind"] == kind and x["repeat"] == r)
            return sum(row["timings"].values()) if phase == "all" else row["timings"][phase]
        repeats = sorted({x["repeat"] for x in rows})
        out[phase] = {"speedup_paired_median": statistics.median(t("baseline", r) / t("head", r) for r in repeats),
                      "seconds_median": {k: statistics.median(t(k, r) for r in repeats) for k in ("baseline", "head")}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished quickstart output folder (its zoo is reused)")
    p.add_argument("--baseline", required=True, help="the git revision to compare with")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--stem", default="fingerprint-phases")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not (run / "results.json").is_file() or not (run / "zoo").is_dir():
        p.error(f"--run {run}: not a finished quickstart output folder (it needs results.json and zoo/)")
    if args.repeats < 1:
        p.error(f"--repeats must be ≥ 1, got {args.repeats}")
    res = json.loads((run / "results.json").read_text())
    preset, seed = res["config"]["preset"], int(res["seed"])
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.baseline}^{{commit}}"], cwd=ROOT,
                         capture_output=True, text=True)
    if rev.returncode != 0:
        p.error(f"--baseline {args.baseline!r} is not a commit of this repository")
    baseline = rev.stdout.strip()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fp-phases-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for r in range(args.repeats):
                kinds = ("baseline", "head") if r % 2 == 0 else ("head", "baseline")
                for kind in kinds:
                    src = tree / "src" if kind == "baseline" else ROOT / "src"
                    row = {"kind": kind, "repeat": r,
                           **run_quickstart(src, run / "zoo", Path(tmp) / f"{kind}-{r}", preset, seed)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    payload = {"run": str(run), "preset": preset, "seed": seed, "baseline": baseline, "head": head,
               "head_src_uncommitted_changes": dirty, "rows": rows, "summary": summarize(rows)}
    print(write_speed_result("fingerprint_phases.py", argv, args.stem, payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
