"""Size-rotated JSON-lines files, one set per ingress replica, so their disk use is bounded: `decision_log_mb` x
(`decision_log_files` + 1) per replica. Two logs use them: the decision log (one line per request, serve/observe.py
`Record.log_entry`) and the quality monitor's judged answers (serve/quality.py).

Lines are buffered and flushed once a second by the ingress (and before a lookup): a write is a string append, not a
system call, because it is on every request's path. A replica that crashes loses at most its last second of lines.

Any replica can look up any request id: all replicas of a node write into the same folder (on Kubernetes, mount one
volume per pod and look it up on the pod that served it, or ship the files to your log store).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from router.catalog import Observability


class JsonlLog:
    """Appends ASCII JSON lines (so characters are bytes), rotates by size like logging's RotatingFileHandler, and finds
    the newest line of a request id across every replica's files."""

    def __init__(self, folder: Path, stem: str, replica: str, config: Observability) -> None:
        self.folder, self.stem = folder, stem
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in replica)
        self.path = folder / f"{stem}-{safe}.jsonl"
        self.max_bytes, self.backups = int(config.decision_log_mb * 2**20), config.decision_log_files
        self._lock = threading.Lock()  # lookups run in a worker thread
        self._file = self.path.open("a", encoding="ascii")
        self._size = self._file.tell()

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._size += len(line)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def _rotate(self) -> None:
        """x.jsonl -> x.jsonl.1 -> ... -> x.jsonl.<backups>, the oldest dropped."""
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file, self._size = self.path.open("a", encoding="ascii"), 0

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The newest line with this id across every replica's files (a scan: the files are bounded)."""
        self.flush()
        needle = json.dumps({"request_id": request_id}, separators=(",", ":"))[1:-1]  # '"request_id":"<id>"'
        for path in sorted(self.folder.glob(f"{self.stem}-*.jsonl*"), key=_mtime, reverse=True):
            found = None
            try:
                with path.open(encoding="ascii", errors="replace") as lines:
                    for line in lines:
                        if needle in line:
                            found = line
            except FileNotFoundError:  # rotated away while we looked
                continue
            if found is not None:
                return json.loads(found)
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
