"""The catalog layer: tables and their schemas, the DuckDB connection, the ledger, runs,
object storage and the read-only SQL guard. Everything else builds on it; it imports nothing
from the rest of coyo-db but :mod:`coyo_db.errors` and :mod:`coyo_db.progress`."""

from coyo_db.catalog.catalog import HOME_ENV, Catalog, resolve_home, run_statements

__all__ = ["HOME_ENV", "Catalog", "resolve_home", "run_statements"]
