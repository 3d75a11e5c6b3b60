"""rnnserve serving side: ONNX Runtime + gRPC, never torch."""
