"""Encoder features of every image, computed once and kept on disk: the encoder is frozen, so training the
decoder never needs to run the CNN again.

Each image goes through service/artifact/image.py's image_tensor (the path the server takes) and the
EfficientNet-Lite0 feature map; the cache holds (N, D, rows, cols) as float16 (features are ReLU6 outputs in
[0, 6], where float16 keeps 3 decimal digits) in one .npy. Its name carries the image size, the encoder
weights' sha256 and a hash of the image list, so a change of any of them makes a new cache and never reads
a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.artifact.image import ImageSpec, image_tensor
from training.image_encoder import pretrained, weights_sha256


def cache_path(cache_dir: str | Path, spec: ImageSpec, names: Sequence[str]) -> Path:
    listing = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"lite0-{weights_sha256()[:12]}-{spec.height}x{spec.width}-{listing}.npy"


def image_features(root: str | Path, names: Sequence[str], spec: ImageSpec, cache_dir: str | Path,
                   batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """(N, D, rows, cols) float16 features of root/images/<name> for each name, from the cache when it is there."""
    path = cache_path(cache_dir, spec, names)
    if path.is_file():
        return np.load(path, mmap_mode="r")
    cnn = pretrained()
    images = Path(root) / "images"
    out: np.ndarray | None = None
    with torch.no_grad():
        for i in tqdm(range(0, len(names), batch_size), desc=f"encoding images {spec.height}x{spec.width}",
                      unit="batch", disable=not progress, dynamic_ncols=True):
            batch = np.stack([image_tensor((images / n).read_bytes(), spec) for n in names[i : i + batch_size]])
            f = cnn.features(torch.from_numpy(batch)).numpy()  # (b, D, rows, cols)
            if out is None:
                out = np.empty((len(names), *f.shape[1:]), dtype=np.float16)
            out[i : i + len(batch)] = f
    assert out is not None, "no images to encode"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)  # a crash mid-write never leaves a cache that looks complete
    path.with_suffix(".json").write_text(json.dumps({"images": len(names), "root": str(root),
                                                     "encoder_sha256": weights_sha256(), **spec.to_dict()}))
    return out
