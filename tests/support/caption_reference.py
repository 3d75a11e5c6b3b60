"""The reference a served caption is checked against: the artifact's two graphs run in process by ONNX Runtime, one
image at a time, greedy, in a plain loop (no batching, no engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import tokenizers

from service import artifact
from service.artifact import Meta
from service.artifact.image import ImageSpec, image_tensor


class ReferenceCaptioner:
    def __init__(self, version_dir: Path) -> None:
        self.meta = Meta.load(version_dir / artifact.META_FILE)
        c = self.meta.captioner
        self.spec = ImageSpec(c["image"]["height"], c["image"]["width"])
        self.encoder = ort.InferenceSession(str(version_dir / artifact.ENCODER_FILE), providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(version_dir / artifact.DECODER_FILE), providers=["CPUExecutionProvider"])
        self.tok = tokenizers.Tokenizer.from_file(str(version_dir / artifact.TARGET_TOKENIZER_FILE))
        self.bos, self.eos = c["special_ids"]["bos"], c["special_ids"]["eos"]
        self.max_tokens = c["max_len"]["tokens"]

    def greedy(self, image: bytes) -> tuple[list[int], np.ndarray, bool]:
        """Token ids (without EOS), each step's attention (steps, R), and whether it ended with EOS."""
        memory, keys, h, c = self.encoder.run(None, {artifact.IMAGE: image_tensor(image, self.spec)[None]})
        mask = np.ones(memory.shape[:2], bool)
        prev, ids, attention = np.array([self.bos]), [], []
        for _ in range(self.max_tokens):
            logits, h, c, a = self.decoder.run(None, {artifact.PREV_TOKEN: prev, "h0": h, "c0": c, artifact.MEMORY: memory,
                                                      artifact.KEYS: keys, artifact.SRC_MASK: mask})
            attention.append(a[0])
            token = int(logits[0].argmax())
            if token == self.eos:
                return ids, np.stack(attention), True
            ids.append(token)
            prev = np.array([token])
        return ids, np.stack(attention), False

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)
