"""The restricted unpickler: plain containers and scalars in, every global or object refused."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import pytest

from coyo_db.errors import CoyoDbError, SourceFileError
from coyo_db.ingest.safe_pickle import UnsafePickleError, load_plain, loads_plain


class _Payload:
    """The classic exploit: unpickling calls os.system with a command of the attacker's."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _Synset:
    def __init__(self) -> None:
        self.wnid = "n00004475"
        self.children = ["n00005787"]


PLAIN = {
    "n00004475": ["n00005787", "n00006024"],
    "nested": {"tuple": (1, 2.5, None, True, False), "text": "ünïcode", "big": 2**70},
    "empty": [],
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_values_round_trip_at_every_protocol(protocol):
    assert loads_plain(pickle.dumps(PLAIN, protocol=protocol)) == PLAIN


@pytest.mark.parametrize("protocol", [4, 5])
def test_sets_frozensets_and_bytes_have_their_own_opcodes_from_protocol_4(protocol):
    value = {"set": {1, 2}, "frozen": frozenset({"a"}), "bytes": b"\x00\xff"}
    assert loads_plain(pickle.dumps(value, protocol=protocol)) == value


def test_sets_pickled_through_a_global_are_refused():
    # Protocols below 4 rebuild a set by calling builtins.set: a global, so refused.
    with pytest.raises(UnsafePickleError, match="set"):
        loads_plain(pickle.dumps({1, 2}, protocol=2))


def test_shared_and_self_referencing_containers_are_read():
    shared = ["n00005787"]
    loop: list = [shared, shared]
    loop.append(loop)
    value = loads_plain(pickle.dumps(loop))
    assert value[0] is value[1] and value[2] is value


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
def test_code_execution_payloads_are_refused_without_running(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "imagenet21k_tree.pickle"
    path.write_bytes(pickle.dumps({"tree": payload(marker)}, protocol=protocol))
    with pytest.raises(UnsafePickleError) as caught:
        load_plain(path)
    assert not marker.exists()
    message = str(caught.value)
    assert str(path) in message and "refused" in message
    assert "system" in message or "eval" in message
    assert isinstance(caught.value, CoyoDbError)  # the CLI prints it as one line


def test_the_payload_is_real(tmp_path):
    """Guards the test above: plain pickle.loads on the same bytes does run the command."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize(
    "value",
    [_Synset(), collections.OrderedDict(a=1), collections.Counter("ab"), Path("x"), range(3)],
    ids=["instance", "OrderedDict", "Counter", "Path", "range"],
)
def test_objects_are_refused(value):
    with pytest.raises(UnsafePickleError, match="refused"):
        loads_plain(pickle.dumps({"root": value}), name="tree.pickle")


def test_a_bytearray_needs_no_global_but_is_refused_by_type():
    data = pickle.dumps({"raw": bytearray(b"abc")}, protocol=5)
    assert b"builtins" not in data  # protocol 5 has a BYTEARRAY8 opcode
    with pytest.raises(UnsafePickleError, match="bytearray"):
        loads_plain(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<!doctype html><html><body>Sign in</body></html>",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
        pickle.dumps(PLAIN)[:-5],
    ],
    ids=["empty", "html", "lfs-pointer", "truncated"],
)
def test_files_that_are_not_pickles_raise_source_file_errors(tmp_path, data):
    path = tmp_path / "tree.pickle"
    path.write_bytes(data)
    with pytest.raises(SourceFileError, match="not a readable pickle") as caught:
        load_plain(path)
    assert not isinstance(caught.value, UnsafePickleError)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_source_file_error(tmp_path):
    with pytest.raises(SourceFileError, match="cannot read"):
        load_plain(tmp_path / "absent.pickle")
