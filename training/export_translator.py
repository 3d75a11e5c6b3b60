"""Export a translation checkpoint as a `translator` artifact: encoder.onnx, decoder.onnx (one step), the two
tokenizers and meta.json, verified before anything is written:

- ONNX Runtime vs torch < PARITY_TOL on both graphs, at several batch sizes and source lengths;
- a sentence padded inside a batch encodes and decodes as it does alone (< SELF_TOL);
- greedy translations through ONNX Runtime equal torch's, token for token, on the whole validation set.

Then BLEU (sacrebleu, detokenized, cased) of the artifact itself, greedy and beam search, on validation and test.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import sacrebleu
import tokenizers
import torch

from service import artifact
from service.artifact import Meta
from training.checkpoint import config_of, model_of
from training.config import TrainConfig
from training.export import OPSET, PARITY_TOL, SELF_TOL, ExportError, _max_diff, _versions, best_threads
from training.ort_translator import OrtStepper, session
from training.parallel import read_pairs
from training.search import LengthRule, translate_all
from training.seq2seq import DecoderStepGraph, EncoderGraph, Seq2Seq
from training.subword import SPECIALS, TokenizerPair
from training.translate import SPECIAL_IDS, TorchStepper, bleu

STATE_IN, STATE_OUT = "h0", "hn"  # artifact.state_specs names for a GRU


def _export_graphs(model: Seq2Seq, enc_path: Path, dec_path: Path) -> None:
    """Example inputs with B = 2 and S = 7 (no size 1 an exporter could specialise); every size dynamic."""
    src, lengths = torch.randint(4, model.cfg.src_vocab, (2, 7)), torch.tensor([7, 4])
    batch_src = {0: "batch", 1: "src_len"}
    # The wrappers must be in eval mode themselves: export restores each module's own mode afterwards,
    # and a wrapper in training mode would put the model back into training (dropout on).
    torch.onnx.export(EncoderGraph(model).eval(), (src, lengths), str(enc_path), dynamo=False, opset_version=OPSET,
                      input_names=[artifact.SRC, artifact.SRC_LENGTHS],
                      output_names=[artifact.MEMORY, artifact.KEYS, STATE_IN],
                      dynamic_axes={artifact.SRC: batch_src, artifact.SRC_LENGTHS: {0: "batch"},
                                    artifact.MEMORY: batch_src, artifact.KEYS: batch_src, STATE_IN: {1: "batch"}})
    with torch.no_grad():
        memory, keys, h0 = model.encode(src, lengths)
    mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    prev = torch.full((2,), SPECIAL_IDS.bos)
    torch.onnx.export(DecoderStepGraph(model).eval(), (prev, h0, memory, keys, mask), str(dec_path), dynamo=False,
                      opset_version=OPSET,
                      input_names=[artifact.PREV_TOKEN, STATE_IN, artifact.MEMORY, artifact.KEYS, artifact.SRC_MASK],
                      output_names=[artifact.LOGITS, STATE_OUT, artifact.ATTENTION],
                      dynamic_axes={artifact.PREV_TOKEN: {0: "batch"}, STATE_IN: {1: "batch"}, artifact.MEMORY: batch_src,
                                    artifact.KEYS: batch_src, artifact.SRC_MASK: batch_src, artifact.LOGITS: {0: "batch"},
                                    STATE_OUT: {1: "batch"}, artifact.ATTENTION: batch_src})


def verify_graphs(model: Seq2Seq, ort_step: OrtStepper, seed: int = 0) -> float:
    """Largest |ORT - torch| over both graphs' outputs, B in {1, 3}, S in {1, 17}, random lengths and tokens."""
    g = torch.Generator().manual_seed(seed)
    torch_step, worst = TorchStepper(model), 0.0
    for B in (1, 3):
        for S in (1, 17):
            src = torch.randint(4, model.cfg.src_vocab, (B, S), generator=g).numpy()
            lengths = torch.randint(1, S + 1, (B,), generator=g).numpy()
            lengths[0] = S
            want, got = torch_step.encode(src, lengths), ort_step.encode(src, lengths)
            real = (np.arange(S)[None, :] < lengths[:, None])[:, :, None]  # padded positions are masked out anyway
            worst = max(worst, _max_diff(want[0] * real, got[0] * real), _max_diff(want[1] * real, got[1] * real),
                        _max_diff(want[2], got[2]))
            memory, keys, h = want
            mask = real[:, :, 0]
            prev = torch.randint(0, model.cfg.tgt_vocab, (B,), generator=g).numpy()
            for _ in range(3):  # a few chained steps from the same inputs
                a, b = torch_step.step(prev, h, memory, keys, mask), ort_step.step(prev, h, memory, keys, mask)
                worst = max(worst, *(_max_diff(x, y) for x, y in zip(a, b, strict=True)))
                h, prev = a[1], a[0].argmax(1)
    if worst >= PARITY_TOL:
        raise ExportError(f"ONNX Runtime differs from torch by {worst:.3g} (limit {PARITY_TOL})")
    return worst


