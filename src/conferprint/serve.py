"""Serve a model over HTTP (FastAPI + uvicorn): what a suspect's API looks like, for owners' tests.

Endpoints:

* ``POST /predict`` — body ``{"inputs": [[[[...]]]]}``, a batch ``(N, C, H, W)`` of numbers in
  [0, 1]; answer ``{"labels": [...], "probabilities": [[...]]}`` (no probabilities with
  ``top1_only``). Bad requests get a 4xx with ``{"detail": message}``: 400 malformed JSON or
  non-numeric values, 413 a batch or body above the limits, 422 wrong shape, non-finite values or
  values outside [0, 1].
* ``GET /health`` — ``{"status": "ok"}``; ``GET /info`` — input shape, classes, limits.
"""

import json
import math
from typing import Callable

import numpy as np
import torch

PredictFn = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) in [0, 1] -> logits (N, K)


def create_app(predict: PredictFn, *, input_shape: tuple[int, int, int], num_classes: int,
               top1_only: bool = False, max_batch: int = 256):
    """The ASGI app; ``predict`` returns logits and is called from a worker thread, one batch at a time."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
        from starlette.concurrency import run_in_threadpool
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("serving needs FastAPI and uvicorn: pip install 'conferprint[serve]'") from e
    import threading

    lock = threading.Lock()
    per_input = math.prod(input_shape)
    expected = f"(N, {', '.join(map(str, input_shape))})"
    max_body = max_batch * per_input * 32 + 4096  # a generous bound on JSON text per number
    app = FastAPI(title="conferprint model server", version="1")

    def error(status: int, detail: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": detail})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    def info() -> dict:
        return {"input_shape": list(input_shape), "num_classes": num_classes, "top1_only": top1_only,
                "max_batch": max_batch, "value_range": [0.0, 1.0]}

    @app.post("/predict")
    async def predict_route(request: Request):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            return error(413, f"request body of {length} bytes is above the {max_body}-byte limit")
        raw = await request.body()
        if len(raw) > max_body:
            return error(413, f"request body of {len(raw)} bytes is above the {max_body}-byte limit")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            return error(400, f"body is not valid JSON: {e}")
        if not isinstance(doc, dict) or "inputs" not in doc:
            return error(400, "body must be a JSON object with an 'inputs' array")
        inputs = doc["inputs"]
        if not isinstance(inputs, list) or not inputs:
            return error(422, "'inputs' must be a non-empty array of images")
        if len(inputs) > max_batch:
            return error(413, f"batch of {len(inputs)} images is above the limit of {max_batch}")
        try:
            arr = np.asarray(inputs)
        except (ValueError, TypeError) as e:
            return error(422, f"'inputs' is not a regular array of shape {expected}: {e}")
        if arr.dtype.kind not in "fiu":
            return error(400, f"'inputs' must hold numbers only (got {arr.dtype.kind!r} values, e.g. strings, "
                              "booleans or ragged rows)")
        if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(input_shape):
            return error(422, f"'inputs' has shape {tuple(arr.shape)}; expected {expected}")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            return error(422, "'inputs' holds NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            return error(422, f"values must lie in [0, 1] (got {float(arr.min()):.4g} .. {float(arr.max()):.4g})")

        def run() -> tuple[list[int], list[list[float]] | None]:
            with lock, torch.inference_mode():
                logits = predict(torch.from_numpy(arr))
            labels = logits.argmax(1).tolist()
            probs = None if top1_only else torch.softmax(logits.float(), 1).tolist()
            return labels, probs

        labels, probs = await run_in_threadpool(run)
        body: dict = {"labels": labels}
        if probs is not None:
            body["probabilities"] = probs
        return body

    return app


def serve_model(model_path: str, arch: str, *, host: str = "127.0.0.1", port: int = 8000, top1_only: bool = False,
                max_batch: int = 256, threads: int | None = None, log_level: str = "warning") -> None:
    """Load ``model_path`` (safetensors or weights-only .pt, never a pickle of code) and serve it until stopped."""
    import uvicorn

    from conferprint.suspects import load_torch_model, model_input_shape
    from conferprint.training import predict_logits

    if threads is not None:
        torch.set_num_threads(threads)
    model = load_torch_model(model_path, arch)
    shape = model_input_shape(model, arch)
    num_classes = int(predict_logits(model, torch.zeros(1, *shape)).shape[1])
    app = create_app(lambda x: predict_logits(model, x), input_shape=shape, num_classes=num_classes,
                     top1_only=top1_only, max_batch=max_batch)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
