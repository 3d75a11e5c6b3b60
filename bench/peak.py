"""The machine's own peak, measured in the same run as the serving figures: an sgemm and an int8 GEMM.

numpy's sgemm runs in a subprocess with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its
environment: set for old OpenBLAS builds, they slow a current numpy's kernels well below the
hardware. The int8 GEMM is ONNX Runtime's MatMulInteger (uint8 x int8 -> int32), the kernel an int8
graph's projections run on. Each is timed with 1 and 2 threads; ops count a multiply-add as two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from service.artifact import Meta

N = 1024  # square GEMM side: large enough for peak, small enough to time in under a second

_SGEMM = """
import json, sys, time, numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
a @ b
t = time.perf_counter()
for _ in range(reps):
    a @ b
print(json.dumps(2 * n**3 * reps / (time.perf_counter() - t) / 1e9))
"""


def sgemm_gflops(threads: int, n: int = N, reps: int = 20) -> float:
    """numpy float32 GEMM, GFLOP/s, in a clean subprocess with `threads` BLAS threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", _SGEMM, str(n), str(reps)], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return float(json.loads(out.stdout))


def int8_gops(threads: int, n: int = N, reps: int = 20) -> float:
    """ONNX Runtime MatMulInteger (uint8 activations x int8 weights), GOP/s."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])])
    # IR 8 is what opset 17 needs; onnx's default (its newest IR) can be newer than ONNX Runtime reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8), "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    sess.run(None, feed)
    t = time.perf_counter()
    for _ in range(reps):
        sess.run(None, feed)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def step_flops_per_row(meta: Meta) -> float:
    """Multiply-add work of one decode step for one row: the recurrent layers' gate matmuls and the output projection.

    LSTM has 4 gates, GRU 3, a vanilla RNN 1; layer 1 reads the embedding (n_embd), the others hidden_size.
    """
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[meta.cell]
    s = meta.sizes
    H, E, L, V = s["hidden_size"], s["n_embd"], s["n_layer"], s["vocab_size"]
    macs = sum(gates * H * ((E if layer == 0 else H) + H) for layer in range(L)) + H * V
    return 2.0 * macs


def peaks(threads: tuple[int, ...] = (1, 2), quick: bool = False) -> dict[str, dict[str, float]]:
    """{"sgemm_gflops": {"1": .., "2": ..}, "int8_gemm_gops": {...}}."""
    reps = 5 if quick else 20
    return {"sgemm_gflops": {str(t): round(sgemm_gflops(t, reps=reps), 1) for t in threads},
            "int8_gemm_gops": {str(t): round(int8_gops(t, reps=reps), 1) for t in threads}}
