"""Seeded synthetic COYO-shaped data (metadata, labels, images) and `coyo-db demo`."""
