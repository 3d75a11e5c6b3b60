"""Translation: batching, search, BLEU, training with exact resume, both directions, and the verified export
(ONNX Runtime == torch, padding invariance, greedy tokens equal on the whole validation set, no torch needed)."""

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch

from service.artifact import DECODER_FILE, ENCODER_FILE, META_FILE, SOURCE_TOKENIZER_FILE, TARGET_TOKENIZER_FILE, Meta
from tests.support.data import DATA, ROOT
from training.checkpoint import load_checkpoint, model_of
from training.config import load_config
from training.parallel import read_pairs, token_batches
from training.search import LengthRule, Specials, beam_search, greedy, translate_all
from training.train import train
from training.translate import SPECIAL_IDS, TorchStepper, bleu, translate

MULTI30K = DATA / "multi30k"
WORDS = 24


def _sentences(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    """A toy language pair: target word i is source word i renamed."""
    src, tgt = [], []
    for _ in range(n):
        ids = rng.integers(0, WORDS, rng.integers(2, 8))
        src.append(" ".join(f"qu{i}x" for i in ids))
        tgt.append(" ".join(f"zo{i}" for i in ids) + ".")
    return src, tgt


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """<dir>/{train,val,test}.{xx,yy}: 2000 / 24 / 16 toy pairs."""
    d = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 2000), ("val", 24), ("test", 16)):
        src, tgt = _sentences(rng, n)
        (d / f"{split}.xx").write_text("\n".join(src) + "\n")
        (d / f"{split}.yy").write_text("\n".join(tgt) + "\n")
    return str(d)


def _args(corpus: str, out, *extra: str) -> list[str]:
    return ["--task=translation", f"--data.path={corpus}/train", f"--data.val_path={corpus}/val",
            f"--data.test_path={corpus}/test", "--data.source=xx", "--data.target=yy", "--data.level=bpe",
            "--data.vocab_size=80", "--threads=1", "--model.n_embd=16", "--model.enc_hidden=16",
            "--model.dec_hidden=24", "--model.dropout=0.1", "--batch_tokens=160", "--max_steps=6",
            "--eval_interval=6", "--checkpoint_interval=6", "--optim.warmup_steps=2", "--decode.beam_size=3",
            f"--out_dir={out}", *extra]


