"""One verification of one suspect: decoys, batches, a journal, and a sequential decision.

* **Decoys.** The fingerprint's queries are shuffled among benign decoys stored with the
  fingerprint, and sent in batches of varying size (between half of and the full batch size), so
  the suspect sees ordinary-looking traffic and cannot tell which answers count. The shuffle is
  drawn from a fresh random seed, kept in the journal.
* **Journal.** With ``journal=PATH`` every answered batch is appended (and fsynced) to a JSON-lines
  file before the next is sent. Started again with the same journal, a verification replays the
  answers it has and asks only what is missing: no query is asked twice, and the verdict is the
  same. A batch that was sent but whose answer was never journaled (the process died while it
  was in flight) is *not* asked again — the suspect could notice a repeated probe — and its
  fingerprint queries count as mismatches, which can only make the test more lenient towards the
  suspect, never raise the false-accusation rate. The journal's header pins the fingerprint digest, the suspect and the options; a journal of
  another verification is refused (the budget may change between runs). A line cut short by a
  crash is dropped.
* **Decision.** With a null distribution stored in the fingerprint (``NullModel``), the test is the
  fixed-size test "stolen iff P_null(X_N ≥ k_N) ≤ α" over all N fingerprint examples, *curtailed*:
  it stops as soon as the outcome is certain — ``k ≥ k*`` matches already (stolen), or even
  matching every unasked example could not reach ``k*`` (independent). Curtailment never changes the
  verdict of the full test, so the false-accusation rate stays α. Without a null, the same rule runs
  on a fixed CAEAcc threshold and no p-value is given. The verdict is ``undecided`` when the query
  budget runs out first, or when even a perfect match could not reach α with this fingerprint and null.
  ``independent`` means: the suspect's agreement is what independent models show (the test does not
  reject at α); it is not a proof of innocence.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from conferprint import __version__
from conferprint.errors import JournalError
from conferprint.fingerprint.artifact import Fingerprint, FingerprintError
from conferprint.verify.calibration import control_difference, verdict_by
from conferprint.verify.metrics import whole_matches
from conferprint.verify.null import NullModel
from conferprint.verify.oracle import Oracle, query_labels

JOURNAL_FORMAT = "conferprint-journal/1"


@dataclass(frozen=True)
class VerifyOptions:
    alpha: float = 1e-3  # false-accusation rate of the test
    batch_size: int = 32  # largest batch sent; sizes vary between half of this and this
    decoy_ratio: float = 1.0  # decoys per fingerprint query (capped by the decoys stored)
    budget: int | None = None  # most queries (fingerprint + decoys) to send; None = no limit
    threshold: float | None = None  # fixed CAEAcc threshold, used only when the fingerprint has no null
    sequential: bool = True  # stop as soon as the verdict is certain

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be ≥ 1, got {self.batch_size}")
        if self.decoy_ratio < 0 or not math.isfinite(self.decoy_ratio):
            raise ValueError(f"decoy ratio must be ≥ 0, got {self.decoy_ratio}")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be ≥ 1 query, got {self.budget}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be a CAEAcc in [0, 1], got {self.threshold}")


def plan_batches(n_fingerprint: int, n_decoys: int, batch_size: int, seed: int) -> list[list[int]]:
    """The query order: entries ``i ≥ 0`` are fingerprint rows, ``-(j + 1)`` decoy rows; seeded."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.cat([torch.arange(n_fingerprint), -1 - torch.arange(n_decoys)])
    items = items[torch.randperm(len(items), generator=gen)].tolist()
    low = max(1, math.ceil(batch_size / 2))
    batches, i = [], 0
    while i < len(items):
        size = int(torch.randint(low, batch_size + 1, (1,), generator=gen))
        batches.append(items[i: i + size])
        i += size
    return batches


