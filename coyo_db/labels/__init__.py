"""Labels: COYO-Labeled ingest, model labeling, taxonomies and their hierarchy."""