@pytest.fixture(scope="module")
def checkpoint(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(load_config(None, _args(corpus, out)), progress=False)
    return out / "last.pt"


def test_token_batches_cover_every_pair_once_within_the_budget():
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(1, 30, 500), rng.integers(1, 30, 500)
    batches = token_batches(src, tgt, 200, np.random.default_rng(2))
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for b in batches:
        assert len(b) == 1 or len(b) * (src[b].max() + tgt[b].max()) <= 200
    assert [b.tolist() for b in batches] != [b.tolist() for b in token_batches(src, tgt, 200, np.random.default_rng(3))]


def test_read_pairs_refuses_files_that_do_not_pair(tmp_path):
    (tmp_path / "a.xx").write_text("eins\nzwei\n")
    (tmp_path / "a.yy").write_text("one\n")
    with pytest.raises(ValueError, match=r"a\.xx has 2 lines but .*a\.yy has 1"):
        read_pairs(tmp_path / "a", "xx", "yy")


def test_bleu_is_sacrebleu_on_detokenized_cased_text():
    ref = ["A dog runs across the green field.", "Two men are sitting on a bench."]
    score, signature = bleu(ref, ref)
    assert score == pytest.approx(100.0)
    assert bleu(["a dog runs across the green field.", ref[1]], ref)[0] < 100  # cased
    assert 0 < bleu(["A dog runs across a field.", "Two men sit."], ref)[0] < 50
    assert "case:mixed" in signature and "tok:13a" in signature and "version:2." in signature


class _Table:
    """A fake model whose next-token log-probabilities depend only on the previous token (vocab 5, EOS = 3).

    From BOS, token 4 is likelier than token 1 (0.6 vs 0.4), but after 4 every continuation is poor, while
    1 is followed by EOS with certainty: greedy finds 4 ... (p <= 0.6 * 0.35), beam search finds 1 EOS (0.4).
    """

    P: ClassVar = {2: [0, 0.4, 0, 0, 0.6], 1: [0, 0, 0, 1.0, 0], 4: [0, 0.3, 0, 0.35, 0.35]}

    def encode(self, src, lengths):
        memory = np.zeros((*src.shape, 1), np.float32)
        return memory, memory, np.zeros((1, len(src), 1), np.float32)

    def step(self, prev, h, memory, keys, mask):
        table = np.array([self.P.get(int(p), [0.2] * 5) for p in prev])
        with np.errstate(divide="ignore"):
            return np.log(table), h, mask.astype(np.float32)


def test_beam_search_finds_the_likelier_translation_that_greedy_misses():
    sp, rule = Specials(pad=0, bos=2, eos=3), LengthRule(0, 4)
    src = [np.array([5, 6])]
    assert greedy(_Table(), src, sp, rule)[0][0] == 4
    assert beam_search(_Table(), src, sp, rule, beam_size=2, alpha=0.0) == [[1]]
    assert beam_search(_Table(), src, sp, rule, beam_size=1, alpha=0.0) == greedy(_Table(), src, sp, rule)


def test_decoding_stops_at_the_length_rule():
    class Never(_Table):  # never emits EOS
        def step(self, prev, h, memory, keys, mask):
            logits = np.zeros((len(prev), 5), np.float32)
            logits[:, 1] = 1.0
            return logits, h, mask.astype(np.float32)

    sp, rule = Specials(pad=0, bos=2, eos=3), LengthRule(1.5, 2)
    srcs = [np.ones(n, np.int64) for n in (1, 2, 5)]
    assert [len(t) for t in greedy(Never(), srcs, sp, rule)] == [3, 5, 9]  # floor(1.5 n + 2)
    assert [len(t) for t in beam_search(Never(), srcs, sp, rule, 3, 0.6)] == [3, 5, 9]


def test_beam_of_one_is_greedy_and_batches_do_not_change_results(checkpoint, corpus):
    model, tok = model_of(load_checkpoint(checkpoint))
    seqs = tok.encode_source(read_pairs(f"{corpus}/val", "xx", "yy").source)
    step, rule = TorchStepper(model), LengthRule(1.5, 5)
    greedy_ids = translate_all(step, seqs, SPECIAL_IDS, rule)
    assert translate_all(step, seqs, SPECIAL_IDS, rule, beam_size=1, alpha=0.6) == greedy_ids
    assert [greedy(step, [s], SPECIAL_IDS, rule)[0] for s in seqs] == greedy_ids
    beams = translate_all(step, seqs, SPECIAL_IDS, rule, beam_size=4, alpha=0.6, batch_size=5)
    assert [beam_search(step, [s], SPECIAL_IDS, rule, 4, 0.6)[0] for s in seqs] == beams


def test_training_learns_the_toy_language_and_records_bleu(corpus, tmp_path):
    ckpt = train(load_config(None, _args(corpus, tmp_path, "--max_steps=150", "--eval_interval=150",
                                         "--checkpoint_interval=150", "--optim.lr=0.01", "--model.dropout=0")),
                 progress=False)
    m = ckpt["metrics"]
    assert m["val_bleu"] > 8 and m["val_ppl"] < 6, m  # untrained: BLEU ~0, perplexity ~ the vocabulary (80)
    assert m["bleu_signature"].startswith("nrefs:1|case:mixed")


def test_resume_continues_exactly(corpus, tmp_path, monkeypatch):
    """The step-15 checkpoint resumed gives the step-30 model of a straight run, across an epoch boundary:
    weights, optimizer, batch order, data position and RNGs (dropout) are all restored."""
    import training.train as loop

    real_save = loop.save_checkpoint

    def save_and_keep_step_15(path, ckpt):
        real_save(path, ckpt)
        if ckpt["step"] == 15:
            real_save(tmp_path / "step15.pt", ckpt)

    monkeypatch.setattr(loop, "save_checkpoint", save_and_keep_step_15)
    for lang in ("xx", "yy"):  # 150 pairs: about 11 batches an epoch
        lines = (Path(corpus) / f"train.{lang}").read_text().splitlines()[:150]
        (tmp_path / f"small.{lang}").write_text("\n".join(lines) + "\n")
    args = _args(corpus, tmp_path / "s", f"--data.path={tmp_path / 'small'}", "--max_steps=30",
                 "--checkpoint_interval=15", "--eval_interval=30")
    straight = train(load_config(None, args), progress=False)
    ckpt = load_checkpoint(tmp_path / "step15.pt")
    assert ckpt["task"]["epoch"] < straight["task"]["epoch"]  # a new epoch starts after the checkpoint
    ckpt["config"]["out_dir"] = str(tmp_path / "r")
    torch.save(ckpt, tmp_path / "step15.pt")
    resumed = train(resume=tmp_path / "step15.pt", progress=False)
    assert resumed["step"] == 30
    for k in straight["model"]:
        assert torch.equal(straight["model"][k], resumed["model"][k]), k


def test_direction_is_a_config_switch(corpus, tmp_path):
    """Swapping source and target trains the other direction: the tokenizers and data files swap too."""
    from training.translation_task import TranslationTask

    fwd = TranslationTask(load_config(None, _args(corpus, tmp_path / "f")))
    back = TranslationTask(load_config(None, _args(corpus, tmp_path / "b", "--data.source=yy", "--data.target=xx")))
    assert back.data_info["train"]["source"]["name"] == "train.yy"
    assert back.tok.source.to_str() == fwd.tok.target.to_str()
    assert back.tok.target.to_str() == fwd.tok.source.to_str()
    assert back.train_step(back.model)[1] > 0
    with pytest.raises(ValueError, match="two different languages"):
        load_config(None, _args(corpus, tmp_path, "--data.target=xx"))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    from training.export import export_checkpoint

    out = tmp_path_factory.mktemp("models") / "toy" / "1"
    return out, export_checkpoint(checkpoint, out)


def test_export_verifies_itself_and_describes_the_artifact(checkpoint, exported):
    from training.export import export_checkpoint

    out, meta = exported
    assert {p.name for p in out.iterdir()} == {ENCODER_FILE, DECODER_FILE, SOURCE_TOKENIZER_FILE,
                                               TARGET_TOKENIZER_FILE, META_FILE}
    checks = meta.evaluation["export_checks"]
    assert checks["max_abs_diff_vs_torch"] < 1e-4 and checks["padded_vs_alone_max_abs_diff"] < 1e-5
    assert checks["greedy_val_equal_to_torch"] == 24
    assert set(meta.evaluation["bleu"]) == {"val", "test"} and set(meta.evaluation["bleu"]["test"]) == {"greedy", "beam3"}
    assert meta.translator["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert meta.translator["languages"] == {"source": "xx", "target": "yy"}
    assert [s.input for s in meta.state] == ["h0"] and meta.kind == "translator"
    assert meta.data["test"]["source"]["sha256"] and meta.data["train"]["target"]["name"] == "train.yy"
    assert Meta.load(out / META_FILE) == meta
    V, E = meta.sizes["vocab_size"], meta.sizes["n_embd"]
    shapes = [list(i.dims) for i in onnx.load(out / DECODER_FILE).graph.initializer]
    assert sum(s in ([V, E], [E, V]) for s in shapes) == 1, shapes  # the tied embedding is stored once
    with pytest.raises(FileExistsError):
        export_checkpoint(checkpoint, out)


def test_export_refuses_an_artifact_that_fails_verification(checkpoint, tmp_path, monkeypatch):
    import training.export_translator as ex

    monkeypatch.setattr(ex, "PARITY_TOL", 0.0)
    with pytest.raises(ex.ExportError, match="differs from torch"):
        ex.export_translator(load_checkpoint(checkpoint), tmp_path / "m" / "1")
    assert not (tmp_path / "m" / "1").exists() or not any((tmp_path / "m" / "1").iterdir())


RUN_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None  # any torch import now fails
from training.ort_translator import OrtTranslator
tr = OrtTranslator(sys.argv[1])
print(json.dumps({"greedy": tr.translate(sys.argv[2:]), "beam": tr.translate(sys.argv[2:], 3, 0.6)}))
"""


def test_meta_json_of_a_translator_is_checked(exported):
    good = exported[1].to_dict()
    with pytest.raises(ValueError, match=r"translator.special_ids.eos must be a token id of both vocabularies"):
        Meta.from_dict({**good, "translator": {**good["translator"], "special_ids": {"pad": 0, "unk": 1, "bos": 2,
                                                                                     "eos": 10**6}}})
    with pytest.raises(ValueError, match=r"translator.max_len needs a number a in 0\.\.64 and an integer b in 1\.\."):
        Meta.from_dict({**good, "translator": {**good["translator"], "max_len": {"a": 1.5, "b": 0}}})
    with pytest.raises(ValueError, match=r"translator lacks the object\(s\) \['decoder'\]"):
        Meta.from_dict({**good, "translator": {k: v for k, v in good["translator"].items() if k != "decoder"}})
    with pytest.raises(ValueError, match="a char_lm must not have a translator section"):
        Meta.from_dict({**good, "kind": "char_lm"})


def test_artifact_translates_without_torch_as_torch_does(checkpoint, corpus, exported):
    out = exported[0]
    sources = read_pairs(f"{corpus}/test", "xx", "yy").source[:6]
    r = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, str(out), *sources], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    model, tok = model_of(load_checkpoint(checkpoint))
    rule = LengthRule(1.5, 10)
    assert got["greedy"] == translate(model, tok, sources, rule)
    assert got["beam"] == translate(model, tok, sources, rule, beam_size=3, alpha=0.6)


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"needs Multi30k at {MULTI30K}")
def test_multi30k_pairs_read_as_the_recipe_expects():
    cfg = load_config(ROOT / "recipes" / "multi30k-de-en.json")
    pairs = read_pairs(ROOT / cfg.data.val_path, cfg.data.source, cfg.data.target)
    assert len(pairs.source) == len(pairs.target) == 1014
    assert (cfg.data.source, cfg.data.target) == ("de", "en")
