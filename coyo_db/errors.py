"""The one family of user-facing errors.

Every mistake a user can make (a bad path, a malformed file, a refused statement) raises a
subclass of :class:`CoyoDbError`. The CLI turns these into one line on stderr and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CoyoDbError(Exception):
    """Root of every error coyo-db raises for a user's mistake."""

    exit_code = 2


class InputError(CoyoDbError, ValueError):
    """An argument or option that cannot be used as given."""


class CatalogError(CoyoDbError):
    """The catalog directory is missing, locked, or lacks a table that was asked for."""


class SourceFileError(CoyoDbError):
    """A file handed to an ingest job is not what it claims to be (HTML, LFS pointer, truncated)."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SchemaError(SourceFileError):
    """An input file lacks a column, or holds one whose type cannot be cast."""


class QueryError(CoyoDbError):
    """A SQL statement failed to parse, bind or run."""


class ReadOnlyError(QueryError):
    """A statement would write, attach, install or copy out through a read-only query."""


class MissingExtraError(CoyoDbError, ImportError):
    """An optional dependency is not installed; the message names the pip command."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"this needs the '{package}' package: pip install 'coyo-db[{extra}]'")