class Journal:
    """Append-only JSON lines: a header, one line per answered batch, and the result."""

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]):
        self.path = Path(path)
        self.answers: dict[int, list[int]] = {}
        self.sent: set[int] = set()  # batches sent; those without an answer were lost in flight
        self.result: dict[str, Any] | None = None
        if self.path.exists() and self.path.stat().st_size > 0:
            self.header = self._read(header)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.header = header
            self._append({"type": "header", **header}, create=True)

    def _read(self, want: dict[str, Any]) -> dict[str, Any]:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        if tail:  # the last write was cut short: drop it so the file ends on a whole line
            with open(self.path, "r+b") as f:
                f.truncate(len(raw) - len(tail))
        records = []
        for no, line in enumerate(complete, 1):
            try:
                rec = json.loads(line)
            except ValueError:
                raise JournalError(f"{self.path}: line {no} is not valid JSON; the journal is corrupt") from None
            if not isinstance(rec, dict):
                raise JournalError(f"{self.path}: line {no} is not a JSON object")
            records.append(rec)
        if not records or records[0].get("type") != "header" or records[0].get("format") != JOURNAL_FORMAT:
            raise JournalError(f"{self.path}: not a {JOURNAL_FORMAT} journal")
        header = {k: v for k, v in records[0].items() if k != "type"}
        for key in ("fingerprint_digest", "suspect", "options", "n_fingerprint", "n_decoys"):
            if header.get(key) != want.get(key):
                raise JournalError(f"{self.path} belongs to another verification: its {key} is {header.get(key)!r}, "
                                   f"this one's is {want.get(key)!r}; use another journal file")
        for rec in records[1:]:
            if rec.get("type") == "batch":
                idx, labels = rec.get("index"), rec.get("labels")
                if not isinstance(idx, int) or not isinstance(labels, list) or not all(isinstance(v, int) for v in labels):
                    raise JournalError(f"{self.path}: malformed batch record {str(rec)[:120]}")
                self.answers[idx] = labels
            elif rec.get("type") == "sent":
                if not isinstance(rec.get("index"), int):
                    raise JournalError(f"{self.path}: malformed sent record {str(rec)[:120]}")
                self.sent.add(rec["index"])
            elif rec.get("type") == "result":
                self.result = rec.get("result")
        return header

    def _append(self, record: dict[str, Any], create: bool = False) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.path, "x" if create else "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def sending(self, index: int) -> None:
        self._append({"type": "sent", "index": index})
        self.sent.add(index)

    def record(self, index: int, labels: list[int]) -> None:
        self._append({"type": "batch", "index": index, "labels": labels})
        self.answers[index] = labels

    def finish(self, result: dict[str, Any]) -> None:
        self._append({"type": "result", "result": result})
        self.result = result


