"""A hostile model repository for the untrusted-input tests: every broken artifact, odd name and link out.

Each case of CASES copies a tiny model and breaks one thing (a Mutation); build() lays them all out beside
the good models, with a directory outside the repository that must never be read.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ---- building the hostile repository -------------------------------------------------------------

Mutation = Callable[[Path, Path], None]  # (version directory, the directory outside the repository)


def edit(file: str, change: Callable[[dict], object]) -> Mutation:
    """Apply `change` to the parsed JSON file (in place, or return a replacement value)."""
    def mutate(d: Path, _: Path) -> None:
        data = json.loads((d / file).read_text())
        new = change(data)
        (d / file).write_text(json.dumps(data if new is None else new))
    return mutate


def meta(**fields) -> Mutation:
    """meta.json with fields replaced; a key section__name replaces m[section][name] (sizes__hidden_size)."""
    def change(m: dict) -> None:
        for key, value in fields.items():
            section, _, sub = key.partition("__")
            if sub:
                m[section][sub] = value
            else:
                m[key] = value
    return edit("meta.json", change)


def drop(key: str) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        del d[key]
    return change


def tok(**fields) -> Mutation:
    return edit("tokenizer.json", lambda t: t.update(fields))


def raw(file: str, change: Callable[[str], str | bytes]) -> Mutation:
    def mutate(d: Path, _: Path) -> None:
        new = change((d / file).read_text())
        (d / file).write_bytes(new if isinstance(new, bytes) else new.encode())
    return mutate


def onnx_bytes(make: Callable[[bytes], bytes]) -> Mutation:
    def mutate(d: Path, _: Path) -> None:
        (d / "model.onnx").write_bytes(make((d / "model.onnx").read_bytes()))
    return mutate


def link(file: str, target: Callable[[Path, Path], Path | str]) -> Mutation:
    """Replace `file` with a symlink to target(version dir, outside)."""
    def mutate(d: Path, out: Path) -> None:
        (d / file).unlink()
        (d / file).symlink_to(target(d, out))
    return mutate


def replace_file(file: str, make: Callable[[Path], None]) -> Mutation:
    def mutate(d: Path, _: Path) -> None:
        (d / file).unlink()
        make(d / file)
    return mutate


def sparse(file: str, size: int) -> Mutation:
    """A file of `size` bytes that takes no disk: a size cap must refuse it without reading it."""
    def mutate(d: Path, _: Path) -> None:
        os.truncate(d / file, size)
    return mutate


def scaled(hidden_size: int | None = None, n_layer: int | None = None) -> Mutation:
    """meta.json lying consistently: sizes and every state spec changed together."""
    def change(m: dict) -> None:
        for target in (m["sizes"], *m["state"]):
            target.update({k: v for k, v in (("hidden_size", hidden_size), ("n_layer", n_layer)) if v is not None})
    return edit("meta.json", change)


def grow_vocab(d: Path, out: Path) -> None:
    """Tokenizer and meta.json agree on one more token than the graph has."""
    tok(tokens=[*json.loads((d / "tokenizer.json").read_text())["tokens"], "\u2603"])(d, out)
    edit("meta.json", lambda m: m["sizes"].update(vocab_size=m["sizes"]["vocab_size"] + 1))(d, out)


def external(d: Path, out: Path) -> None:
    """The real graph with one weight moved to an 'external data' file outside the repository."""
    model = onnx.load_model_from_string((d / "model.onnx").read_bytes())
    t = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", os.path.relpath(out / "secret.txt", d)), ("offset", "0"), ("length", "16")):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    (d / "model.onnx").write_bytes(model.SerializeToString())


def future_opset(d: Path, _: Path) -> None:
    """The real graph claiming an opset no runtime has: ONNX Runtime's refusal spans several lines."""
    model = onnx.load_model_from_string((d / "model.onnx").read_bytes())
    for opset in model.opset_import:
        opset.version = 99
    (d / "model.onnx").write_bytes(model.SerializeToString())


def add_graph(d: Path, _: Path) -> None:
    """A valid ONNX model of an unrelated graph."""
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    (d / "model.onnx").write_bytes(m.SerializeToString())


def graph_of(source: str) -> Mutation:
    def mutate(d: Path, _: Path) -> None:
        shutil.copy(d.parent.parent / f".src-{source}" / "model.onnx", d / "model.onnx")
    return mutate


def nest(depth: int) -> Mutation:
    return raw("meta.json", lambda s: s.replace('"training": {', '"training": {"x": ' + "[" * depth + "]" * depth + ", ", 1))


def evaluation_number(text: str) -> Mutation:
    return raw("meta.json", lambda s: s.replace('"evaluation": {', '"evaluation": {"x": ' + text + ", ", 1))


