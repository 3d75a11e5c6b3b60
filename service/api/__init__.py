"""The gRPC surface: servicers (native rnnserve.v1, Open Inference Protocol v2, Admin), request validation, security,
and the edge where exceptions become status codes. Protos in, domain objects to the engines, protos out."""