def verify_padding(ort_step: OrtStepper, src_vocab: int, steps: int = 5, seed: int = 0) -> float:
    """A sentence inside a padded batch (among longer and shorter ones) gives the encoder outputs at its real
    positions, the initial state, and `steps` decoder steps' logits, state and attention that it gives alone."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(4, src_vocab, n) for n in (23, 4, 11)]
    src = np.full((3, 23), SPECIAL_IDS.pad, dtype=np.int64)
    for i, r in enumerate(rows):
        src[i, : len(r)] = r
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    batch, alone = ort_step.encode(src, lengths), ort_step.encode(src[1:2, :4], lengths[1:2])
    worst = max(_max_diff(batch[0][1, :4], alone[0][0]), _max_diff(batch[1][1, :4], alone[1][0]),
                _max_diff(batch[2][:, 1], alone[2][:, 0]))
    mask_b = np.arange(23)[None, :] < lengths[:, None]
    mask_a = np.ones((1, 4), dtype=bool)
    hb, ha = batch[2], alone[2]
    prev = np.full(3, SPECIAL_IDS.bos, dtype=np.int64)
    for _ in range(steps):
        ob = ort_step.step(prev, hb, batch[0], batch[1], mask_b)
        oa = ort_step.step(prev[1:2], ha, alone[0], alone[1], mask_a)
        worst = max(worst, _max_diff(ob[0][1], oa[0][0]), _max_diff(ob[1][:, 1], oa[1][:, 0]),
                    _max_diff(ob[2][1, :4], oa[2][0]), float(np.abs(ob[2][1, 4:]).max()))
        hb, ha, prev = ob[1], oa[1], ob[0].argmax(1)
    if worst >= SELF_TOL:
        raise ExportError(f"a sentence padded inside a batch differs from the sentence alone by {worst:.3g} "
                          f"(limit {SELF_TOL})")
    return worst


def verify_greedy(model: Seq2Seq, ort_step: OrtStepper, seqs: list[np.ndarray], rule: LengthRule) -> list[list[int]]:
    """Greedy token ids of every sentence through torch and through ORT; any difference is an ExportError."""
    want = translate_all(TorchStepper(model), seqs, SPECIAL_IDS, rule)
    got = translate_all(ort_step, seqs, SPECIAL_IDS, rule)
    diff = [i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b]
    if diff:
        i = diff[0]
        raise ExportError(f"greedy ONNX Runtime translations differ from torch's on {len(diff)} of {len(seqs)} "
                          f"validation sentences, first on line {i + 1}: {got[i]} vs {want[i]}")
    return got


def _bleu_of(ort_step: OrtStepper, tok: TokenizerPair, stem: str, cfg: TrainConfig, rule: LengthRule,
             greedy_ids: list[list[int]] | None = None) -> dict[str, float]:
    """Greedy and beam BLEU of the exported graphs on one split."""
    pairs = read_pairs(stem, cfg.data.source, cfg.data.target)
    seqs = tok.encode_source(pairs.source)
    greedy_ids = greedy_ids or translate_all(ort_step, seqs, SPECIAL_IDS, rule)
    beam_ids = translate_all(ort_step, seqs, SPECIAL_IDS, rule, cfg.decode.beam_size, cfg.decode.length_penalty,
                             batch_size=32)
    return {"greedy": bleu(tok.decode_target(greedy_ids), pairs.target)[0],
            f"beam{cfg.decode.beam_size}": bleu(tok.decode_target(beam_ids), pairs.target)[0]}


def _translator_section(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.decode
    return {
        "encoder": {"file": artifact.ENCODER_FILE, "inputs": [artifact.SRC, artifact.SRC_LENGTHS],
                    "outputs": [artifact.MEMORY, artifact.KEYS, STATE_IN]},
        "decoder": {"file": artifact.DECODER_FILE,
                    "inputs": [artifact.PREV_TOKEN, STATE_IN, artifact.MEMORY, artifact.KEYS, artifact.SRC_MASK],
                    "outputs": [artifact.LOGITS, STATE_OUT, artifact.ATTENTION]},
        "tokenizers": {"source": artifact.SOURCE_TOKENIZER_FILE, "target": artifact.TARGET_TOKENIZER_FILE,
                       "library": "tokenizers", "level": cfg.data.level},
        "languages": {"source": cfg.data.source, "target": cfg.data.target},
        "special_ids": {"pad": SPECIAL_IDS.pad, "unk": SPECIALS.index("<unk>"), "bos": SPECIAL_IDS.bos,
                        "eos": SPECIAL_IDS.eos},
        "max_len": {"a": d.max_len_a, "b": d.max_len_b,
                    "rule": "at most floor(a * source_tokens + b) target tokens, EOS included"},
        "beam": {"beam_size": d.beam_size, "length_penalty": d.length_penalty,
                 "length_penalty_form": "GNMT: log P / ((5 + |Y|) / 6) ** length_penalty, |Y| counting EOS"},
    }


def export_translator(ckpt: dict[str, Any], out_dir: Path, description: str = "") -> Meta:
    """Export, verify, measure BLEU, and only then move the files into out_dir (decoder.onnx last)."""
    cfg = config_of(ckpt)
    model, tok = model_of(ckpt)
    assert isinstance(model, Seq2Seq) and isinstance(tok, TokenizerPair)
    if (out_dir / artifact.DECODER_FILE).exists() or (out_dir / artifact.ENCODER_FILE).exists():
        raise FileExistsError(f"{out_dir} already holds a model; export to a new version directory")
    rule = LengthRule(cfg.decode.max_len_a, cfg.decode.max_len_b)
    with tempfile.TemporaryDirectory() as tmp:
        enc_path, dec_path = Path(tmp) / artifact.ENCODER_FILE, Path(tmp) / artifact.DECODER_FILE
        _export_graphs(model, enc_path, dec_path)
        for path in (enc_path, dec_path):
            onnx.checker.check_model(str(path))
        ort_step = OrtStepper(session(enc_path), session(dec_path))
        val = read_pairs(cfg.data.val_path, cfg.data.source, cfg.data.target)
        val_greedy = verify_greedy(model, ort_step, tok.encode_source(val.source), rule)
        checks = {"max_abs_diff_vs_torch": verify_graphs(model, ort_step),
                  "padded_vs_alone_max_abs_diff": verify_padding(ort_step, model.cfg.src_vocab),
                  "greedy_val_equal_to_torch": len(val_greedy)}
        scores = {"val": _bleu_of(ort_step, tok, cfg.data.val_path, cfg, rule, val_greedy)}
        if cfg.data.test_path:
            scores["test"] = _bleu_of(ort_step, tok, cfg.data.test_path, cfg, rule)
        c = model.cfg
        S = 15
        feed = {artifact.PREV_TOKEN: np.full(1, SPECIAL_IDS.bos), STATE_IN: np.zeros((c.n_layer, 1, c.dec_hidden), np.float32),
                artifact.MEMORY: np.zeros((1, S, 2 * c.enc_hidden), np.float32),
                artifact.KEYS: np.zeros((1, S, c.dec_hidden), np.float32), artifact.SRC_MASK: np.ones((1, S), bool)}
        meta = Meta(
            kind="translator",
            cell="gru",
            sizes={"n_layer": c.n_layer, "hidden_size": c.dec_hidden, "vocab_size": c.tgt_vocab,
                   "src_vocab_size": c.src_vocab, "n_embd": c.n_embd, "enc_hidden": c.enc_hidden,
                   "memory_size": 2 * c.enc_hidden, "n_params": sum(p.numel() for p in model.parameters())},
            state=artifact.state_specs("gru", c.n_layer, c.dec_hidden),
            training={"config": ckpt["config"], "step": ckpt["step"], "train_seconds": round(ckpt["elapsed_s"], 1),
                      "cpu_seconds": round(ckpt["cpu_s"], 1), "target_tokens_seen": ckpt.get("seen", 0)},
            data=ckpt["data"],
            evaluation={**ckpt.get("metrics", {}), "bleu": scores, "export_checks": checks},
            versions={**_versions(), "tokenizers": tokenizers.__version__, "sacrebleu": sacrebleu.__version__},
            runtime=best_threads(dec_path, feed),
            description=description,
            translator=_translator_section(cfg),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        tok.source.save(str(Path(tmp) / artifact.SOURCE_TOKENIZER_FILE))
        tok.target.save(str(Path(tmp) / artifact.TARGET_TOKENIZER_FILE))
        meta.save(Path(tmp) / artifact.META_FILE)
        for name in (artifact.SOURCE_TOKENIZER_FILE, artifact.TARGET_TOKENIZER_FILE, artifact.META_FILE,
                     artifact.ENCODER_FILE, artifact.DECODER_FILE):
            shutil.move(str(Path(tmp) / name), out_dir / name)
    return meta
