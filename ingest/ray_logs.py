"""Ray's own log lines kept off the user's terminal while coyo-db runs a Ray session.

Ray's C++ core writes glog lines (``[2026-... E 123 123] core_worker.cc:2465: ...``) straight
to the process's file descriptor 2, and the processes a local Ray starts inherit it; Python's
`logging` cannot reach them. :func:`ray_output_to_file` points descriptor 2 at a log file for
the session, and gives Python's ``sys.stderr`` (where coyo-db's progress bars and messages go)
a copy of the terminal, so that only coyo-db's own output reaches the user; Ray's Python
loggers write to the same file. Failures still
arrive as exceptions; the lines themselves stay in the file (:func:`log_path`).

A user who sets ``RAY_BACKEND_LOG_LEVEL`` (Ray's own knob for its C++ logs) asked to see
them: then nothing is redirected.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

RAY_LOG_LEVEL_ENV = "RAY_BACKEND_LOG_LEVEL"


def log_path() -> Path:
    """Where a session's Ray lines go: one file per coyo-db process, in the temp folder."""
    return Path(tempfile.gettempdir()) / "coyo-db-ray" / f"driver-{os.getpid()}.log"


class _RayRecordsTo(logging.Filter):
    """Sends the records of Ray's loggers to `handler` instead of the handler it filters."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "ray" or record.name.startswith("ray."):
            self.handler.handle(record)
            return False
        return True


@contextmanager
def ray_output_to_file() -> Iterator[Path | None]:
    """Within the block, what is written to descriptor 2 goes to :func:`log_path`, and
    ``sys.stderr`` writes to the terminal. Yields the file (None: nothing was redirected, on
    a system without descriptors or when the user set ``RAY_BACKEND_LOG_LEVEL``)."""
    if os.name != "posix" or RAY_LOG_LEVEL_ENV in os.environ:
        yield None
        return
    try:
        sys.stderr.flush()
        terminal_fd = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no descriptor 2 to begin with
        yield None
        return
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    old_stderr = sys.stderr
    terminal = os.fdopen(
        os.dup(terminal_fd),
        "w",
        buffering=1,
        encoding=getattr(old_stderr, "encoding", None) or "utf-8",
        errors=getattr(old_stderr, "errors", None) or "backslashreplace",
    )
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = terminal
    # Ray's Python handler, and logging's last resort when Ray has removed it, write to
    # whatever sys.stderr is when a line comes: Ray's lines go to the file instead
    ray_logger = logging.getLogger("ray")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    ray_handlers, ray_logger.handlers = ray_logger.handlers, [handler]
    divert = _RayRecordsTo(handler)
    last_resort = logging.lastResort
    if last_resort is not None:
        last_resort.addFilter(divert)
    log.debug("Ray's own log lines go to %s", path)
    try:
        yield path
    finally:
        if last_resort is not None:
            last_resort.removeFilter(divert)
        ray_logger.handlers = ray_handlers
        handler.close()
        terminal.flush()
        sys.stderr = old_stderr
        os.dup2(terminal_fd, 2)
        os.close(terminal_fd)
        terminal.close()
