"""The counting baseline of a char LM: Kneser-Ney n-grams on exactly the model's train/validation split.

A char LM's validation loss means little alone; next to the best Kneser-Ney n-gram on the same
split and the same vocabulary, it says what the recurrent network learned beyond counting
(Karpathy, Johnson & Fei-Fei 2015 report the LSTM 0.12 nats/char below a 20-gram).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.artifact.corpus import DataError
from service.artifact.tokenizer import Tokenizer
from training.data import CharCorpus, file_info
from training.ngram import MAX_ORDER, bits, evaluate_orders

METHOD = "interpolated modified Kneser-Ney character n-gram (Chen & Goodman 1998)"


def kn_baseline(corpus: CharCorpus, max_order: int = MAX_ORDER) -> dict[str, Any]:
    """The best order from 1 to max_order on the validation split, and every order's figure.

    Choosing the order on the validation text flatters the baseline, never the model it is compared with.
    """
    by_order = evaluate_orders(corpus.train, corpus.val, corpus.tokenizer.vocab_size, list(range(1, max_order + 1)))
    best = min(by_order, key=by_order.__getitem__)
    return {"method": METHOD, "order": best, "val_loss": by_order[best], "val_bpc": bits(by_order[best]),
            "val_chars": len(corpus.val) - 1, "val_loss_by_order": {str(n): round(v, 4) for n, v in by_order.items()}}


def baseline_of_run(config: dict[str, Any], tokenizer: Tokenizer, data: dict[str, Any]) -> dict[str, Any]:
    """kn_baseline on the corpus a checkpoint was trained on, split and encoded as its training was.

    `data` is the checkpoint's record of its files: a corpus that has moved or changed since is refused
    (DataError), since a baseline on other text would compare nothing.
    """
    path = Path(config["data"]["path"])
    recorded = data["val"]["sha256"]
    if not path.is_file():
        raise DataError(f"{path}: the training corpus is not there, so no baseline")
    if file_info(path)["sha256"] != recorded:
        raise DataError(f"{path}: the corpus changed since training (sha256 differs), so no baseline")
    return kn_baseline(CharCorpus.from_file(path, config["data"]["val_fraction"], tokenizer=tokenizer))


def margin(model_val_loss: float, baseline: dict[str, Any]) -> float:
    """How far the model is below the baseline, in nats/char: positive when the model is better."""
    return baseline["val_loss"] - model_val_loss
