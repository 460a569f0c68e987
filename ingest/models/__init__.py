"""Models registered by name (:mod:`coyo_db.ingest.registry`): embedders, copy descriptors and
labelers, with the shipped class lists the labelers map onto."""
