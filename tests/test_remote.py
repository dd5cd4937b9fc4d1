"""Verification against real servers: real processes, real sockets on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conferprint.verify import OracleError
from conferprint.verify.local import verify_target
from conferprint.verify.remote import HttpOracle, RemoteError
from conferprint.verify.session import VerifyOptions

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(cmd: list[str], port: int, timeout: float = 60.0):
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early: {proc.stdout.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve_cmd(kit, name: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "conferprint", "serve", "--model", str(kit["files"][name]), "--arch", kit["arch"],
            "--port", str(port), "--threads", "1", *extra]


def fault_cmd(kit, port: int, faults: str = "", delay: float = 0.0, log: Path | None = None) -> list[str]:
    cmd = [sys.executable, str(HERE / "fault_server.py"), "--model", str(kit["files"]["source"]), "--arch", kit["arch"],
           "--port", str(port), "--faults", faults, "--delay", str(delay)]
    return cmd + (["--log", str(log)] if log else [])


FAST_HTTP = {"timeout": 2.0, "retries": 4, "backoff": 0.05, "max_backoff": 0.2}


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_served_source_and_finetuned_copy_are_stolen_and_a_reference_is_not(verification_kit):
    kit = verification_kit
    verdicts = {}
    for name in ("source", "finetuned", "reference"):
        port = free_port()
        with running(serve_cmd(kit, name, port, "--top1-only"), port) as url:
            res = verify_target(kit["fingerprint"], url=url, http=FAST_HTTP)
        verdicts[name] = res["verdict"]
        assert res["queries_used"] == res["fingerprint_queries"] + res["decoy_queries"] and res["decoy_queries"] > 0
        assert res["p_value"] is not None and res["http"]["retried"] == 0
        if name != "reference":
            assert res["p_value"] <= 1e-3
    assert verdicts == {"source": "stolen", "finetuned": "stolen", "reference": "independent"}


def test_server_answers_bad_requests_with_4xx_and_a_message(verification_kit):
    kit = verification_kit
    port = free_port()
    with running(serve_cmd(kit, "source", port, "--max-batch", "4"), port) as url:
        good = [[[[0.5] * 8] * 8]]
        status, body = post(url, json.dumps({"inputs": good * 2}).encode())
        assert status == 200 and len(body["labels"]) == 2 and len(body["probabilities"][0]) == 10
        cases = [
            (b"{not json", 400, "JSON"),
            (json.dumps({"x": good}).encode(), 400, "inputs"),
            (json.dumps({"inputs": []}).encode(), 422, "non-empty"),
            (json.dumps({"inputs": good * 5}).encode(), 413, "limit"),
            (json.dumps({"inputs": [[[[0.5] * 7] * 8]]}).encode(), 422, "shape"),
            (json.dumps({"inputs": [[[["a"] * 8] * 8]]}).encode(), 400, "numbers"),
            (json.dumps({"inputs": [[[[2.0] * 8] * 8]]}).encode(), 422, "[0, 1]"),
            (b'{"inputs": [[[[NaN, 0, 0, 0, 0, 0, 0, 0]]]]}', 422, None),
        ]
        for body_bytes, want, words in cases:
            status, body = post(url, body_bytes)
            assert status == want, (body_bytes[:40], status, body)
            assert isinstance(body.get("detail"), str) and (words is None or words in body["detail"])
        with urllib.request.urlopen(url.replace("/predict", "/info")) as r:
            info = json.loads(r.read())
        assert info["input_shape"] == [1, 8, 8] and info["num_classes"] == 10 and info["max_batch"] == 4


def test_transient_faults_are_retried_into_the_same_verdict(verification_kit):
    kit = verification_kit
    port = free_port()
    faults = "delay:3,500,truncate,drop,503,ok,drop,500"
    with running(fault_cmd(kit, port, faults), port) as url:
        # five faults in a row hit the first batch: six attempts get it through
        res = verify_target(kit["fingerprint"], url=url, http={**FAST_HTTP, "retries": 6}, options=VerifyOptions(batch_size=8))
    assert res["verdict"] == "stolen" and res["cae_acc"] == 1.0
    assert res["http"]["retried"] >= 6  # every injected fault cost one retry


@pytest.mark.parametrize("fault,words", [("malformed", "broken JSON"), ("wrongcount", "labels for"),
                                         ("badlabel", "unknown label 99")])
def test_a_wrong_answer_is_a_clear_error_never_a_silent_zero(verification_kit, fault, words):
    kit = verification_kit
    port = free_port()
    with running(fault_cmd(kit, port, fault), port) as url:
        with pytest.raises(OracleError, match=words):
            verify_target(kit["fingerprint"], url=url, http=FAST_HTTP)


def test_unreachable_server_fails_after_retries_with_the_reason():
    import torch

    sleeps = []
    oracle = HttpOracle(f"http://127.0.0.1:{free_port()}/predict", retries=2, backoff=0.01, sleep=sleeps.append)
    with pytest.raises(RemoteError, match="3 attempts.*connection"):
        oracle(torch.zeros(2, 1, 8, 8))
    assert len(sleeps) == 2 and oracle.calls == 3


def test_rate_limit_spaces_requests(verification_kit):
    import torch

    kit = verification_kit
    port = free_port()
    with running(fault_cmd(kit, port), port) as url:
        oracle = HttpOracle(url, rate_limit=10.0)
        t = time.monotonic()
        for _ in range(4):
            oracle(torch.zeros(1, 1, 8, 8))
        assert time.monotonic() - t >= 0.3 - 1e-3  # 4 requests at 10 per second: ≥ 3 gaps of 0.1 s


def test_a_killed_verification_resumes_from_its_journal_without_asking_twice(verification_kit, tmp_path):
    kit = verification_kit
    port = free_port()
    log, journal = tmp_path / "asked.log", tmp_path / "journal.jsonl"
    cmd = [sys.executable, "-m", "conferprint", "verify", "--fingerprint", str(kit["fingerprint"]), "--url", None,
           "--journal", str(journal), "--batch-size", "4", "--out", str(tmp_path / "v.json")]
    with running(fault_cmd(kit, port, delay=0.25, log=log), port) as url:
        cmd[cmd.index(None)] = url
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until some batches are journaled, then kill -9
            if journal.exists() and journal.read_text().count('"type":"batch"') >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = journal.read_text().count('"type":"batch"')
        assert before >= 3 and not (tmp_path / "v.json").exists()
        with open(journal, "a") as f:  # a crash in the middle of a write leaves half a line
            f.write('{"type":"batch","index":99,"lab')
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    res = json.loads((tmp_path / "v.json").read_text())
    assert res["verdict"] == "stolen" and res["queries_replayed_from_journal"] > 0
    asked = log.read_text().split()
    assert len(asked) == len(set(asked))  # no query asked twice, not even the one in flight at the kill
    assert res["queries_used"] - res["queries_lost_in_flight"] <= len(asked) <= res["queries_used"]
    # finished: a third run answers from the journal alone
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and json.loads(again.stdout)["verdict"] == "stolen"
