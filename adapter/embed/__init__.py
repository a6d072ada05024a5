"""Embedding: model registry, image decoding, encoders."""
