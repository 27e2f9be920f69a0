"""Ragline's generator service: answers questions from given passages with a language model."""
