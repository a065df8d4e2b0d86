"""The request log's local spool: every row is appended here first (one ``write``, never a wait on
a database), and a background thread ships rows from it to the log's store.

Why a file and not a queue in memory: a replica killed with SIGKILL, or one whose database is
down, keeps its rows. The kernel holds what was written, so a process that dies loses nothing it
wrote. Each spool is locked (``flock``) by the process that writes it. A process that finds
another's spool unlocked knows the owner is gone: it takes the spool over, ships the rest and
deletes it. The uvicorn supervisor's replacement worker does this, and so does a restarted
container with the same volume. The store ignores a row whose ``request_id`` it has already seen,
so a row shipped twice (the owner died before noting its progress) is stored once.

Files: ``<name>.jsonl`` (the rows, oldest first) and ``<name>.offset`` (the bytes already stored).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import uuid
from pathlib import Path


class Spool:
    """One process's spool file. ``append`` is called on the event loop; ``read``/``shipped`` by the
    shipping thread."""

    def __init__(self, path: Path, owned: bool = True):
        self.path, self.offset_path = path, path.with_suffix(".offset")
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise
        self._lock = threading.Lock()  # appends against truncation
        self.offset = int(self.offset_path.read_text() or 0) if self.offset_path.exists() else 0
        self.size = os.fstat(self._fd).st_size
        self.owned = owned

    @classmethod
    def create(cls, folder: Path) -> "Spool":
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl")

    @classmethod
    def orphans(cls, folder: Path, mine: set[Path]) -> list["Spool"]:
        """The spools in ``folder`` whose writer has died (their lock could be taken)."""
        found = []
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            if path in mine:
                continue
            try:
                found.append(cls(path, owned=False))
            except (BlockingIOError, FileNotFoundError):
                continue  # alive, or shipped and deleted by another adopter meanwhile
        return found

    @property
    def pending_bytes(self) -> int:
        return self.size - self.offset

    def append(self, line: bytes) -> None:
        with self._lock:
            os.write(self._fd, line)  # O_APPEND: one write, one whole line
            self.size += len(line)

    def read(self, max_rows: int) -> tuple[list[bytes], int]:
        """Up to ``max_rows`` whole lines after the stored offset, and the bytes they span. A line
        without its newline (its writer was killed mid-write) is never returned."""
        with self._lock:
            end = self.size
        if end <= self.offset:
            return [], 0
        data = os.pread(self._fd, min(end - self.offset, 4 << 20), self.offset)
        lines = data.split(b"\n")[:-1][:max_rows]  # the last piece is incomplete (or empty)
        return lines, sum(len(x) + 1 for x in lines)

    def shipped(self, nbytes: int) -> None:
        """Record that ``nbytes`` more are stored; once everything is, start the file again. The
        offset is saved before the file is cut, so a death in between re-ships rows (which the
        store ignores) rather than skipping any."""
        with self._lock:
            self.offset += nbytes
            restart = self.owned and self.offset >= self.size
            self._save_offset(0 if restart else self.offset)
            if restart:
                os.ftruncate(self._fd, 0)
                self.offset = self.size = 0

    def _save_offset(self, value: int) -> None:
        tmp = self.offset_path.with_suffix(".offset.tmp")
        tmp.write_text(str(value))
        tmp.replace(self.offset_path)

    def torn_tail(self) -> bool:
        """An adopted spool whose last line was cut short: nothing whole is left to ship."""
        return not self.owned and 0 < self.pending_bytes and not self.read(1)[0]

    def remove(self) -> None:
        """Delete a spool that is fully shipped (an adopted one, or ours at a clean stop)."""
        for p in (self.path, self.offset_path):
            p.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1
