"""rnnserve training side: PyTorch char-level language models, sentiment classifiers and translators."""

import os

# Idle OpenMP threads sleep instead of spinning. On a small shared machine (2 cores here), two
# processes with spinning threads slow each other 10x; passive waiting measured 12.5k vs 1.3k
# chars/s for a 2x256 LSTM next to another busy process. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