def labels_of(d: Path) -> list[str]:
    return json.loads((d / "meta.json").read_text())["labels"]


TRUNCATED = r"not an ONNX model|holds no graph|ONNX Runtime cannot load|recurrent nodes are"
L, G, C = "tiny-lstm", "tiny-gru", "tiny-sentiment"

# name -> (source model, mutation, the reason it is refused: a regex)
CASES: dict[str, tuple[str, Mutation, str]] = {
    # model.onnx broken or not the graph meta.json describes
    "trunc-empty": (L, onnx_bytes(lambda b: b""), TRUNCATED),
    "trunc-16": (L, onnx_bytes(lambda b: b[:16]), TRUNCATED),
    "trunc-third": (L, onnx_bytes(lambda b: b[: len(b) // 3]), TRUNCATED),
    "trunc-half": (L, onnx_bytes(lambda b: b[: len(b) // 2]), TRUNCATED),
    "trunc-last-byte": (L, onnx_bytes(lambda b: b[:-1]), TRUNCATED),
    "random-bytes": (L, onnx_bytes(lambda b: random.Random(7).randbytes(len(b))), TRUNCATED),
    "gru-graph-as-lstm": (L, graph_of(G), r"meta.json cell is 'lstm' but the graph's recurrent nodes are \['gru'\]"),
    "classifier-graph-as-lm": (L, graph_of(C), r"graph inputs .* do not match meta.json"),
    "unrelated-graph": (L, add_graph, r"recurrent nodes are none"),
    "future-opset": (L, future_opset, r"ONNX Runtime cannot load model.onnx: .*\\n.*"),  # logged escaped: one line
    "external-data": (L, external, r"in an external file; only self-contained graphs load"),
    "onnx-oversized": (L, sparse("model.onnx", (2 << 30) + 1), r"model.onnx has 2147483649 bytes, more than the 2147483648"),
    "onnx-is-fifo": (L, replace_file("model.onnx", os.mkfifo), r"model.onnx is not a regular file"),
    "onnx-is-dir": (L, replace_file("model.onnx", Path.mkdir), r"model.onnx is not a regular file"),
    # meta.json lying about shapes
    "lie-hidden": (L, scaled(hidden_size=33), r"graph h0 has shape \[2, 'batch', 32\], meta.json implies \[2, '\?', 33\]"),
    "lie-hidden-huge": (L, scaled(hidden_size=10**9), r"sizes.hidden_size must be an integer from 1 to 65536"),
    "lie-layers": (L, scaled(n_layer=3), r"graph h0 has shape \[2, 'batch', 32\], meta.json implies \[3,"),
    "lie-vocab": (L, meta(sizes__vocab_size=67), r"tokenizer has 66 tokens, meta.json sizes.vocab_size is 67"),
    "lie-vocab-both": (L, grow_vocab, r"graph logits has shape \['batch', 'time', 66\], meta.json implies .*67\]"),
    "lie-labels": (C, edit("meta.json", lambda m: m.update(labels=["a", "b", "c"], sizes={**m["sizes"], "n_class": 3})),
                   r"graph logits has shape \['batch', 2\], meta.json implies \['\?', 3\]"),
    "lie-n-class": (C, meta(sizes__n_class=3), r"sizes.n_class is 3 but it lists 2 labels"),
    "lie-state-names": (L, edit("meta.json", lambda m: m["state"][0].update(input="hidden_in")),
                        r"meta.json state .* is not what a lstm of these sizes carries"),
    "lie-state-missing": (L, edit("meta.json", lambda m: m["state"].__delitem__(-1)),
                          r"is not what a lstm of these sizes carries"),
    "lie-cell": (L, edit("meta.json", lambda m: m.update(cell="gru", state=m["state"][:1])),
                 r"meta.json cell is 'gru' but the graph's recurrent nodes are \['lstm'\]"),
    "lie-kind": (L, meta(kind="classifier", labels=["a", "b"], state=[]), r"classifier's tokenizer must define pad_id"),
    "lie-kind-lm": (C, meta(kind="char_lm", labels=[]), r"state .* is not what a lstm of these sizes carries"),
    "lie-kind-unknown": (L, meta(kind="speller"), r"kind 'speller' is not one of"),
    "lie-kind-translator": (L, meta(kind="translator"), r"meta.json translator lacks the object\(s\) \['encoder'"),
    # meta.json of the wrong JSON types and values
    "type-hidden-str": (L, meta(sizes__hidden_size="32"), r"sizes.hidden_size must be an integer from 1 to 65536, got '32'"),
    "type-hidden-bool": (L, meta(sizes__hidden_size=True), r"sizes.hidden_size must be an integer"),
    "type-hidden-float": (L, meta(sizes__hidden_size=32.0), r"sizes.hidden_size must be an integer"),
    "type-sizes-list": (L, meta(sizes=[2, 32]), r"meta.json sizes must be an object"),
    "type-labels-dict": (C, meta(labels={"0": "neg", "1": "pos"}), r"labels must be a list of non-empty strings"),
    "type-labels-ints": (C, meta(labels=[0, 1]), r"labels must be a list of non-empty strings"),
    "type-labels-dup": (C, meta(labels=["pos", "pos"]), r"labels must be distinct"),
    "type-state-dict": (L, meta(state={"h0": "hn"}), r"state must be a list of objects"),
    "type-state-lists": (L, meta(state=[["h0", "hn", 2, 32]]), r"state must be a list of objects"),
    "type-state-extra-key": (L, edit("meta.json", lambda m: m["state"][0].update(evil=1)), r"state entries need exactly"),
    "type-meta-list": (L, edit("meta.json", lambda m: [m]), r"meta.json must hold a JSON object, not list"),
    "type-kind-list": (L, meta(kind=["char_lm"]), r"meta.json kind must be a string"),
    "type-threads-str": (L, meta(runtime__intra_op_num_threads="4"), r"intra_op_num_threads must be an integer"),
    "type-threads-huge": (L, meta(runtime__intra_op_num_threads=10**6), r"intra_op_num_threads must be an integer from 1"),
    "unknown-key": (L, meta(evil=1), r"meta.json has unknown keys: \['evil'\]"),
    "missing-key": (L, edit("meta.json", drop("sizes")), r"meta.json lacks \['sizes'\]"),
    "int-beyond-int64": (L, meta(sizes__n_params=10**30), r"does not fit 64 bits"),
    "int-5000-digits": (L, evaluation_number("9" * 5000), r"meta.json is not valid JSON: .*digits"),
    "float-overflow": (L, evaluation_number("1e400"), r"overflows a float"),
    "nan": (L, evaluation_number("NaN"), r"NaN is not a JSON number"),
    "nest-5000": (L, nest(5_000), r"meta.json nests too deeply to parse"),
    "nest-40": (L, nest(40), r"nests deeper than 32 levels"),
    "lone-surrogate-label": (C, raw("meta.json", lambda s: re.sub(r'"labels": \[\s*"\w+"', '"labels": ["\\\\ud800"', s)),
                             r"meta.json is not UTF-8 text: .*surrogates not allowed"),
    # tokenizer.json with a bad vocabulary
    "tok-duplicates": (L, edit("tokenizer.json", lambda t: t["tokens"].__setitem__(2, t["tokens"][3])),
                       r"tokenizer vocabulary has duplicate tokens"),
    "tok-unk-out-of-range": (L, tok(unk_id=66), r"tokenizer unk_id=66 is outside the vocabulary of 66"),
    "tok-unk-negative": (L, tok(unk_id=-1), r"tokenizer unk_id=-1 is outside the vocabulary"),
    "tok-unk-str": (L, tok(unk_id="0"), r"tokenizer unk_id must be an integer, got '0'"),
    "tok-unk-float": (L, tok(unk_id=0.0), r"tokenizer unk_id must be an integer, got 0.0"),
    "tok-unk-null": (L, tok(unk_id=None), r"tokenizer unk_id must be an integer, got None"),
    "tok-pad-out-of-range": (C, tok(pad_id=10**6), r"tokenizer pad_id=1000000 is outside the vocabulary"),
    "tok-pad-is-unk": (C, edit("tokenizer.json", lambda t: t.update(pad_id=t["unk_id"])), r"pad_id and unk_id must differ"),
    "tok-non-string": (L, edit("tokenizer.json", lambda t: t["tokens"].__setitem__(3, 5)), r"tokens must be non-empty strings"),
    "tok-empty-string": (L, edit("tokenizer.json", lambda t: t["tokens"].__setitem__(3, "")),
                         r"tokens must be non-empty strings"),
    "tok-multi-char": (L, edit("tokenizer.json", lambda t: t["tokens"].__setitem__(3, "ab")),
                       r"char tokenizer has multi-character tokens: \['ab'\]"),
    "tok-lone-surrogate": (L, raw("tokenizer.json", lambda s: s.replace('"tokens": [', '"tokens": ["\\ud800", ', 1)),
                           r"tokenizer.json is not UTF-8 text"),
    "tok-level": (L, tok(level="byte"), r"tokenizer level must be 'char' or 'word', got 'byte'"),
    "tok-tokens-dict": (L, tok(tokens={"a": 0}), r"tokenizer 'tokens' must be a list of strings"),
    "tok-not-object": (L, edit("tokenizer.json", lambda t: [t]), r"tokenizer.json must hold a JSON object, not list"),
    "tok-no-unk": (L, edit("tokenizer.json", drop("unk_id")), r"tokenizer lacks unk_id"),
    # encodings and sizes
    "meta-latin-1": (L, raw("meta.json", lambda s: s.replace('"description": "', '"description": "caf\u00e9 ', 1)
                            .encode("latin-1")), r"meta.json is not UTF-8 text"),
    "tok-utf-16": (L, raw("tokenizer.json", lambda s: s.encode("utf-16")), r"tokenizer.json is not UTF-8 text"),
    "meta-bom": (L, raw("meta.json", lambda s: s.encode("utf-8-sig")), r"meta.json is not valid JSON"),
    "meta-oversized": (L, meta(description="x" * (64 << 10)), r"meta.json has \d+ bytes, more than the 65536"),
    "tok-oversized": (L, sparse("tokenizer.json", 40 << 20), r"tokenizer.json has 41943040 bytes, more than the 33554432"),
    "meta-missing": (L, lambda d, _: (d / "meta.json").unlink(), r"missing meta.json"),
    # links leading outside the repository, and odd files
    "escape-onnx": (L, link("model.onnx", lambda d, out: out / "lstm" / "1" / "model.onnx"),
                    r"model.onnx resolves to .*/outside/lstm/1/model.onnx, outside the repository"),
    "escape-meta": (L, link("meta.json", lambda d, out: out / "secret.txt"), r"meta.json resolves to .*outside the repository"),
    "escape-relative": (L, link("tokenizer.json", lambda d, out: os.path.relpath(out / "lstm" / "1" / "tokenizer.json", d)),
                        r"tokenizer.json resolves to .*outside the repository"),
    "dangling-link": (L, link("model.onnx", lambda d, out: d / "nowhere"), r"missing model.onnx \(a dangling symlink\)"),
    "link-loop": (L, link("model.onnx", lambda d, out: d / "model.onnx"), r"model.onnx: cannot resolve it"),
}

GOOD = {"lm": [1, 2], "alias": [1, 2], "gru": [1], "clf": [1], "vers": [3], "link-inside": [1]}
NAME_RULE = "model names are 1-128 ASCII letters"
VERSION_RULE = "version directories must be positive integers"
ODD_NAMES = ["bad name", "new\nline", "\u00fcn\u00ef", "-dash", "a" * 129, os.fsdecode(b"bytes-\xff")]
ODD_VERSIONS = ["01", "0", "\u00b2", "\u0661", "1.0", "1234567890", "latest"]


def build(model_repo: Path, base: Path) -> Path:
    """<base>/repo: the good models, every case of CASES, odd names and links; <base>/outside: what must stay unread."""
    root, out = base / "repo", base / "outside"
    shutil.copytree(model_repo / L / "1", out / "lstm" / "1")
    (out / "secret.txt").write_text("outside the repository\n")
    for src in (L, G, C):  # pristine graphs for graph_of(); hidden, so never a model
        shutil.copytree(model_repo / src / "1", root / f".src-{src}")
    for name, (src, mutate, _) in CASES.items():
        shutil.copytree(model_repo / src / "1", root / name / "1")
        mutate(root / name / "1", out)
    shutil.copytree(model_repo / L / "1", root / "lm" / "1")
    (root / "lm" / "2").symlink_to("1")  # links inside the repository are fine
    (root / "alias").symlink_to("lm")
    shutil.copytree(model_repo / G / "1", root / "gru" / "1")
    shutil.copytree(model_repo / C / "1", root / "clf" / "1")
    shutil.copytree(model_repo / L / "1", root / "link-inside" / "1")
    (root / "link-inside" / "1" / "model.onnx").unlink()
    (root / "link-inside" / "1" / "model.onnx").symlink_to("../../lm/1/model.onnx")
    for name in ODD_NAMES:
        shutil.copytree(model_repo / L / "1", root / name / "1")
    for version in [*ODD_VERSIONS, "3"]:
        shutil.copytree(model_repo / L / "1", root / "vers" / version)
    (root / "escape-name").symlink_to(out / "lstm")
    (root / "escape-version").mkdir()
    (root / "escape-version" / "1").symlink_to(out / "lstm" / "1")
    (root / "escape-file").symlink_to(out / "secret.txt")
    shutil.copytree(model_repo / L / "1", root / ".hidden" / "1")
    (root / "README.md").write_text("not a model\n")
    return root
