"""onnxruntime sessions configured exactly as a device profile says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ArtifactError
from edgekd.profiles import DeviceProfile

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


def session_options(profile: DeviceProfile) -> Any:
    import onnxruntime as ort

    rt = profile.runtime
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = rt["intra_op_threads"]
    opts.inter_op_num_threads = rt["inter_op_threads"]
    opts.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if rt["execution_mode"] == "parallel"
                           else ort.ExecutionMode.ORT_SEQUENTIAL)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[rt["graph_optimization"]])
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if rt["allow_spinning"] else "0")
    opts.log_severity_level = 3
    return opts


def open_session(path: str | Path, profile: DeviceProfile, options: Any = None) -> Any:
    """An InferenceSession for ``path``; unreadable or non-ONNX files become ArtifactError."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file '{path}' does not exist", "check the path")
    try:
        return ort.InferenceSession(str(path), options or session_options(profile),
                                    providers=list(profile.runtime["providers"]))
    except Exception as exc:  # onnxruntime raises several unrelated exception types here
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"onnxruntime cannot load '{path}': {first}",
                            "pass a complete, valid ONNX model (re-export it)") from None


def run_batches(session: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run ``x`` through the session in chunks, honouring a fixed batch dimension by padding."""
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        n = len(chunk)
        if n < step and isinstance(fixed, int) and fixed > 0:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
        outs.append(session.run(None, {name: np.ascontiguousarray(chunk, dtype=np.float32)})[0][:n])
    return np.concatenate(outs)
