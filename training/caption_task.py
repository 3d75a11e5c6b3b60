"""The captioning task: cached image features, shuffled (image, caption) pairs, one teacher-forced step with the
doubly stochastic attention penalty, and validation by loss and greedy BLEU/CIDEr on the dev images."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from service.artifact.image import ImageSpec
from training.caption_data import SPECIAL_IDS, CaptionSplit, CaptionTokenizer, learn_tokenizer, read_split
from training.caption_eval import caption_features, pad_targets, score, teacher_forced_loss
from training.captioner import Captioner, CaptionerConfig
from training.config import TrainConfig
from training.data import file_info
from training.distributed import SINGLE, World
from training.feature_cache import image_features


def image_spec(cfg: TrainConfig) -> ImageSpec:
    return ImageSpec(cfg.data.image_height, cfg.data.image_width)


def split_features(cfg: TrainConfig, split: CaptionSplit, progress: bool = True) -> np.ndarray:
    return image_features(cfg.data.path, split.names, image_spec(cfg), cfg.data.cache_dir, progress=progress)


def caption_pairs(split: CaptionSplit, tok: CaptionTokenizer, max_tokens: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every (image index, EOS-terminated caption ids) pair of a split, captions in file order."""
    image_of = np.repeat(np.arange(len(split.names)), [len(c) for c in split.captions])
    return image_of, tok.encode([c for caps in split.captions for c in caps], max_tokens)


