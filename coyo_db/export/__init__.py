"""Subset exports: SQL-selected rows as Parquet, webdataset or Lance, with a replayable manifest."""
