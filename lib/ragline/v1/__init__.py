"""Generated protobuf and gRPC stubs for the `ragline.v1` API (`make protos` writes them; do not edit)."""
