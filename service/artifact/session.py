"""How an artifact's graph is opened to run: the ONNX Runtime CPU session the service serves it with.

It lives with the artifact contract so that training (quantize's speed figures in meta.json) measures a graph
in the session it will be served in; it is the one module of the package that needs onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def make_session(model: Path | bytes, intra_op_threads: int, inter_op_threads: int) -> ort.InferenceSession:
    """A CPU session with explicit thread counts, from a file or (the service's way) from bytes already read.

    Spinning is off: on a few cores, idle intra-op threads that spin steal the CPU the event
    loop and the decode thread need between calls.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
