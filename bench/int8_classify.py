"""A classifier's fp32 graph vs its static int8 graph, in-process, interleaved: texts per second by batch size.

Both graphs run behind the service's own ClassifierRunner (texts sorted by length and run in groups of
similar length, under the server's default token budget) on the validation sentences meta.json names,
batches of B consecutive sentences; rounds alternate between the graphs, so a busy machine slows both alike,
and the figure is the median over rounds. With one intra-op thread, the thread's CPU time is also reported
(the step's own work even on a busy machine). The int8 graph is built here from the fp32 artifact
(training/int8_classifier.py), exactly as `python -m training quantize` writes it.

    python -m bench.int8_classify models/sst2-bilstm/1 [--batches 1,8,64 --threads 1,2 --rounds 9]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx

from service import artifact
from service.artifact import Meta
from service.artifact.session import make_session
from service.artifact.tokenizer import Tokenizer
from service.models.runners import ClassifierRunner
from service.settings import Settings
from training import int8_classifier, ort_eval


def measure(src: Path, threads: list[int], batches: list[int], rounds: int, data_root: Path) -> dict:
    """{"t{threads}_b{batch}": {graph: {"texts_per_s"[, "cpu_us_per_text"]}, "int8_vs_fp32"}}."""
    meta, tok = Meta.load(src / artifact.META_FILE), Tokenizer.load(src / artifact.TOKENIZER_FILE)
    rows, _ = ort_eval.classifier_val(meta, tok, data_root)
    graphs = {"fp32": (src / artifact.MODEL_FILE).read_bytes(),
              "static_int8": int8_classifier.build(onnx.load(str(src / artifact.MODEL_FILE))).SerializeToString()}
    out: dict = {}
    for n in threads:
        runners = {name: ClassifierRunner(make_session(g, n, 1), meta, tok) for name, g in graphs.items()}
        for batch in batches:
            groups = [rows[i : i + batch] for i in range(0, len(rows) - batch + 1, batch)][: max(1, 256 // batch)]
            wall: dict[str, list[float]] = {name: [] for name in runners}
            cpu: dict[str, list[float]] = {name: [] for name in runners}
            for r in range(rounds):
                for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
                    runner = runners[name]
                    runner.run(groups[0], Settings.classify_max_batch_tokens)
                    t0, c0 = time.perf_counter(), time.thread_time()
                    for group in groups:
                        runner.run(group, Settings.classify_max_batch_tokens)
                    texts = len(groups) * batch
                    wall[name].append((time.perf_counter() - t0) / texts)
                    cpu[name].append((time.thread_time() - c0) / texts)
            med = {name: float(np.median(v)) for name, v in wall.items()}
            row: dict = {name: {"texts_per_s": round(1 / m)} for name, m in med.items()}
            if n == 1:
                for name, v in cpu.items():
                    row[name]["cpu_us_per_text"] = round(float(np.median(v)) * 1e6, 1)
            row["int8_vs_fp32"] = round(med["fp32"] / med["static_int8"], 2)
            out[f"t{n}_b{batch}"] = row
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="an fp32 LSTM classifier, e.g. models/sst2-bilstm/1")
    p.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated")
    p.add_argument("--batches", default="1,8,64", help="texts per call, comma-separated")
    p.add_argument("--rounds", type=int, default=9, help="alternating rounds; the figure is their median")
    p.add_argument("--data-root", type=Path, default=Path("."), help="what meta.json's data paths are relative to")
    args = p.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    print(json.dumps(measure(args.artifact, ints(args.threads), ints(args.batches), args.rounds, args.data_root), indent=1))


if __name__ == "__main__":
    main()
