"""The model repository is untrusted input.

Every broken or hostile entry is refused with one log line naming its path and the reason, the good
models beside it keep serving, request names never reach the filesystem, and nothing outside the
repository root is ever opened (an audit hook records every open of the process while it looks).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.artifact import shown
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.repository import Repository
from tests.service.audit import outside, recording
from tests.service.harness import Running, generate, pb, settings

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
    "lie-kind-unknown": (L, meta(kind="translator"), r"kind 'translator' is not one of"),
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


@pytest.fixture(scope="module")
def hostile(model_repo, tmp_path_factory) -> Path:
    """<base>/repo: the good models, every case of CASES, odd names and links; <base>/outside: what must stay unread."""
    base = tmp_path_factory.mktemp("untrusted")
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


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def loaded(hostile) -> tuple[Repository, list[str], list[str]]:
    """The hostile repository loaded once: (repository, its log lines, every path opened meanwhile)."""
    lines, logger = Lines(), logging.getLogger("rnnserve")
    logger.addHandler(lines)
    try:
        with recording() as opened:
            repo = Repository.load(hostile, intra_op_threads=1)
    finally:
        logger.removeHandler(lines)
    return repo, lines.messages, opened


def skip_lines(messages: list[str], path: Path) -> list[str]:
    return [m for m in messages if m.startswith(f"skipping {shown(path)}: ")]


@pytest.mark.parametrize("case", CASES)
def test_each_broken_artifact_is_refused_with_one_line_naming_path_and_reason(hostile, loaded, case):
    repo, messages, _ = loaded
    path = hostile / case / "1"
    assert re.search(CASES[case][2], repo.skipped[str(path)]), repo.skipped[str(path)]
    [line] = skip_lines(messages, path)
    assert re.search(CASES[case][2], line) and "\n" not in line


@pytest.mark.parametrize("entry, reason", [
    *((name, NAME_RULE) for name in ODD_NAMES),
    *((f"vers/{v}", VERSION_RULE) for v in ODD_VERSIONS),
    ("escape-name", "outside the repository"), ("escape-version/1", "outside the repository"),
    ("escape-file", "outside the repository"),
])
def test_odd_names_and_links_out_are_refused_by_the_scan(hostile, loaded, entry, reason):
    repo, messages, _ = loaded
    assert reason in repo.skipped[str(hostile / entry)]
    [line] = skip_lines(messages, hostile / entry)
    assert line.isprintable(), line  # a newline or undecodable byte in a name cannot forge or garble a log line


def test_only_the_good_models_load_and_every_other_entry_is_accounted_for(hostile, loaded):
    repo, messages, _ = loaded
    assert {name: sorted(versions) for name, versions in repo.models.items()} == GOOD
    expected = {str(hostile / case / "1") for case in CASES} | {str(hostile / n) for n in ODD_NAMES}
    expected |= {str(hostile / "vers" / v) for v in ODD_VERSIONS}
    expected |= {str(hostile / e) for e in ("escape-name", "escape-version/1", "escape-file")}
    assert set(repo.skipped) == expected  # .hidden, .src-* and README.md are passed over without a word
    assert sum(m.startswith("skipping ") for m in messages) == len(expected)


def test_loading_the_hostile_repository_opens_nothing_outside_it(hostile, loaded):
    _, _, opened = loaded
    real = hostile.resolve()
    assert str(real / "lm" / "1" / "model.onnx") in opened  # the recorder saw the reads it must judge
    assert str(real / "clf" / "1" / "tokenizer.json") in opened
    assert outside(opened, hostile) == []


HOSTILE_NAMES = ["../../etc", "..", ".", "/etc/passwd", "a/b", "", "\x00", "lm\x00", "lm/../lm", "lm/1",
                 "..\\..\\etc", "~root", "escape-name", ".src-tiny-lstm", "%2e%2e%2fetc", "a" * 10_000]
NAME_CODES = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


@pytest.fixture(scope="module")
def hostile_server(hostile) -> Iterator[Running]:
    running = Running(settings(hostile, max_prompt_chars=500))
    yield running
    running.stop()


def test_a_server_over_the_hostile_repository_serves_the_good_models(hostile_server):
    for name in ("lm", "alias", "gru", "vers", "link-inside"):
        text, replies = generate(hostile_server.stub, model=name, prompt="A", max_tokens=4)
        assert len(text) == 4 and replies[-1].finished.version == GOOD[name][-1]
    reply = hostile_server.stub.Classify(pb.ClassifyRequest(model="clf", texts=["a fine film"]), timeout=60)
    assert len(reply.results) == 1
    listed = hostile_server.stub.ListModels(pb.ListModelsRequest(), timeout=60).models
    assert {(m.name, m.version) for m in listed} == {(n, v) for n, vs in GOOD.items() for v in vs}


def test_hostile_model_names_are_not_found_and_never_touch_the_filesystem(hostile, hostile_server):
    stub, v2_stub = hostile_server.stub, v2_grpc.GRPCInferenceServiceStub(hostile_server.channel)
    calls = {
        "GetModel": lambda n: stub.GetModel(pb.GetModelRequest(name=n), timeout=30),
        "Generate": lambda n: generate(stub, model=n, prompt="A", max_tokens=2),
        "Classify": lambda n: stub.Classify(pb.ClassifyRequest(model=n, texts=["fine"]), timeout=30),
        "Trace": lambda n: list(stub.Trace(pb.TraceRequest(model=n, text="ab"), timeout=30)),
        "v2 ModelMetadata": lambda n: v2_stub.ModelMetadata(v2.ModelMetadataRequest(name=n), timeout=30),
        "v2 ModelInfer": lambda n: v2_stub.ModelInfer(v2.ModelInferRequest(model_name=n), timeout=30),
        "v2 ModelReady": lambda n: v2_stub.ModelReady(v2.ModelReadyRequest(name=n, version="../1"), timeout=30),
    }
    with recording() as opened:
        for method, call in calls.items():
            for name in HOSTILE_NAMES:
                err = _refused(lambda: call(name))  # noqa: B023 (called at once)
                assert err.code() in NAME_CODES, (method, name, err.code(), err.details())
                assert "Traceback" not in err.details() and len(err.details()) < 1000
    assert opened == []  # a name from a request is a dictionary key, never a path
    assert not v2_stub.ModelReady(v2.ModelReadyRequest(name="../lm"), timeout=30).ready


def test_trace_reads_model_onnx_inside_the_repository_only(hostile, hostile_server):
    with recording() as opened:
        steps = list(hostile_server.stub.Trace(pb.TraceRequest(model="link-inside", text="abc"), timeout=60))
    assert steps
    assert str(hostile.resolve() / "lm" / "1" / "model.onnx") in opened  # its link, followed inside
    assert outside(opened, hostile) == []


def test_trace_refuses_a_model_onnx_swapped_for_a_link_outside_after_load(model_repo, tmp_path):
    """The served graph was read at load; Trace reads model.onnx again, and must not follow a link planted since."""
    root, out = tmp_path / "repo", tmp_path / "outside"
    shutil.copytree(model_repo / L / "1", root / "lm" / "1")
    shutil.copytree(model_repo / L / "1", out)
    running = Running(settings(root))
    try:
        (root / "lm" / "1" / "model.onnx").unlink()
        (root / "lm" / "1" / "model.onnx").symlink_to(out / "model.onnx")
        with recording() as opened:
            err = _refused(lambda: list(running.stub.Trace(pb.TraceRequest(model="lm", text="ab"), timeout=60)))
        assert err.code() == grpc.StatusCode.INTERNAL and "Traceback" not in err.details()
        assert outside(opened, root) == []
        assert generate(running.stub, model="lm", prompt="A", max_tokens=3)[0]  # the loaded graph keeps serving
    finally:
        running.stop()
