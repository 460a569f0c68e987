"""Reviewers' decisions on what dedup and the contamination audit decided (`coyo-db review`)."""
