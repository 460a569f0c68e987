"""Start the web app: bind (127.0.0.1 unless told otherwise), print the URL with its per-start
token, serve until Ctrl-C."""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from coyo_db.errors import InputError, MissingExtraError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    catalog: Catalog,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = False,
    reviewer: str | None = None,
    emit: Callable[[str], None] = print,
) -> None:
    """Serve the app over `catalog` on `host`:`port` (0: a free port) until interrupted; the
    URL to open, token included, goes to `emit` first."""
    try:
        import flask  # noqa: F401  (the serve extra)
        from werkzeug.serving import make_server
    except ModuleNotFoundError:
        raise MissingExtraError(
            "coyo-db serve needs the serve extra: pip install 'coyo-db[serve]'"
        ) from None
    from coyo_db.serve.app import create_app

    if not 0 <= port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, not {port}")
    # Werkzeug logs a line per request at INFO: a page of thumbnails would flood the terminal
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    token = secrets.token_urlsafe(24)
    app = create_app(catalog, token, reviewer=reviewer)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/?token={token}"
    if not is_loopback(host):
        emit(f"warning: listening on {host}, reachable from other machines; keep the token secret")
    emit(f"coyo-db serve: {catalog.location}")
    emit(f"open {url}")
    emit("Ctrl-C stops the server")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
