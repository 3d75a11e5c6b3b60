"""The artifact contract, models/<name>/<version>/{model.onnx, tokenizer.json, meta.json}: the one thing training
and serving share. Standard library, numpy, onnx and Pillow only (and onnxruntime in session.py, the session a
graph is served in): training imports this package and nothing else of service/.

meta (what meta.json holds), files (how an artifact's files are read as untrusted input) and kinds (what
each kind's meta.json must say) are re-exported here; tokenizer, sampling, graph (model.onnx as untrusted
bytes), corpus (the data a recipe names) and session (the ONNX Runtime session a graph runs in) are imported
from their modules.
"""

from service.artifact.files import (
    DECODER_FILE,
    ENCODER_FILE,
    MAX_BYTES,
    META_FILE,
    MODEL_FILE,
    SOURCE_TOKENIZER_FILE,
    TARGET_TOKENIZER_FILE,
    TOKENIZER_FILE,
    parse_json,
    read_inside,
    read_member,
    shown,
)
from service.artifact.kinds import CAPTIONER_KEYS, KINDS, TRANSLATOR_KEYS, StateSpec, state_specs
from service.artifact.meta import (
    ATTENTION,
    CELLS,
    FORMAT,
    IMAGE,
    KEYS,
    LENGTHS,
    LOGITS,
    MAX_SIZES,
    MEMORY,
    PREV_TOKEN,
    SRC,
    SRC_LENGTHS,
    SRC_MASK,
    TOKENS,
    Meta,
)

__all__ = ["ATTENTION", "CAPTIONER_KEYS", "CELLS", "DECODER_FILE", "ENCODER_FILE", "FORMAT", "IMAGE", "KEYS",
           "KINDS", "LENGTHS", "LOGITS", "MAX_BYTES", "MAX_SIZES", "MEMORY", "META_FILE", "MODEL_FILE", "PREV_TOKEN",
           "SOURCE_TOKENIZER_FILE", "SRC", "SRC_LENGTHS", "SRC_MASK", "TARGET_TOKENIZER_FILE", "TOKENIZER_FILE",
           "TOKENS", "TRANSLATOR_KEYS", "Meta", "StateSpec", "parse_json", "read_inside", "read_member", "shown",
           "state_specs"]
