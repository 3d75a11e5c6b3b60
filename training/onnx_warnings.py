"""torch.onnx's RNN batch-size warning, shown only when the exported graph was not verified at several batch sizes.

The TorchScript exporter warns on every RNN that "a batch_size other than 1" may fail at another
batch size, and tells the user to export at batch 1. Our graphs take the initial states as inputs
(the fix that very message names) and export verifies them at batch 1 and 3 against torch, so once
that check passes the warning is wrong and only alarms the user. Every other warning is kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

BATCH_WARNING = "Exporting a model to ONNX with a batch_size other than 1"


def _reissue(caught: Iterable[warnings.WarningMessage]) -> None:
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


@contextmanager
def batch_warning_unless_it_fails() -> Iterator[None]:
    """Hold the warnings raised inside; re-issue them on leaving, minus BATCH_WARNING if the block raised nothing."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except BaseException:
        _reissue(caught)
        raise
    _reissue(w for w in caught if not (issubclass(w.category, UserWarning) and str(w.message).startswith(BATCH_WARNING)))
