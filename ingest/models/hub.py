"""Pretrained weights named by a tag: the local cache first, the network only if it answers.

A model spec with a pretrained tag (``open_clip:ViT-B-32:laion2b_s34b_b79k``) is loaded by its
library, which asks the Hugging Face hub. Offline, that means a warning per retry (5 retries,
23 s of back-off per file, two files), an error log, and then the error itself.
:func:`cached_or_online` loads the weights from the hub's local cache with the hub in offline
mode first; only when they are not cached does it check that the hub answers (one TCP connect,
:data:`PROBE_SECONDS` at most) before letting the library download. A hub that does not answer
is :class:`HubUnreachable`, which the caller turns into one line that says what to do.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlparse

T = TypeVar("T")

PROBE_SECONDS = 3.0
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_HUB_LOGGERS = ("huggingface_hub", "urllib3")


class HubUnreachable(OSError):
    """The weights are not cached and the hub does not answer."""


def hub_host() -> str:
    """The host the hub is reached at (``HF_ENDPOINT`` or huggingface.co)."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return urlparse(endpoint).hostname or "huggingface.co"


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub answers a TCP connect; False without trying when the user set the hub
    offline (``HF_HUB_OFFLINE``)."""
    if any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on") for name in _OFFLINE_ENV):
        return False
    try:
        with socket.create_connection((hub_host(), 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def hub_offline() -> Iterator[None]:
    """The hub client in offline mode (cache only) within the block, then as it was."""
    saved = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    os.environ.update({name: "1" for name in _OFFLINE_ENV})
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    was = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # read when a request is made, set at import
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = was
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _DownloadNoise(logging.Filter):
    """Drops the error a library logs just before raising it (open_clip's "Failed to download
    weights"): the caller reports the failure once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("Failed to download")


@contextmanager
def quiet_download_logs() -> Iterator[None]:
    """The hub's retry warnings and the libraries' download errors kept off the terminal."""
    root, noise = logging.getLogger(), _DownloadNoise()
    levels = {name: logging.getLogger(name).level for name in _HUB_LOGGERS}
    root.addFilter(noise)
    for name in _HUB_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeFilter(noise)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def cached_or_online(load: Callable[[], T]) -> T:
    """`load()` with the hub offline (the weights from the local cache); if that fails, and the
    hub answers, `load()` again online. Raises :class:`HubUnreachable` when the weights are not
    cached and the hub does not answer, else what the online `load()` raises."""
    with quiet_download_logs():
        try:
            with hub_offline():
                return load()
        except (OSError, RuntimeError, ValueError):
            pass
        if not hub_reachable():
            raise HubUnreachable(f"not in the local cache, and {hub_host()} cannot be reached")
        return load()
