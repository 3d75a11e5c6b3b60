"""The Kneser-Ney baseline of a corpus, order by order, on the char LM recipes' train/validation split.

Usage: python -m bench.ngram --corpus ../shared/data/tinyshakespeare/input.txt --val-fraction 0.1 --order 7
Prints one JSON line per order 1..ORDER (validation nats/char and bits/char) and the time taken. The split
and the vocabulary are training/data.py's, so a figure here stands beside a model's val_loss; the model
itself lives in training/ngram.py (export records the best order's figure in meta.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from service.artifact.corpus import DataError
from training.data import CharCorpus
from training.ngram import MAX_ORDER, KneserNey, NGramCounts, bits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ngram", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="UTF-8 text file")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the last fraction of characters scored")
    p.add_argument("--order", type=int, default=MAX_ORDER, help=f"the highest order, at most {MAX_ORDER}")
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must lie in (0, 1)")
    if not 1 <= args.order <= MAX_ORDER:
        p.error(f"--order must be from 1 to {MAX_ORDER}")
    try:
        corpus = CharCorpus.from_file(args.corpus, args.val_fraction)
        t0 = time.perf_counter()
        counts = NGramCounts(corpus.train, corpus.tokenizer.vocab_size, args.order)
    except (DataError, ValueError) as err:
        sys.exit(f"error: {err}")
    built = time.perf_counter() - t0
    print(json.dumps({"corpus": args.corpus, "train_chars": len(corpus.train), "val_chars": len(corpus.val) - 1,
                      "vocab": corpus.tokenizer.vocab_size, "counts_s": round(built, 2)}))
    for n in range(1, args.order + 1):
        t0 = time.perf_counter()
        loss = KneserNey(counts, n).cross_entropy(corpus.val)
        print(json.dumps({"order": n, "val_loss_nats": round(loss, 4), "val_bpc": round(bits(loss), 4),
                          "score_s": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    main()
