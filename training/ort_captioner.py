"""A captioner artifact run by ONNX Runtime and numpy alone (no torch): the torch-free reference captioner.

    python -m training.ort_captioner models/flickr8k-captioner/1 ../shared/data/flickr8k/images/1000268201_693b08cb0e.jpg

Export uses it to check that the graphs caption exactly as torch does; the search is training/search.py,
shared with the torch reference, with the LSTM's (h, c) packed as one (2, B, H) state array.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from service import artifact
from service.artifact import Meta
from service.artifact.image import ImageSpec, image_tensor
from training.ort_translator import session
from training.search import Specials, beam_from, greedy_from


class OrtCaptionStepper:
    """encoder.onnx and decoder.onnx as a search.Stepper over the packed state (h, c)."""

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession) -> None:
        self.encoder, self.decoder = encoder, decoder

    def encode_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, 3, H, W) -> memory (B, R, D), keys (B, R, A), packed state (2, B, H)."""
        memory, keys, h0, c0 = self.encoder.run([artifact.MEMORY, artifact.KEYS, "h0", "c0"], {artifact.IMAGE: images})
        return memory, keys, np.concatenate([h0, c0], axis=0)

    def step(self, prev: np.ndarray, state: np.ndarray, memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, hn, cn, attn = self.decoder.run([artifact.LOGITS, "hn", "cn", artifact.ATTENTION], {
            artifact.PREV_TOKEN: prev, "h0": state[:1], "c0": state[1:], artifact.MEMORY: memory, artifact.KEYS: keys,
            artifact.SRC_MASK: mask})
        return logits, np.concatenate([hn, cn], axis=0), attn


def caption_images(stepper: OrtCaptionStepper, images: np.ndarray, sp: Specials, max_tokens: int, beam_size: int = 1,
                   alpha: float = 0.0, batch_size: int = 64) -> list[list[int]]:
    """Word ids (EOS excluded) of every image tensor (N, 3, H, W), encoded and decoded in batches."""
    out: list[list[int]] = []
    for i in range(0, len(images), batch_size):
        memory, keys, state = stepper.encode_images(images[i : i + batch_size])
        mask, limit = np.ones(memory.shape[:2], dtype=bool), np.full(len(memory), max_tokens, dtype=np.int64)
        if beam_size == 1:
            out += greedy_from(stepper, memory, keys, state, mask, limit, sp)
        else:
            out += beam_from(stepper, memory, keys, state, mask, limit, sp, beam_size, alpha)
    return out


class OrtCaptioner:
    """A captioner artifact directory: its meta.json, tokenizer and graphs."""

    def __init__(self, model_dir: str | Path, threads: int = 1) -> None:
        d = Path(model_dir)
        self.meta = Meta.load(d / artifact.META_FILE)
        if self.meta.kind != "captioner":
            raise ValueError(f"{d} holds a {self.meta.kind}, not a captioner")
        c = self.meta.captioner
        self.target = Tokenizer.from_file(str(d / c["tokenizer"]["file"]))
        self.stepper = OrtCaptionStepper(session(d / c["encoder"]["file"], threads), session(d / c["decoder"]["file"], threads))
        ids = c["special_ids"]
        self.specials = Specials(pad=ids["pad"], bos=ids["bos"], eos=ids["eos"])
        self.spec = ImageSpec(c["image"]["height"], c["image"]["width"])
        self.max_tokens = c["max_len"]["tokens"]

    def caption(self, images: Sequence[bytes], beam_size: int = 1, alpha: float = 0.0) -> list[str]:
        tensors = np.stack([image_tensor(b, self.spec) for b in images])
        ids = caption_images(self.stepper, tensors, self.specials, self.max_tokens, beam_size, alpha)
        return self.target.decode_batch(ids, skip_special_tokens=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m training.ort_captioner", description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("images", nargs="+", help="JPEG or PNG files")
    p.add_argument("--beam", type=int, help="beam size; 1 = greedy (default: the one meta.json records)")
    args = p.parse_args()
    cap = OrtCaptioner(args.model_dir)
    beam = cap.meta.captioner["beam"]
    size = beam["beam_size"] if args.beam is None else args.beam
    for path, text in zip(args.images, cap.caption([Path(f).read_bytes() for f in args.images], size,
                                                   beam["length_penalty"]), strict=True):
        print(f"{path}\t{text}")


if __name__ == "__main__":
    main()
