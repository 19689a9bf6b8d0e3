"""The onnxruntime session every in-process model of the request path runs under."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def inference_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """On the CPU with ``threads`` threads for one operator and none across them: a request scores one user, and
    the service's workers already share the cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
