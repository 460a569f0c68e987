"""Contamination audits: reference sets, copy candidates, verification, hits and the report."""
