"""How long EfficientNet-Lite0 takes on one image under ONNX Runtime at each input size: the measurement that
chooses the captioner's image size (a request's first word waits for the encoder).

    python -m training.encoder_bench --sizes 128 160 224 --threads 2

Prints, per size, the feature grid, and the wall and CPU milliseconds of one batch-1 call (median and best of
--repeats). Figures for the docs come from a quiet machine: on a busy one the second thread has no core.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.export import OPSET
from training.image_encoder import EfficientNetLite0, pretrained
from training.ort_translator import session


class _Features(nn.Module):
    def __init__(self, cnn: EfficientNetLite0) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, image: Tensor) -> Tensor:
        return self.cnn.features(image)


def time_size(cnn: EfficientNetLite0, side: int, threads: int, repeats: int, directory: Path) -> dict[str, Any]:
    path = directory / f"encoder-{side}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the padding fixed to this size
        torch.onnx.export(_Features(cnn).eval(), (torch.zeros(2, 3, side, side),), str(path), dynamo=False,
                          opset_version=OPSET, input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})
    sess = session(path, threads)
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
    for _ in range(5):
        features = sess.run(None, {"image": image})[0]
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        sess.run(None, {"image": image})
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"side": side, "grid": f"{features.shape[2]}x{features.shape[3]}", "threads": threads,
            "wall_ms_p50": round(1e3 * float(np.median(wall)), 2), "wall_ms_min": round(1e3 * min(wall), 2),
            "cpu_ms_p50": round(1e3 * float(np.median(cpu)), 2)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m training.encoder_bench", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224], help="square input sides")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    cnn = pretrained()
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sizes:
            print(json.dumps(time_size(cnn, side, args.threads, args.repeats, Path(tmp))))


if __name__ == "__main__":
    main()
