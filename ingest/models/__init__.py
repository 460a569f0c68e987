"""Embedding models: image and text towers registered by family name."""
