"""The append-only JSON Lines files behind collection's responses and scores and the offline
`lookahead route`: a torn last line is skipped on read and cut off (with a warning) on repair."""

from __future__ import annotations

import logging

import pytest

from lookahead_router.data.append_log import AppendLog
from lookahead_router.errors import LookaheadError

WHOLE = b'{"id": "a"}\n'


@pytest.mark.parametrize("content, kept", [
    (b"", b""),
    (WHOLE, WHOLE),
    (WHOLE + b'{"id": "b', WHOLE),                       # killed mid-write
    (b'{"id', b""),                                      # killed during the first line
    (WHOLE + b"x" * 200_000, WHOLE),                     # a torn line longer than one read of the tail
    (b'{"t": "' + b"y" * 100_000 + b'"}\n{"i', b'{"t": "' + b"y" * 100_000 + b'"}\n'),
])
def test_a_torn_last_line_is_skipped_then_cut_off(tmp_path, caplog, content, kept):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    log = AppendLog(path)
    assert len(list(log.rows())) == kept.count(b"\n")
    assert path.read_bytes() == content                   # reading changes nothing
    with caplog.at_level(logging.WARNING):
        assert log.repair() == len(content) - len(kept)
    assert path.read_bytes() == kept
    assert ("partial last line" in caplog.text) == (kept != content)
    log.append([{"id": "c", "text": "é"}])
    assert path.read_bytes() == kept + '{"id": "c", "text": "é"}\n'.encode()


def test_a_malformed_complete_line_names_file_and_line(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(WHOLE + b"[1, 2]\n")

    class FileError(LookaheadError):
        pass
    with pytest.raises(FileError, match=r"f\.jsonl:2: expected a JSON object, not list; fix it"):
        list(AppendLog(path, FileError).rows("; fix it"))


def test_a_missing_file_reads_empty_and_append_creates_it(tmp_path):
    log = AppendLog(tmp_path / "new" / "f.jsonl")
    assert list(log.rows()) == [] and log.repair() == 0
    log.append([])
    assert not log.path.exists()
    log.append([{"id": 1}, {"id": 2}])
    assert [row["id"] for _, row in log.rows()] == [1, 2]