def verify_suspect(fp: Fingerprint, oracle: Oracle, *, suspect: str, options: VerifyOptions = VerifyOptions(),
                   journal: str | os.PathLike | None = None, seed: int | None = None) -> dict[str, Any]:
    """Verify one suspect (any labels-only oracle) against ``fp``; returns the JSON-ready result.

    ``suspect`` names it in the journal and the result (a URL, or a file's sha256). ``seed`` fixes
    the query order (tests); by default a fresh secret one is drawn, or the journal's is reused.
    """
    rows, n = len(fp), fp.n_examples  # queries, and the examples they ask (the same without groups)
    weight = fp.weights().tolist() if fp.groups is not None else None  # each query's share of its example
    num_classes = fp.manifest.get("num_classes")
    decoys = fp.decoys if fp.decoys is not None else fp.inputs[:0]
    n_decoys = min(len(decoys), round(options.decoy_ratio * rows))
    null = fp.null
    if null is None and options.threshold is None:
        raise ValueError("this fingerprint stores no null distribution: give a CAEAcc threshold, "
                         "or fit a null first (conferprint calibrate)")
    digest = fp.digest()
    header = {"format": JOURNAL_FORMAT, "fingerprint_digest": digest, "suspect": suspect,
              "options": {k: v for k, v in asdict(options).items() if k != "budget"}, "n_fingerprint": rows, "n_decoys": n_decoys,
              "seed": seed if seed is not None else secrets.randbits(62), "conferprint": __version__}
    jr = Journal(journal, header) if journal is not None else None
    if jr is not None and jr.result is not None:
        return {**jr.result, "resumed_finished": True}
    plan_seed = int((jr.header if jr is not None else header)["seed"])
    batches = plan_batches(rows, n_decoys, options.batch_size, plan_seed)

    if null is not None:
        k_star = null.critical_count(n, options.alpha)
    else:
        k_star = max(1, math.ceil(options.threshold * n - 1e-9))  # type: ignore[operator]
    t0 = time.perf_counter()
    matches = asked_fp = asked_decoys = replayed = lost_fp = lost_decoys = 0
    asked_w = lost_w = 0.0  # examples' worth of queries asked and lost (= their counts without groups)
    decided = None
    budget_hit = False
    for b, items in enumerate(batches):
        if jr is not None and b in jr.answers:
            labels = jr.answers[b]
            if len(labels) != len(items):
                raise JournalError(f"{jr.path}: batch {b} has {len(labels)} answers for {len(items)} queries")
            replayed += len(items)
        elif jr is not None and b in jr.sent:  # lost in flight before a crash: never asked again
            lost_fp += sum(i >= 0 for i in items)
            lost_w += sum(1.0 if weight is None else weight[i] for i in items if i >= 0)
            lost_decoys += sum(i < 0 for i in items)
            continue
        else:
            if options.budget is not None and asked_fp + asked_decoys + len(items) > options.budget:
                budget_hit = True
                break
            x = torch.stack([fp.inputs[i] if i >= 0 else decoys[-1 - i] for i in items])
            if jr is not None:
                jr.sending(b)
            labels = query_labels(oracle, x, num_classes).tolist()
            if jr is not None:
                jr.record(b, labels)
        for i, lab in zip(items, labels):
            if i >= 0:
                w = 1.0 if weight is None else weight[i]
                asked_fp += 1
                asked_w += w
                matches += int(lab == int(fp.keys[i])) if weight is None else w * (lab == int(fp.keys[i]))
            else:
                asked_decoys += 1
        if options.sequential or asked_fp + lost_fp == rows:
            if whole_matches(matches) >= k_star:
                decided = "stolen"
            elif whole_matches(matches + (n - asked_w - lost_w)) < k_star:
                decided = "independent"
            if decided is not None:
                break
    complete = asked_fp + lost_fp == rows
    if weight is not None:
        matches = round(matches, 6)
    if decided is None:
        verdict, reason = "undecided", ("query budget spent before the verdict was certain" if budget_hit
                                        else "the test cannot reach the chosen rate with this fingerprint and null")
    else:
        verdict = decided
        reason = (f"{matches} of {asked_fp} answers match; {k_star} matches out of {n} decide 'stolen'"
                  if k_star <= n else "")
        if weight is not None and k_star <= n:
            reason = (f"{matches:.3f} of {n} examples' worth of matches ({asked_fp} queries asked, each example's "
                      f"queries sharing it); {k_star} decide 'stolen'")
    if k_star > n:
        verdict, reason = "undecided", (f"even {n} of {n} matches would not reach p ≤ {options.alpha} under this null "
                                        f"(mean CAEAcc of independent models {null.mean:.3f}); more examples or "
                                        "a less spread null are needed" if null is not None else "threshold above 1")
    result: dict[str, Any] = {
        "verdict": verdict,
        "reason": reason,
        "cae_acc": matches / asked_w if asked_fp else None,
        "matches": matches,
        "fingerprint_queries": asked_fp,
        "decoy_queries": asked_decoys,
        "queries_used": asked_fp + asked_decoys + lost_fp + lost_decoys,
        "queries_lost_in_flight": lost_fp + lost_decoys,
        "queries_replayed_from_journal": replayed,
        "fingerprint_size": n,
        "fingerprint_rows": rows,
        "stopped_early": verdict != "undecided" and not complete,
        "alpha": options.alpha if null is not None else None,
        "critical_matches": k_star,
        "threshold": k_star / n,
        "decision_rule": "null" if null is not None else "threshold",
        "p_value": None,
        "p_value_kind": None,
        "p_value_empirical": None,
        "fingerprint_digest": digest,
        "suspect": suspect,
        "options": asdict(options),
        "seconds": time.perf_counter() - t0,
    }
    if null is not None and asked_fp:
        if complete and not lost_fp:
            result["p_value"], result["p_value_kind"] = null.p_value(whole_matches(matches), n), "exact"
        elif verdict == "independent":  # the best the full test could still have reached
            result["p_value"], result["p_value_kind"] = (null.p_value(whole_matches(matches + n - asked_w - lost_w), n),
                                                         "lower_bound")
        else:  # stolen early, or undecided: the full test's p-value is at most this
            result["p_value"], result["p_value_kind"] = null.p_value(whole_matches(matches), n), "upper_bound"
        result["p_value_empirical"] = null.empirical_p(matches / asked_w)
        result["null"] = {"mean": null.mean, "references": len(null.scores), "a": null.a, "b": null.b}
    if jr is not None and verdict != "undecided":
        jr.finish(result)
    return result


