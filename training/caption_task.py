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


class CaptionTask:
    """Mini-batches of `batch_size` captions (each with its image's features), reshuffled each epoch."""

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
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch, self.next_batch = 0, 0
        self.perm = self.rng.permutation(len(self.targets))

    def train_step(self) -> tuple[float, int]:
        B = self.cfg.batch_size
        if self.next_batch * B >= len(self.perm):
            self.epoch += 1
            self.perm, self.next_batch = self.rng.permutation(len(self.targets)), 0
        idx = self.perm[self.next_batch * B : (self.next_batch + 1) * B]
        self.next_batch += 1
        y, prev = pad_targets([self.targets[i] for i in idx])  # (B, T)
        features = torch.from_numpy(np.asarray(self.features[self.image_of[idx]], dtype=np.float32))
        logits, alphas = self.model(features, torch.from_numpy(prev))  # (B, T, V), (B, T, R)
        target = torch.from_numpy(y)
        real = target != SPECIAL_IDS.pad  # (B, T)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=SPECIAL_IDS.pad,
                               label_smoothing=self.cfg.label_smoothing)
        total = loss
        if self.model.cfg.use_attention and self.model.cfg.attention_reg > 0:
            # Doubly stochastic attention (Xu et al. 2015, eq. 14): over a caption's real words, each region's
            # attention should sum to about one, so every part of the image is looked at.
            coverage = (alphas * real.unsqueeze(2)).sum(dim=1)  # (B, R)
            total = loss + self.model.cfg.attention_reg * ((1 - coverage) ** 2).sum(dim=1).mean()
        total.backward()
        return loss.item(), int(real.sum())

    def evaluate(self) -> dict[str, Any]:
        """Teacher-forced loss and perplexity on the dev captions; BLEU-1..4 and CIDEr of greedy dev captions."""
        loss, tokens = teacher_forced_loss(self.model, self.dev_features, self.dev_image_of, self.dev_targets,
                                           self.cfg.eval_batch_size)
        hyps = caption_features(self.model, self.dev_features, self.max_tokens)
        scores = score(self.tok, hyps, self.dev.captions)
        return {"val_loss": loss, "val_ppl": math.exp(loss), "val_tokens": tokens, "epoch": self.epoch,
                **{f"val_{k}": v for k, v in scores.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "perm": torch.from_numpy(self.perm),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.epoch, self.next_batch, self.perm = s["epoch"], s["next_batch"], s["perm"].numpy()
        self.rng.bit_generator.state = s["rng"]
