"""`coyo-db serve`: a local web app to look at the catalog, search it and review what dedup
and the audit decided."""
