"""The decode step of an LSTM or GRU char LM, fp32 vs dynamic int8 vs static int8, interleaved in one process.

Each of the three graphs is built from the same fp32 artifact (dynamic: ONNX Runtime's quantize_dynamic, which
has no int8 GRU op and so quantizes only a GRU's head; static: training/int8_lstm.py or int8_gru.py) and
timed in rounds that alternate between them, so a busy machine slows all three alike; the figure is the
median over rounds of a round's mean step time. Prints one JSON object: per thread count and batch size, each
graph's microseconds per step and chars/s, and the ratios to fp32. With one intra-op thread ONNX Runtime runs
every kernel on the calling thread, so the thread's CPU time (cpu_us_per_step) is the step's own work even on
a busy machine, where wall time also counts the waits.

    python -m bench.int8_step models/shakespeare-lstm/1 [--rounds 15 --calls 50 --threads 1,2 --batches 1,64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from service import artifact
from service.artifact import Meta
from service.artifact.session import make_session
from training.quantize import dynamic_int8, static_int8


def _feed(meta: Meta, batch: int) -> dict[str, np.ndarray]:
    state = {s.input: np.zeros((s.n_layer, batch, s.hidden_size), np.float32) for s in meta.state}
    return {artifact.TOKENS: np.zeros((batch, 1), np.int64), **state}


def measure(src: Path, threads: list[int], batches: list[int], rounds: int, calls: int) -> dict:
    """{"t{threads}_b{batch}": {graph: {"us_per_step", "chars_per_s"[, "cpu_us_per_step"]}, "vs_fp32"[, "cpu_vs_fp32"]}}."""
    meta = Meta.load(src / artifact.META_FILE)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": src / artifact.MODEL_FILE, "dynamic_int8": Path(tmp) / "dynamic.onnx",
                 "static_int8": Path(tmp) / "static.onnx"}
        dynamic_int8(paths["fp32"], paths["dynamic_int8"])
        static_int8(paths["fp32"], paths["static_int8"])
        for n in threads:
            sessions = {name: make_session(p, n, 1) for name, p in paths.items()}
            for batch in batches:
                feed = _feed(meta, batch)
                times: dict[str, list[float]] = {name: [] for name in sessions}
                cpu: dict[str, list[float]] = {name: [] for name in sessions}
                for r in range(rounds):
                    order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
                    for name in order:
                        sess = sessions[name]
                        sess.run(None, feed)
                        t0, c0 = time.perf_counter(), time.thread_time()
                        for _ in range(calls):
                            sess.run(None, feed)
                        cpu[name].append((time.thread_time() - c0) / calls)
                        times[name].append((time.perf_counter() - t0) / calls)
                med = {name: float(np.median(v)) for name, v in times.items()}
                row = {name: {"us_per_step": round(m * 1e6, 1), "chars_per_s": round(batch / m)} for name, m in med.items()}
                row["vs_fp32"] = {name: round(med["fp32"] / m, 2) for name, m in med.items() if name != "fp32"}
                if n == 1:
                    med_cpu = {name: float(np.median(v)) for name, v in cpu.items()}
                    for name, m in med_cpu.items():
                        row[name]["cpu_us_per_step"] = round(m * 1e6, 1)
                    row["cpu_vs_fp32"] = {name: round(med_cpu["fp32"] / m, 2) for name, m in med_cpu.items() if name != "fp32"}
                out[f"t{n}_b{batch}"] = row
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="an fp32 LSTM or GRU char LM, e.g. models/shakespeare-gru/1")
    p.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated")
    p.add_argument("--batches", default="1,64", help="batch sizes, comma-separated")
    p.add_argument("--rounds", type=int, default=15, help="alternating rounds; the figure is their median")
    p.add_argument("--calls", type=int, default=50, help="decode steps per graph per round")
    args = p.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    print(json.dumps(measure(args.artifact, ints(args.threads), ints(args.batches), args.rounds, args.calls), indent=1))


if __name__ == "__main__":
    main()