def fit_null(fp: Fingerprint, references: dict[str, Oracle]) -> NullModel:
    """Fit the CAEAcc null on independent reference models (generation must not have used them)."""
    from conferprint.verify import verify_oracle

    scores = {name: verify_oracle(o, fp) for name, o in references.items()}
    return NullModel.fit(list(scores.values()), fp.n_examples, list(scores))


def with_manifest(fp: Fingerprint, **entries: Any) -> Fingerprint:
    """A copy of ``fp`` whose manifest carries ``entries`` as well (save it to get the new digest)."""
    manifest = {k: v for k, v in fp.manifest.items() if k not in ("content_sha256",)}
    manifest.update(entries)
    return replace(fp, manifest=manifest)


def with_null(fp: Fingerprint, null: NullModel) -> Fingerprint:
    """A copy of ``fp`` whose manifest carries ``null`` (save it to get the new digest)."""
    return with_manifest(fp, null=null.to_json())


CONTROL_RULE = "control_difference"


def verify_with_control(fp: Fingerprint, control: Fingerprint, oracle: Oracle, *, suspect: str,
                        options: VerifyOptions = VerifyOptions(), journal: str | os.PathLike | None = None,
                        seed: int | None = None) -> dict[str, Any]:
    """The quickstart's verdict for one suspect: its CAEAcc on ``fp`` minus its CAEAcc on the ``control`` set,
    at the threshold stored in ``fp``'s manifest (``decision``, fitted on calibration references), or a raw
    CAEAcc of at least the stored critical count of matches (a near-copy follows the source on the control
    set too, so its difference is ≈ 0).

    Both sets are asked in full (no early stop: the score needs every answer), each through
    :func:`verify_suspect` with its own journal (``journal`` and ``journal.control``), so an interrupted
    verification resumes. The control must be the one the decision was fitted with (its digest is
    stored). Returns the JSON-ready result; ``undecided`` when a budget or lost queries left either set
    incomplete."""
    decision = fp.manifest.get("decision")
    if not decision or decision.get("rule") != CONTROL_RULE:
        raise ValueError("this fingerprint stores no control-difference decision (`conferprint quickstart` writes one "
                         "when its threshold is fitted on calibration references); verify it without a control set")
    if control.digest() != decision["control_digest"]:
        raise FingerprintError(f"the control set's digest {control.digest()} is not the one this fingerprint's decision "
                               f"was fitted with ({decision['control_digest']})")
    n, k = fp.n_examples, int(decision["raw_critical_matches"])
    whole = replace(options, sequential=False)
    main = verify_suspect(fp, oracle, suspect=suspect, options=replace(whole, threshold=options.threshold
                          if options.threshold is not None else min(1.0, k / n)), journal=journal, seed=seed)
    ctl = verify_suspect(control, oracle, suspect=suspect, options=replace(whole, threshold=1.0),
                         journal=None if journal is None else f"{journal}.control", seed=seed)
    complete = all(r["fingerprint_queries"] == r["fingerprint_rows"] for r in (main, ctl))
    result: dict[str, Any] = {
        "decision_rule": CONTROL_RULE, "suspect": suspect, "fingerprint_digest": fp.digest(),
        "control_digest": control.digest(), "threshold": decision["threshold"], "raw_critical_matches": k,
        "cae_acc": main["cae_acc"], "control_cae_acc": ctl["cae_acc"], "matches": main["matches"],
        "queries_used": main["queries_used"] + ctl["queries_used"],
        # the fingerprint's own p-value test under its stored null, reported beside the decision
        "fingerprint": {key: main[key] for key in ("verdict", "p_value", "p_value_kind", "critical_matches",
                                                   "fingerprint_queries", "decoy_queries", "queries_lost_in_flight")},
        "control": {key: ctl[key] for key in ("cae_acc", "matches", "fingerprint_queries", "queries_lost_in_flight")},
    }
    if not complete:
        result.update(verdict="undecided", score=None, verdict_by=None,
                      reason="the budget or lost queries left the fingerprint or the control set incomplete")
        return result
    score = control_difference(main["cae_acc"], ctl["cae_acc"])
    by = verdict_by(score, whole_matches(main["matches"]), decision["threshold"], k)
    result.update(verdict="stolen" if any(by.values()) else "independent", score=score, verdict_by=by,
                  reason=f"score {score:+.3f} against the threshold {decision['threshold']:.3f}; "
                         f"{main['matches']} of {n} matches against {k}")
    return result
