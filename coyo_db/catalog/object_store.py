"""Catalog homes on object storage (``s3://bucket/prefix``): URIs, credentials, local cache.

Lance reads and writes the tables on the object store itself; what it needs to reach it comes
from the standard AWS environment variables, turned into Lance storage options here:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: an S3-compatible server (MinIO, Ceph, moto);
  an ``http://`` endpoint also allows plain HTTP;
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``: credentials;
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``: the bucket's region;
- ``AWS_ALLOW_HTTP``: ``true`` to allow plain HTTP explicitly.

Without credentials in the environment, Lance falls back to the usual AWS chain (instance
profile, ``~/.aws``). The DuckDB file and DuckDB's spill folder cannot live on an object
store: for a remote home they live in a local cache folder, ``$COYO_DB_CACHE/<hash>`` (default
``~/.cache/coyo-db/<hash>``), one per home.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

CACHE_ENV = "COYO_DB_CACHE"
SCHEMES = ("s3", "gs", "az")
# pathlib collapses "s3://b/p" to "s3:/b/p": a --home typed as a Path arrives like that.
_URI = re.compile(rf"^({'|'.join(SCHEMES)}):/+(.*)$")


def as_uri(location: str | os.PathLike[str]) -> str | None:
    """``scheme://rest`` when `location` names an object-store URI, else None."""
    match = _URI.match(os.fspath(location))
    if match is None:
        return None
    return f"{match.group(1)}://{match.group(2).rstrip('/')}"


def is_uri(location: str | os.PathLike[str]) -> bool:
    return as_uri(location) is not None


def storage_options(uri: str | os.PathLike[str]) -> dict[str, str] | None:
    """Lance storage options for `uri` from the environment; None for local paths."""
    uri = as_uri(uri)
    if uri is None or not uri.startswith("s3://"):
        return None
    env = os.environ
    options: dict[str, str] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    for variable, option in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ):
        if env.get(variable):
            options[option] = env[variable]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["aws_region"] = region
    if env.get("AWS_ALLOW_HTTP"):
        options["allow_http"] = env["AWS_ALLOW_HTTP"].lower()
    return options


def filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem for `uri` (same settings as :func:`storage_options`) and the path
    inside it, for listing and existence checks."""
    import pyarrow.fs as pafs

    uri = as_uri(uri) or uri
    if not uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    options = storage_options(uri) or {}
    kwargs: dict[str, Any] = {
        "access_key": options.get("aws_access_key_id"),
        "secret_key": options.get("aws_secret_access_key"),
        "session_token": options.get("aws_session_token"),
        "region": options.get("aws_region"),
        # Small files go up in one PutObject instead of a multipart upload.
        "allow_delayed_open": True,
    }
    endpoint = options.get("aws_endpoint")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs["endpoint_override"] = host or scheme
        kwargs["scheme"] = scheme if host else "https"
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), uri[5:]


def cache_dir(uri: str) -> Path:
    """The local folder of a remote home: DuckDB file, spills, caches."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base) if base else Path.home() / ".cache" / "coyo-db"
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return (root / digest).expanduser().resolve()