def data_info(cfg: TrainConfig) -> dict[str, Any]:
    root, limit = cfg.data.path, cfg.data.limit_images
    info: dict[str, Any] = {"captions": file_info(f"{root}/captions.token.txt"),
                            "manifest": file_info(f"{root}/images_manifest.tsv")}
    for split in ("train", "dev", "test"):
        info[split] = {**file_info(f"{root}/split_{split}.txt"), **({"first_images": limit} if limit else {})}
    return info


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Indices in batches of `batch_size` captions of similar length, in random order: the decoder runs as many
    steps as the longest caption of a batch, so sorting within pools of `pool` batches (after a shuffle) cuts
    the steps spent on padding while every epoch still sees a different mix."""
    order = rng.permutation(len(lengths))
    batches = []
    for i in range(0, len(order), pool * batch_size):
        chunk = order[i : i + pool * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


class CaptionTask:
    """Mini-batches of `batch_size` captions of similar length (each with its image's features), reshuffled each epoch."""

    unit = "token"  # caption words, EOS included

    def __init__(self, cfg: TrainConfig, ckpt: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        d = cfg.data
        train = read_split(d.path, "train", d.limit_images)
        self.dev = read_split(d.path, "dev", d.limit_images)
        if ckpt:
            self.tok = CaptionTokenizer.from_dict(ckpt["tokenizer"])
        else:  # learned on the training captions only
            self.tok = CaptionTokenizer(learn_tokenizer([c for caps in train.captions for c in caps], d.min_freq))
        self.max_tokens = cfg.decode.max_len_b
        self.features = split_features(cfg, train)
        self.dev_features = split_features(cfg, self.dev)
        self.image_of, self.targets = caption_pairs(train, self.tok, self.max_tokens)
        self.dev_image_of, self.dev_targets = caption_pairs(self.dev, self.tok, self.max_tokens)
        self.derived = {"vocab_size": self.tok.vocab_size, "pad_id": SPECIAL_IDS.pad,
                        "feature_size": int(self.features.shape[1])}
        model_cfg = cfg.model_config(**self.derived)
        assert isinstance(model_cfg, CaptionerConfig)  # the task is "captioning"
        self.model = Captioner(model_cfg)
        self.data_info = data_info(cfg)
        self.lengths = np.array([len(t) for t in self.targets])
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch, self.next_batch = 0, 0
        self.batches = length_batches(self.lengths, cfg.batch_size, self.rng)
        self.world = SINGLE

    def shard(self, world: World) -> None:
        """Rank r takes its contiguous slice of the captions of each global (length-bucketed) batch."""
        self.world = world

    def train_step(self, model: torch.nn.Module) -> tuple[torch.Tensor, int]:
        if self.next_batch >= len(self.batches):
            self.epoch += 1
            self.batches, self.next_batch = length_batches(self.lengths, self.cfg.batch_size, self.rng), 0
        batch = self.batches[self.next_batch]  # the global batch
        self.next_batch += 1
        idx, weight = self.world.share(batch)
        y, prev = pad_targets([self.targets[i] for i in idx])  # (b, T)
        features = torch.from_numpy(np.asarray(self.features[self.image_of[idx]], dtype=np.float32))
        logits, alphas = model(features, torch.from_numpy(prev))  # (b, T, V), (b, T, R)
        target = torch.from_numpy(y)
        real = target != SPECIAL_IDS.pad  # (b, T)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=SPECIAL_IDS.pad,
                               label_smoothing=self.cfg.label_smoothing, reduction="sum")
        # Means over the global batch (its words, its captions), which every rank knows without communicating.
        total = loss / int(self.lengths[batch].sum())
        if self.model.cfg.use_attention and self.model.cfg.attention_reg > 0:
            # Doubly stochastic attention (Xu et al. 2015, eq. 14): over a caption's real words, each region's
            # attention should sum to about one, so every part of the image is looked at.
            coverage = (alphas * real.unsqueeze(2)).sum(dim=1)  # (b, R)
            total = total + self.model.cfg.attention_reg * ((1 - coverage) ** 2).sum() / len(batch)
        return total * weight, int(real.sum()) if weight else 0

    def evaluate(self) -> dict[str, Any]:
        """Teacher-forced loss and perplexity on the dev captions; BLEU-1..4 and CIDEr of greedy dev captions."""
        loss, tokens = teacher_forced_loss(self.model, self.dev_features, self.dev_image_of, self.dev_targets,
                                           self.cfg.eval_batch_size)
        hyps = caption_features(self.model, self.dev_features, self.max_tokens)
        scores = score(self.tok, hyps, self.dev.captions)
        return {"val_loss": loss, "val_ppl": math.exp(loss), "val_tokens": tokens, "epoch": self.epoch,
                **{f"val_{k}": v for k, v in scores.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "rng": self.rng.bit_generator.state,
                "order": torch.from_numpy(np.concatenate(self.batches)),
                "sizes": torch.tensor([len(b) for b in self.batches])}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.epoch, self.next_batch = s["epoch"], s["next_batch"]
        self.rng.bit_generator.state = s["rng"]
        self.batches = np.split(s["order"].numpy(), np.cumsum(s["sizes"].numpy())[:-1])


def evaluate_captioner(model: Captioner, tok: CaptionTokenizer, cfg: TrainConfig, split_name: str,
                       beam_size: int = 1) -> dict[str, Any]:
    """Loss, perplexity, BLEU-1..4 and CIDEr (greedy, or beam search with the recipe's length penalty) of a
    checkpoint on one split's cached features: on all its images and on those from original photos."""
    split = read_split(cfg.data.path, split_name, cfg.data.limit_images)
    features = split_features(cfg, split)
    image_of, targets = caption_pairs(split, tok, cfg.decode.max_len_b)
    loss, tokens = teacher_forced_loss(model, features, image_of, targets)
    alpha = cfg.decode.length_penalty if beam_size > 1 else 0.0
    hyps = caption_features(model, features, cfg.decode.max_len_b, beam_size, alpha)
    originals = [i for i, k in enumerate(split.kinds) if k == "original"]
    return {"split": split_name, "images": len(hyps), "loss": loss, "ppl": math.exp(loss), "tokens": tokens,
            "beam_size": beam_size, "length_penalty": alpha, "all": score(tok, hyps, split.captions),
            "original": score(tok, [hyps[i] for i in originals], [split.captions[i] for i in originals]),
            "original_images": len(originals), "examples": tok.decode(hyps[:3])}
