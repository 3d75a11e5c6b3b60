"""What the server is measured against: the in-process ONNX Runtime loop and a naive torch prototype."""

from __future__ import annotations

import statistics
import time

import numpy as np

from service.artifact.sampling import sample
from service.models.model import Model
from service.settings import Settings


def inprocess_loop(model: Model, B: int, steps: int, warmup: int = 50) -> dict[str, float]:
    """The in-process limit: a plain Python loop of ORT decode steps at batch B, sampling with the shared sampler.

    Returns the median step time, the characters per second it implies, and the ORT call alone.
    """
    runner = model.runner
    state, ids = runner.zero_state(B), np.full(B, int(model.tokenizer.encode("\n")[0]), np.int64)
    temperature, top_k, top_p = np.ones(B), np.zeros(B, np.int64), np.ones(B)
    rng = np.random.default_rng(0)
    step_times, ort_times = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        logits, state = runner.run(ids[:, None], state)
        t1 = time.perf_counter()
        ids, _ = sample(logits[:, -1], temperature, top_k, top_p, rng.random(B), model.tokenizer.unk_id)
        t2 = time.perf_counter()
        if i >= warmup:
            step_times.append(t2 - t0)
            ort_times.append(t1 - t0)
    step = sum(step_times) / steps
    return {"B": B, "step_s": step, "step_median_s": statistics.median(step_times),
            "step_p99_s": float(np.percentile(step_times, 99)), "ort_s": sum(ort_times) / steps, "chars_per_s": B / step}


def naive_torch(model: Model, prompt: str, n: int, threads: int = 1) -> dict[str, float]:
    """A quick prototype's way to serve: torch eager, one request at a time, the whole text re-run for every character.

    The model is rebuilt with the artifact's architecture (cell, sizes) and fresh weights: the
    cost of a forward pass does not depend on the weight values.
    """
    import torch

    from training.model import CharLM, CharLMConfig

    torch.set_num_threads(threads)
    sizes = model.meta.sizes
    lm = CharLM(CharLMConfig(cell=model.meta.cell, vocab_size=sizes["vocab_size"], n_layer=sizes["n_layer"],
                             n_embd=sizes["n_embd"], hidden_size=sizes["hidden_size"])).eval()
    rng = np.random.default_rng(0)
    ids = [int(i) for i in model.tokenizer.encode(prompt)]
    one = (np.ones(1), np.zeros(1, np.int64), np.ones(1))
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(n):
            logits = lm(torch.tensor([ids]), *lm.init_state(1))[0]  # (1, T, V): the whole text, every time
            nxt, _ = sample(logits[:, -1].numpy(), *one, rng.random(1), model.tokenizer.unk_id)
            ids.append(int(nxt[0]))
    elapsed = time.perf_counter() - t0
    return {"chars": n, "seconds": elapsed, "chars_per_s": n / elapsed}


def naive_cost_at(model: Model, lengths: list[int], threads: int = 1, repeats: int = 3) -> list[float]:
    """Seconds the naive prototype spends on the character at each position (one forward pass over the text so far)."""
    import torch

    from training.model import CharLM, CharLMConfig

    torch.set_num_threads(threads)
    sizes = model.meta.sizes
    lm = CharLM(CharLMConfig(cell=model.meta.cell, vocab_size=sizes["vocab_size"], n_layer=sizes["n_layer"],
                             n_embd=sizes["n_embd"], hidden_size=sizes["hidden_size"])).eval()
    out = []
    with torch.no_grad():
        for T in lengths:
            tokens = torch.zeros(1, T, dtype=torch.long)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                lm(tokens, *lm.init_state(1))
                times.append(time.perf_counter() - t0)
            out.append(min(times))
    return out


def inprocess_classify(model: Model, texts: list[str], B: int, calls: int = 30,
                       max_tokens: int = Settings.classify_max_batch_tokens) -> float:
    """Texts per second of the classifier called in-process with batches of B texts (the batching ceiling), under
    the same per-call token budget as the server's default."""
    rows = [model.tokenizer.encode(t) for t in texts]
    rows = [r for r in rows if len(r)]
    times = []
    for i in range(calls):
        batch = [rows[(i * B + j) % len(rows)] for j in range(B)]
        t0 = time.perf_counter()
        model.runner.run(batch, max_tokens)
        times.append(time.perf_counter() - t0)
    return B / statistics.median(times)
