"""ONNX Runtime sessions behind small runners: the stateful char LM, the classifier, and the translator's and the
captioner's two graphs (their decoder steps alike)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service import artifact
from service.artifact import Meta, graph
from service.artifact.graph import UNROLLED_CELL_KEY
from service.artifact.session import make_session
from service.artifact.tokenizer import Tokenizer
from service.engine.encdec import Memory

# Run option: at the end of a call, give the arena's unused chunks back to the system. A call over a long or
# wide input (a classify batch, a prompt, a trace) grows the arena by MBs, and without this it keeps them for
# good (measured on sst2-bilstm: 32k tokens took RSS from 72 to 221 MB, back to 76 MB with it; turning the arena
# off left 152 MB held by malloc). Decode steps (T = 1) do not use it: their size is bounded by max_streams.
SHRINK = ort.RunOptions()
SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def load_session(path: Path, filename: str, meta: Meta, intra_op_threads: int, inter_op_threads: int,
                 recurrent: bool = True) -> ort.InferenceSession:
    """One graph of an artifact, read as untrusted bytes: self-contained, its recurrent nodes of meta.json's cell
    (`recurrent`), or none at all (a captioner's image encoder, a convolutional network)."""
    data = artifact.read_member(path, filename)
    cells = graph.recurrent_cells(graph.parse(data))
    if recurrent and cells != {meta.cell}:
        raise ValueError(f"meta.json cell is {meta.cell!r} but the graph's recurrent nodes are {sorted(cells) or 'none'}")
    if not recurrent and cells:
        raise ValueError(f"{filename} must have no recurrent nodes, it has {sorted(cells)}")
    try:
        return make_session(data, intra_op_threads, inter_op_threads)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise ValueError(f"ONNX Runtime cannot load {filename}: {err}") from err


def _check_io(sess: ort.InferenceSession, inputs: dict[str, str], outputs: list[str]) -> None:
    """The graph must have exactly the inputs (name -> element type) and outputs the meta promises."""
    got = {i.name: i.type for i in sess.get_inputs()}
    if got != inputs:
        raise ValueError(f"graph inputs {got} do not match meta.json {inputs}")
    names = [o.name for o in sess.get_outputs()]
    if sorted(names) != sorted(outputs):
        raise ValueError(f"graph outputs {names} do not match meta.json {outputs}")


def _check_shape(sess: ort.InferenceSession, name: str, expected: tuple[int | None, ...]) -> None:
    """A graph's declared shape of `name` against meta.json's (None: the batch/time axes), before any call.

    Checked before the self-check runs the graph, so a meta.json that lies about its sizes is refused
    with a clear message instead of failing inside ONNX Runtime. Symbolic or absent dims pass.
    """
    declared = {t.name: t.shape for t in [*sess.get_inputs(), *sess.get_outputs()]}[name]
    if declared is None or not isinstance(declared, list):
        return
    if len(declared) != len(expected):
        raise ValueError(f"graph {name} has {len(declared)} dims {declared}, meta.json implies {len(expected)}")
    for got, want in zip(declared, expected, strict=True):
        if want is not None and isinstance(got, int) and got != want:
            shown = ["?" if w is None else w for w in expected]
            raise ValueError(f"graph {name} has shape {declared}, meta.json implies {shown}")


class LMRunner:
    """tokens (B, T) + state [(L, B, H), ...] -> logits (B, T, V) + new state; prefill and decode share it."""

    def __init__(self, sess: ort.InferenceSession, meta: Meta) -> None:
        self.sess, self.meta = sess, meta
        self.specs = meta.state
        self.vocab_size = int(meta.sizes["vocab_size"])
        _check_io(sess, {artifact.TOKENS: "tensor(int64)", **{s.input: "tensor(float)" for s in self.specs}},
                  [artifact.LOGITS, *(s.output for s in self.specs)])
        _check_shape(sess, artifact.TOKENS, (None, None))
        _check_shape(sess, artifact.LOGITS, (None, None, self.vocab_size))
        for s in self.specs:
            _check_shape(sess, s.input, (s.n_layer, None, s.hidden_size))
            _check_shape(sess, s.output, (s.n_layer, None, s.hidden_size))
        self.state_inputs = [s.input for s in self.specs]
        self.outputs = [artifact.LOGITS, *(s.output for s in self.specs)]
        self.unrolled = UNROLLED_CELL_KEY in sess.get_modelmeta().custom_metadata_map

    def zero_state(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((s.n_layer, batch, s.hidden_size), np.float32) for s in self.specs]

    def run(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {artifact.TOKENS: tokens}
        feed.update(zip(self.state_inputs, state, strict=True))
        logits, *new = self.sess.run(self.outputs, feed, SHRINK if tokens.shape[1] > 1 else None)
        return logits, new

    def prefill(self, tokens: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
        """Read prompt characters (B, T) into the state; a prompt's logits are never needed.

        A graph with the cell written out (training/int8_lstm.py) reads T > 1 characters in an ONNX Loop whose
        per-iteration bookkeeping costs more than a whole T = 1 call: its prompts are read one character per
        call, in 0.6-0.7x the time at B = 1-16, T = 2-128 (for the LSTM op's graph one call is 1.2-3x faster
        than steps). The graph computes the same either way: prefill == steps exactly is checked at quantize.
        """
        if not self.unrolled:
            return self.run(tokens, state)[1]
        for t in range(tokens.shape[1]):
            _, state = self.run(tokens[:, t : t + 1], state)
        return state

    def self_check(self) -> None:
        """One real call at B=2, T=3 with the first and last token ids: shapes as meta.json says, finite logits.

        The last id proves the graph's embedding covers the whole vocabulary (ONNX Runtime refuses an
        out-of-range Gather), so no request can later fail on a token the tokenizer produces.
        """
        last = self.vocab_size - 1
        tokens = np.array([[0, last, 0], [last, 0, last]], np.int64)
        logits, state = self.run(tokens, self.zero_state(2))
        if logits.shape != (2, 3, self.vocab_size):
            raise ValueError(f"logits have shape {logits.shape}, expected (2, 3, {self.vocab_size})")
        if not np.isfinite(logits).all():
            raise ValueError("the graph returns non-finite logits from the zero state")
        for s, x in zip(self.specs, state, strict=True):
            if x.shape != (s.n_layer, 2, s.hidden_size):
                raise ValueError(f"state {s.output} has shape {x.shape}, expected ({s.n_layer}, 2, {s.hidden_size})")


GROUP_SPREAD = 1.25  # a group's longest row is at most this times its shortest (+2 tokens)


class ClassifierRunner:
    """Texts -> padded tokens (B, T) + lengths (B,) -> probabilities (B, C)."""

    def __init__(self, sess: ort.InferenceSession, meta: Meta, tokenizer: Tokenizer) -> None:
        if tokenizer.pad_id is None:
            raise ValueError("a classifier's tokenizer must define pad_id")
        self.sess, self.meta, self.pad_id = sess, meta, tokenizer.pad_id
        self.n_class = len(meta.labels)
        self.vocab_size = tokenizer.vocab_size
        _check_io(sess, {artifact.TOKENS: "tensor(int64)", artifact.LENGTHS: "tensor(int64)"}, [artifact.LOGITS])
        _check_shape(sess, artifact.TOKENS, (None, None))
        _check_shape(sess, artifact.LENGTHS, (None,))
        _check_shape(sess, artifact.LOGITS, (None, self.n_class))

    def run(self, rows: list[np.ndarray], max_tokens: int) -> np.ndarray:
        """Softmax probabilities (B, C) of token rows, in order; no call holds more than max_tokens padded tokens.

        The rows are sorted by length and run in groups of similar length, each padded to its
        longest row (padding never changes a row's result). A recurrent classifier is compute
        bound from batch 1: a pad token costs as much as a real one, so one batch padded to its
        longest text ran ~2x slower per text than the texts one by one on SST-2 sentences. ONNX
        Runtime's working memory grows with the padded tokens (~4.5 KB each for the bundled BiLSTM),
        hence the budget; a row longer than it runs alone.
        """
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        probs = np.empty((len(rows), self.n_class))
        start = 0
        while start < len(order):
            end, limit = start + 1, GROUP_SPREAD * len(rows[order[start]]) + 2
            while end < len(order) and len(rows[order[end]]) <= limit and (end + 1 - start) * len(rows[order[end]]) <= max_tokens:
                end += 1
            group = order[start:end]
            probs[group] = self._run_padded([rows[i] for i in group])
            start = end
        return probs

    def _run_padded(self, rows: list[np.ndarray]) -> np.ndarray:
        lengths = np.array([len(r) for r in rows], np.int64)
        tokens = np.full((len(rows), int(lengths.max())), self.pad_id, np.int64)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
        logits = self.sess.run([artifact.LOGITS], {artifact.TOKENS: tokens, artifact.LENGTHS: lengths}, SHRINK)[0]
        z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)  # (B, C)

    def self_check(self) -> None:
        """Two rows, the pad alone and the first and last ids: one probability per label, all finite."""
        probs = self.run([np.array([self.pad_id], np.int64), np.array([0, self.vocab_size - 1], np.int64)], 4)
        if probs.shape != (2, self.n_class):
            raise ValueError(f"logits have {probs.shape[1]} classes, meta.json lists {self.n_class} labels")
        if not np.isfinite(probs).all():
            raise ValueError("the graph returns non-finite logits")


class AttentionDecoder:
    """decoder.onnx of an encoder-decoder kind: one step of every row, attending over each row's memory."""

    def __init__(self, decoder: ort.InferenceSession, meta: Meta) -> None:
        self.session, self.specs = decoder, meta.state
        self.vocab_size = int(meta.sizes["vocab_size"])
        floats = {s.input: "tensor(float)" for s in self.specs}
        _check_io(decoder, {artifact.PREV_TOKEN: "tensor(int64)", **floats, artifact.MEMORY: "tensor(float)",
                            artifact.KEYS: "tensor(float)", artifact.SRC_MASK: "tensor(bool)"},
                  [artifact.LOGITS, *(s.output for s in self.specs), artifact.ATTENTION])
        _check_shape(decoder, artifact.MEMORY, (None, None, int(meta.sizes["memory_size"])))
        _check_shape(decoder, artifact.LOGITS, (None, self.vocab_size))
        _check_shape(decoder, artifact.ATTENTION, (None, None))
        for s in self.specs:
            for name in (s.input, s.output):
                _check_shape(decoder, name, (s.n_layer, None, s.hidden_size))
        self.outputs = [artifact.LOGITS, *(s.output for s in self.specs), artifact.ATTENTION]
        self.state_inputs = list(floats)

    def step(self, prev: np.ndarray, state: list[np.ndarray], memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        feed = {artifact.PREV_TOKEN: prev, artifact.MEMORY: memory, artifact.KEYS: keys, artifact.SRC_MASK: mask}
        feed.update(zip(self.state_inputs, state, strict=True))
        logits, *new, attention = self.session.run(self.outputs, feed)
        return logits, new, attention

    def check_step(self, memories: Sequence[Memory], width: int) -> None:
        """One step of two rows (their memories padded to `width` positions and masked) from the first and last
        target ids: logits (2, V), finite; the state as meta.json says; attention that sums to 1 over each row's
        real positions and is 0 beyond."""
        memory = np.zeros((2, width, memories[0].memory.shape[1]), np.float32)
        keys = np.zeros((2, width, memories[0].keys.shape[1]), np.float32)
        mask = np.zeros((2, width), bool)
        for i, m in enumerate(memories):
            memory[i, : m.length], keys[i, : m.length], mask[i, : m.length] = m.memory, m.keys, True
        state = [np.stack([a, b], axis=1) for a, b in zip(memories[0].state, memories[1].state, strict=True)]
        logits, new, attention = self.step(np.array([0, self.vocab_size - 1], np.int64), state, memory, keys, mask)
        if logits.shape != (2, self.vocab_size):
            raise ValueError(f"decoder logits have shape {logits.shape}, expected (2, {self.vocab_size})")
        if not np.isfinite(logits).all():
            raise ValueError("the decoder returns non-finite logits")
        for s, x in zip(self.specs, new, strict=True):
            if x.shape != (s.n_layer, 2, s.hidden_size):
                raise ValueError(f"state {s.output} has shape {x.shape}, expected ({s.n_layer}, 2, {s.hidden_size})")
        if (attention.shape != (2, width) or not np.allclose(attention.sum(axis=1), 1, atol=1e-4)
                or attention[~mask].any()):
            raise ValueError("the decoder's attention is not a distribution over each row's real source positions")


class TranslatorRunner:
    """encoder.onnx (sources -> memories, batched like a prefill) and decoder.onnx (one step of every row)."""

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession, meta: Meta, pad_id: int) -> None:
        self.encoder, self.decoder, self.meta, self.pad_id = encoder, decoder, meta, pad_id
        self.attend = AttentionDecoder(decoder, meta)
        sizes = meta.sizes
        self.vocab_size, self.src_vocab_size = int(sizes["vocab_size"]), int(sizes["src_vocab_size"])
        self.specs = meta.state
        floats = {s.input: "tensor(float)" for s in self.specs}
        _check_io(encoder, {artifact.SRC: "tensor(int64)", artifact.SRC_LENGTHS: "tensor(int64)"},
                  [artifact.MEMORY, artifact.KEYS, *floats])
        _check_shape(encoder, artifact.SRC, (None, None))
        _check_shape(encoder, artifact.MEMORY, (None, None, int(sizes["memory_size"])))
        for s in self.specs:
            _check_shape(encoder, s.input, (s.n_layer, None, s.hidden_size))
        self.encoder_outputs = [artifact.MEMORY, artifact.KEYS, *floats]

    def encode(self, sources: Sequence[np.ndarray]) -> list[Memory]:
        """Source id rows, padded into one call; each row's memory cut back to its own length."""
        lengths = np.array([len(s) for s in sources], np.int64)
        src = np.full((len(sources), int(lengths.max())), self.pad_id, np.int64)
        for i, s in enumerate(sources):
            src[i, : len(s)] = s
        memory, keys, *state = self.encoder.run(self.encoder_outputs, {artifact.SRC: src, artifact.SRC_LENGTHS: lengths})
        return [Memory(memory[i, :n], keys[i, :n], [x[:, i] for x in state]) for i, n in enumerate(lengths.tolist())]

    def step(self, prev: np.ndarray, state: list[np.ndarray], memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        return self.attend.step(prev, state, memory, keys, mask)

    def self_check(self) -> None:
        """Two sources (the first and last source ids, lengths 1 and 3), one decoder step (AttentionDecoder.check_step)."""
        last = self.src_vocab_size - 1
        self.attend.check_step(self.encode([np.array([last], np.int64), np.array([0, last, 0], np.int64)]), 3)


class CaptionerRunner:
    """encoder.onnx (images -> feature grids, one call for every image that joins together) and decoder.onnx."""

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession, meta: Meta) -> None:
        self.encoder, self.decoder, self.meta = encoder, decoder, meta
        self.attend = AttentionDecoder(decoder, meta)
        c, sizes = meta.captioner, meta.sizes
        self.height, self.width = int(c["image"]["height"]), int(c["image"]["width"])
        self.regions = int(c["grid"]["rows"]) * int(c["grid"]["cols"])
        self.specs = meta.state
        floats = {s.input: "tensor(float)" for s in self.specs}
        _check_io(encoder, {artifact.IMAGE: "tensor(float)"}, [artifact.MEMORY, artifact.KEYS, *floats])
        _check_shape(encoder, artifact.IMAGE, (None, 3, self.height, self.width))
        _check_shape(encoder, artifact.MEMORY, (None, self.regions, int(sizes["memory_size"])))
        for s in self.specs:
            _check_shape(encoder, s.input, (s.n_layer, None, s.hidden_size))
        self.encoder_outputs = [artifact.MEMORY, artifact.KEYS, *floats]

    def encode(self, sources: Sequence[np.ndarray]) -> list[Memory]:
        """Image tensors (3, H, W), stacked into one call: each one's grid of regions and initial state."""
        memory, keys, *state = self.encoder.run(self.encoder_outputs, {artifact.IMAGE: np.stack(sources)}, SHRINK)
        return [Memory(memory[i], keys[i], [x[:, i] for x in state]) for i in range(len(sources))]

    def step(self, prev: np.ndarray, state: list[np.ndarray], memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        return self.attend.step(prev, state, memory, keys, mask)

    def self_check(self) -> None:
        """Two images (black, white) -> grids of rows x cols regions; one decoder step (AttentionDecoder.check_step)."""
        shape = (3, self.height, self.width)
        memories = self.encode([np.full(shape, -1.0, np.float32), np.ones(shape, np.float32)])
        if any(m.length != self.regions for m in memories):
            raise ValueError(f"the image encoder returns {memories[0].length} regions, meta.json's grid has {self.regions}")
        self.attend.check_step(memories, self.regions)
