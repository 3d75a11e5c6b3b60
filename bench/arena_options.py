"""ONNX Runtime's CPU arena after a large call: RSS with the default arena, the arena off, arena shrinkage, and a
shared arena that grows by what is asked (arena_extend_strategy kSameAsRequested).

    python -m bench.arena_options --model models/sst2-bilstm/1/model.onnx --batch 16 --tokens 2048

Each option runs in a fresh process: warm-up calls, one call of batch x tokens, then small calls again.
service/models/runners.py runs variable-sized calls with the shrinkage run option this chose.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

OPTIONS = ("default", "noarena", "shrink", "same_as_requested")


def rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS"))) / 1024


def measure(model: str, option: str, batch: int, tokens: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    run = None
    if option == "noarena":
        opts.enable_cpu_mem_arena = False
    elif option == "shrink":
        run = ort.RunOptions()
        run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    elif option == "same_as_requested":  # a CPU arena option only through an environment-wide allocator
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))  # max, kSameAsRequested, defaults
        opts.add_session_config_entry("session.use_env_allocators", "1")
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)

    def call(b: int, t: int) -> None:
        sess.run(None, {"tokens": rng.integers(2, 1000, (b, t)), "lengths": np.full(b, t)}, run)

    for _ in range(5):
        call(8, 20)
    base = rss_mb()
    call(batch, tokens)
    after = rss_mb()
    for _ in range(5):
        call(8, 20)
    return {"option": option, "tokens_in_call": batch * tokens, "rss_before_mb": round(base),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_after_big_call_mb": round(after), "rss_after_small_calls_mb": round(rss_mb())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/sst2-bilstm/1/model.onnx", help="a classifier graph (tokens, lengths)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--option", choices=OPTIONS, help=argparse.SUPPRESS)  # one measurement, in a child process
    a = ap.parse_args()
    if a.option:
        print(json.dumps(measure(a.model, a.option, a.batch, a.tokens)))
        return
    for option in OPTIONS:
        subprocess.run([sys.executable, "-m", "bench.arena_options", "--model", a.model, "--batch", str(a.batch),
                        "--tokens", str(a.tokens), "--option", option], check=True)


if __name__ == "__main__":
    main()
