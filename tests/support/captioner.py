"""A captioner artifact made for the serving tests: random weights, exported by torch's ONNX exporter to exactly the
artifact contract (meta.json's captioner section, encoder.onnx, decoder.onnx, target.tokenizer.json), in seconds.

Its captions are nonsense, but its graphs are real: a convolutional encoder to a grid of regions, and an LSTM
decoder step with additive attention over them (Show, Attend and Tell's shape, at toy sizes), so the served path
can be compared with an in-process ONNX Runtime loop. The trained tiny captioner (tests/conftest.py) is the
training side's; this one needs no data and no training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from torch import nn

from service import artifact
from service.artifact import Meta
from service.artifact.image import ImageSpec

H, W, PATCH = 32, 48, 8  # image 32 x 48 -> grid 4 x 6
M, K, HD, E = 8, 12, 16, 8  # memory width, key width, decoder hidden size, word embedding
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
WORDS = SPECIALS + "a an the dog dogs man woman child boy girl runs jumps sits in on at park grass water ball red blue .".split()
MAX_TOKENS = 16


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, M, PATCH, stride=PATCH)
        self.keys = nn.Linear(M, K)
        self.h0, self.c0 = nn.Linear(M, HD), nn.Linear(M, HD)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory = self.conv(image).flatten(2).transpose(1, 2)  # (B, R, M), regions row-major
        mean = memory.mean(1)
        return memory, self.keys(memory), torch.tanh(self.h0(mean))[None], torch.tanh(self.c0(mean))[None]


class DecoderStep(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, E)
        self.query, self.score = nn.Linear(HD, K), nn.Linear(K, 1)
        self.cell = nn.LSTM(E + M, HD)
        self.out = nn.Linear(HD + M, vocab)

    def forward(self, prev, h0, c0, memory, keys, mask):  # the graph's six inputs
        score = self.score(torch.tanh(keys + self.query(h0[-1])[:, None])).squeeze(2).masked_fill(~mask, -1e9)
        attention = torch.softmax(score, 1)  # (B, R)
        context = (attention[:, :, None] * memory).sum(1)
        y, (hn, cn) = self.cell(torch.cat([self.embed(prev), context], 1)[None], (h0, c0))
        return 4 * self.out(torch.cat([y[0], context], 1)), hn, cn, attention


def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    return tok


def build(out: Path, seed: int = 0) -> Path:
    """Write the artifact to `out` (a version directory) and return it."""
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    encoder, decoder = Encoder().eval(), DecoderStep(len(WORDS)).eval()
    image = torch.randn(2, 3, H, W)
    b, br = {0: "batch"}, {0: "batch", 1: "regions"}
    state = {1: "batch"}
    torch.onnx.export(encoder, (image,), str(out / artifact.ENCODER_FILE), dynamo=False, opset_version=17,
                      input_names=[artifact.IMAGE], output_names=[artifact.MEMORY, artifact.KEYS, "h0", "c0"],
                      dynamic_axes={artifact.IMAGE: b, artifact.MEMORY: b, artifact.KEYS: b, "h0": state, "c0": state})
    with torch.no_grad():
        memory, keys, h0, c0 = encoder(image)
    inputs = (torch.tensor([2, 2]), h0, c0, memory, keys, torch.ones(2, memory.shape[1], dtype=torch.bool))
    torch.onnx.export(decoder, inputs, str(out / artifact.DECODER_FILE), dynamo=False, opset_version=17,
                      input_names=[artifact.PREV_TOKEN, "h0", "c0", artifact.MEMORY, artifact.KEYS, artifact.SRC_MASK],
                      output_names=[artifact.LOGITS, "hn", "cn", artifact.ATTENTION],
                      dynamic_axes={artifact.PREV_TOKEN: b, "h0": state, "c0": state, artifact.MEMORY: br,
                                    artifact.KEYS: br, artifact.SRC_MASK: br, artifact.LOGITS: b, "hn": state,
                                    "cn": state, artifact.ATTENTION: br})
    tokenizer().save(str(out / artifact.TARGET_TOKENIZER_FILE))
    Meta(kind="captioner", cell="lstm",
         sizes={"n_layer": 1, "hidden_size": HD, "n_embd": E, "vocab_size": len(WORDS), "memory_size": M},
         state=artifact.state_specs("lstm", 1, HD),
         captioner={"encoder": {"file": artifact.ENCODER_FILE}, "decoder": {"file": artifact.DECODER_FILE},
                    "tokenizer": {"file": artifact.TARGET_TOKENIZER_FILE}, "image": ImageSpec(H, W).to_dict(),
                    "grid": {"rows": H // PATCH, "cols": W // PATCH},
                    "special_ids": {name.strip("<>"): i for i, name in enumerate(SPECIALS)},
                    "max_len": {"tokens": MAX_TOKENS}, "beam": {"beam_size": 3, "length_penalty": 0.6}},
         description="random-weight captioner for the serving tests").save(out / artifact.META_FILE)
    return out
