"""rnnserve training side: PyTorch char-level language models and sentiment classifiers."""
