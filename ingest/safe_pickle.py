"""Read pickles that users hand in without running anything they carry.

Unpickling a file can call any importable function (the classic payload's `__reduce__` returns
`os.system`), so coyo-db never calls `pickle.load` on a user's file. :func:`load_plain` admits
only plain containers and scalars: every opcode that names a global (GLOBAL, STACK_GLOBAL, INST,
OBJ, the copyreg extension codes) goes through `find_class`, which always refuses, and without a
global nothing callable ever reaches the stack. The result is then walked once more, so a value
of another type (a bytearray, a pickle-5 out-of-band buffer) is refused as well.

Sets and frozensets have opcodes of their own from protocol 4 on; older protocols (and bytes
before protocol 3) rebuild them through a global, so such pickles are refused too.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, NoReturn

from coyo_db.errors import SourceFileError

PLAIN_TYPES: tuple[type, ...] = (
    dict,
    list,
    tuple,
    set,
    frozenset,
    str,
    bytes,
    int,
    float,
    bool,
    type(None),
)
_CONTAINERS = (dict, list, tuple, set, frozenset)


class UnsafePickleError(SourceFileError):
    """A pickle refers to a global (a class, a function) or holds a non-plain value."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> NoReturn:
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")

    def persistent_load(self, pid: Any) -> NoReturn:
        raise pickle.UnpicklingError("it refers to a persistent object")


def loads_plain(data: bytes, *, name: str = "<bytes>") -> Any:
    """Unpickle `data`, admitting only plain containers and scalars (see :data:`PLAIN_TYPES`).

    Raises :class:`UnsafePickleError` naming `name` for anything else, and
    :class:`SourceFileError` when `data` is not a pickle at all.
    """
    try:
        value = _PlainUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if message.startswith("it refers to"):
            raise UnsafePickleError(
                name, f"refused to unpickle: {message}; only plain containers and scalars are read"
            ) from None
        raise SourceFileError(name, f"not a readable pickle ({message})") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        # Malformed opcode streams surface as these (truncated file, stack underflow, a
        # reduce on a non-callable, BUILD on a plain container).
        raise SourceFileError(
            name, f"not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None
    _check_plain(value, name)
    return value


def load_plain(path: str | Path) -> Any:
    """Unpickle the file at `path` with :func:`loads_plain`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFileError(path, f"cannot read ({exc.strerror or exc})") from None
    return loads_plain(data, name=str(path))


def _check_plain(value: Any, name: str) -> None:
    """Walk `value` (iteratively: a deep tree must not exhaust the stack) checking every type."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) not in PLAIN_TYPES:
            raise UnsafePickleError(
                name,
                f"refused: it holds a {type(item).__name__}; only plain containers and"
                " scalars are read",
            )
        if isinstance(item, _CONTAINERS):
            if id(item) in seen:  # shared or self-referencing containers
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
