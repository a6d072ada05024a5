"""Small shared helpers for encoders: device choice, torch threads, L2 normalisation."""

from __future__ import annotations

import os
import threading

import numpy as np

_threads_done = False
_threads_lock = threading.Lock()


def configure_torch_threads(n: int | None = None) -> int:
    """Use every core for intra-op work once per process (override: HA3_ADAPTER_TORCH_THREADS).

    Inter-op parallelism stays at 1: our forward passes are sequential and decode/preprocess
    run in their own threads, so more inter-op threads only oversubscribe small machines.
    """
    global _threads_done
    import torch

    with _threads_lock:
        if n is None:
            env = os.environ.get("HA3_ADAPTER_TORCH_THREADS")
            n = int(env) if env else max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
        if not _threads_done:
            torch.set_num_threads(n)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already set once torch ran something parallel
                pass
            _threads_done = True
        return torch.get_num_threads()


def ort_session_options():
    """ONNX Runtime session options for a service that shares its cores: every core for
    intra-op work (HA3_ADAPTER_TORCH_THREADS overrides), one inter-op thread, and idle
    intra-op threads that sleep instead of spinning (the service's event loop, request
    threads and engine share these cores; bench/query.py at 16 clients: 1.5x the QPS)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    env = os.environ.get("HA3_ADAPTER_TORCH_THREADS")
    opts.intra_op_num_threads = int(env) if env else len(os.sched_getaffinity(0))
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def pick_device(requested: str | None) -> str:
    """``auto``/None → ``cuda`` when available else ``cpu``; otherwise the requested device."""
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero instead of NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return (x / norms).astype(np.float32, copy=False)
