"""Ingest jobs: readers and writers that fill the catalog's tables."""
