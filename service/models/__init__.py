"""Loaded models: the repository on disk, the ONNX Runtime runners, and hot reload."""
