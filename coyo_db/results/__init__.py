"""User SQL over the catalog and its results as a terminal table, CSV, JSON or Parquet."""
