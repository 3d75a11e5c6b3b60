"""The artifact contract, models/<name>/<version>/{model.onnx, tokenizer.json, meta.json}: the one thing training
and serving share. Standard library, numpy and onnx only: training imports this package and nothing else of service/.

meta (what meta.json holds), files (how an artifact's files are read as untrusted input) and kinds (what
each kind's meta.json must say) are re-exported here; tokenizer, sampling, graph (model.onnx as untrusted
bytes) and corpus (the data a recipe names) are imported from their modules.
"""

from service.artifact.files import MAX_BYTES, META_FILE, MODEL_FILE, TOKENIZER_FILE, parse_json, read_inside, read_member, shown
from service.artifact.kinds import KINDS, StateSpec, state_specs
from service.artifact.meta import CELLS, FORMAT, LENGTHS, LOGITS, MAX_SIZES, TOKENS, Meta

__all__ = ["CELLS", "FORMAT", "KINDS", "LENGTHS", "LOGITS", "MAX_BYTES", "MAX_SIZES", "META_FILE", "MODEL_FILE",
           "TOKENIZER_FILE", "TOKENS", "Meta", "StateSpec", "parse_json", "read_inside", "read_member", "shown", "state_specs"]
