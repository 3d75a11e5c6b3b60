"""Interpretability without torch: per-character activations traced from the served model.onnx (the Trace RPC),
the cell search that scores every unit against text features, a translation's alignment, and the pages and
pictures that show them."""
