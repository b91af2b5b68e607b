"""The client-facing gRPC gateway (grpc.aio). Needs S3, never Ray."""
