"""Ragline's retriever service: stores chunked, embedded documents in PostgreSQL + pgvector and searches them."""
