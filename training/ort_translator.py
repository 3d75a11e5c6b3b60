"""A translator artifact run by ONNX Runtime and numpy alone (no torch): the torch-free reference decoder.

    python -m training.ort_translator models/multi30k-de-en/1 "Ein Hund rennt über die Wiese."

Export uses it to check that the graphs translate exactly as torch does; the service can compare its own
batched decoder with it. The search itself is training/search.py, shared with the torch reference.
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
from training.search import LengthRule, Specials, translate_all


def session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OrtStepper:
    """encoder.onnx and decoder.onnx as search.Stepper."""

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession) -> None:
        self.encoder, self.decoder = encoder, decoder

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        memory, keys, h0 = self.encoder.run([artifact.MEMORY, artifact.KEYS, "h0"],
                                            {artifact.SRC: src, artifact.SRC_LENGTHS: lengths})
        return memory, keys, h0

    def step(self, prev: np.ndarray, h: np.ndarray, memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, hn, attn = self.decoder.run([artifact.LOGITS, "hn", artifact.ATTENTION], {
            artifact.PREV_TOKEN: prev, "h0": h, artifact.MEMORY: memory, artifact.KEYS: keys, artifact.SRC_MASK: mask})
        return logits, hn, attn


class OrtTranslator:
    """A translator artifact directory: its meta.json, tokenizers and graphs."""

    def __init__(self, model_dir: str | Path, threads: int = 1) -> None:
        d = Path(model_dir)
        self.meta = Meta.load(d / artifact.META_FILE)
        if self.meta.kind != "translator":
            raise ValueError(f"{d} holds a {self.meta.kind}, not a translator")
        t = self.meta.translator
        self.source = Tokenizer.from_file(str(d / t["tokenizers"]["source"]))
        self.target = Tokenizer.from_file(str(d / t["tokenizers"]["target"]))
        self.stepper = OrtStepper(session(d / t["encoder"]["file"], threads), session(d / t["decoder"]["file"], threads))
        ids = t["special_ids"]
        self.specials = Specials(pad=ids["pad"], bos=ids["bos"], eos=ids["eos"])
        self.rule = LengthRule(t["max_len"]["a"], t["max_len"]["b"])

    def translate_ids(self, sources: Sequence[str], beam_size: int = 1, alpha: float = 0.0) -> list[list[int]]:
        seqs = [np.asarray(e.ids, dtype=np.int64) for e in self.source.encode_batch(list(sources))]
        return translate_all(self.stepper, seqs, self.specials, self.rule, beam_size, alpha)

    def translate(self, sources: Sequence[str], beam_size: int = 1, alpha: float = 0.0) -> list[str]:
        ids = self.translate_ids(sources, beam_size, alpha)
        return self.target.decode_batch(ids, skip_special_tokens=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m training.ort_translator", description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("sentences", nargs="+")
    p.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy")
    p.add_argument("--alpha", type=float, help="GNMT length penalty (default: the one meta.json records)")
    args = p.parse_args()
    tr = OrtTranslator(args.model_dir)
    alpha = tr.meta.translator["beam"]["length_penalty"] if args.alpha is None else args.alpha
    for line in tr.translate(args.sentences, args.beam, alpha):
        print(line)


if __name__ == "__main__":
    main()
