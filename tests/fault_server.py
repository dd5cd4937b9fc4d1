"""A misbehaving prediction API for the tests: a real process on a real socket.

    python tests/fault_server.py --model M.safetensors --arch A --port P [--faults F1,F2,...] [--delay S] [--log FILE]

It speaks the protocol of ``conferprint serve`` but request number i (from 0) suffers fault
``F_i`` of the schedule (requests past its end are answered correctly):

    ok          a correct answer
    delay:S     a correct answer after S seconds (beyond the client's timeout: a timeout)
    500 / 503   that status, no answer (503 with ``Retry-After: 0``)
    truncate    a 200 whose body stops halfway through its Content-Length
    drop        the connection closed without any answer
    malformed   a 200 with a full-length body that is not JSON
    wrongcount  a 200 with one label too few
    badlabel    a 200 whose first label is 99 (not a class)

``--delay`` slows every request (for the kill-and-resume test). ``--log`` appends one line per
input of every correctly answered request: the sha1 of its float32 bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from conferprint.suspects import load_torch_model
from conferprint.training import predict_logits


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--faults", default="")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--log", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_torch_model(args.model, args.arch)
    faults = [f for f in args.faults.split(",") if f]
    counter = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, length: int | None = None, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_GET(self) -> None:
            self._send(200, b'{"status": "ok"}')

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                i = counter["n"]
                counter["n"] += 1
            fault = faults[i] if i < len(faults) else "ok"
            if args.delay:
                time.sleep(args.delay)
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault in ("500", "503"):
                self._send(int(fault), b'{"detail": "injected"}', extra={"Retry-After": "0"} if fault == "503" else None)
                return
            x = torch.from_numpy(np.asarray(json.loads(raw)["inputs"], dtype=np.float32))
            with lock, torch.inference_mode():
                labels = predict_logits(model, x).argmax(1).tolist()
            if fault.startswith("delay:"):
                time.sleep(float(fault.split(":")[1]))
            if fault == "wrongcount":
                labels = labels[:-1]
            if fault == "badlabel":
                labels[0] = 99
            body = json.dumps({"labels": labels}).encode()
            if fault == "malformed":
                body = b'{"labels": [1, 2,' + b" " * 20
            if fault == "truncate":
                self._send(200, body[: len(body) // 2], length=len(body))
                self.close_connection = True
                return
            if fault in ("ok",) or fault.startswith("delay:"):
                if args.log:
                    with lock, open(args.log, "a") as f:
                        for row in x.numpy():
                            f.write(hashlib.sha1(row.astype(np.float32).tobytes()).hexdigest() + "\n")
            try:
                self._send(200, body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
