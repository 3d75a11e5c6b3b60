"""model.onnx as untrusted bytes: parsed without touching the filesystem, refused if it points at other files."""

from __future__ import annotations

import onnx
from google.protobuf.message import DecodeError, Message

# DynamicQuantizeLSTM: ONNX Runtime's int8-weight LSTM (an int8 artifact, training/quantize.py).
_RECURRENT = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn", "DynamicQuantizeLSTM": "lstm"}
# Model metadata naming the cell a graph computes with plain ops (the static int8 graphs of training/int8_graph.py,
# a captioner's one-step LSTMCell decoder), which has no recurrent node to recognise it by.
UNROLLED_CELL_KEY = "rnnserve.unrolled_cell"


def _walk(message: Message):
    """Every sub-message of a protobuf message (graphs nested in If/Loop/Scan attributes and functions included)."""
    stack = [message]
    while stack:
        m = stack.pop()
        yield m
        for field in m.DESCRIPTOR.fields:
            if field.message_type is None or field.message_type.GetOptions().map_entry:
                continue
            value = getattr(m, field.name)
            if field.is_repeated:
                stack.extend(value)
            elif m.HasField(field.name):
                stack.append(value)


def parse(data: bytes) -> onnx.ModelProto:
    """model.onnx's bytes -> ModelProto; ValueError if they are not a graph or if any tensor lives in an external file.

    External data would make ONNX Runtime (or onnx's numpy_helper) open a path named inside the
    graph, relative to the model file or, for a graph given as bytes, to the working directory:
    the service would read files outside the repository. Exported artifacts never use it.
    """
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:  # upb raises DecodeError; other backends differ
        raise ValueError(f"model.onnx is not an ONNX model: {err}") from None
    if not model.HasField("graph"):
        raise ValueError("model.onnx holds no graph")
    for m in _walk(model):
        if isinstance(m, onnx.TensorProto) and (m.data_location == onnx.TensorProto.EXTERNAL or len(m.external_data)):
            raise ValueError(f"model.onnx stores tensor {m.name!r:.60} in an external file; only self-contained graphs load")
    return model


def recurrent_cells(model: onnx.ModelProto) -> set[str]:
    """The cells ("lstm", "gru", "rnn") of the graph's recurrent nodes, wherever they are nested, and the unrolled one."""
    cells = {_RECURRENT[m.op_type] for m in _walk(model) if isinstance(m, onnx.NodeProto) and m.op_type in _RECURRENT}
    return cells | {p.value for p in model.metadata_props if p.key == UNROLLED_CELL_KEY}
