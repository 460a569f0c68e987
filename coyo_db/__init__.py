"""coyo-db: columnar analytics and curation for COYO-700M-shaped image-text datasets.

>>> import coyo_db
>>> cat = coyo_db.Catalog("coyo-db-home")        # doctest: +SKIP
>>> cat.pl("SELECT count(*) FROM pairs")          # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coyo_db.errors import CoyoDbError
from coyo_db.version import __version__

__all__ = ["Catalog", "CoyoDbError", "__version__"]

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog


def __getattr__(name: str) -> object:
    # Keep `import coyo_db` cheap: the catalog pulls in DuckDB and Arrow.
    if name == "Catalog":
        from coyo_db.catalog import Catalog

        return Catalog
    raise AttributeError(name)
