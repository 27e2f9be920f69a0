"""Ragline's embedder service: turns text into vectors over gRPC (`ragline.v1.EmbedderService`)."""
