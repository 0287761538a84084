"""Store-and-forward outbox: an alert is on disk before it is sent and leaves only once the broker acknowledged it."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sdk.errors import HeartSightError
from sdk.stream.payload import to_bytes

KEEP_ACKED = timedelta(days=7)  # how long an acknowledged id still makes a re-put a no-op


class Outbox:
    """Unacknowledged alerts in an SQLite file (WAL, synchronous=FULL), oldest first; survives restarts.

    Acknowledged alerts keep only their id for KEEP_ACKED, so putting the same alert again does not resend it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "id TEXT NOT NULL UNIQUE, payload TEXT, queued_at TEXT NOT NULL, acked_at TEXT)")
            self._db.execute("DELETE FROM outbox WHERE acked_at < ?", ((_now() - KEEP_ACKED).isoformat(),))
        except (OSError, sqlite3.Error) as exc:
            raise HeartSightError(f"cannot open the outbox {self.path}: {exc}; "
                                  "pass a writable file path as outbox_path") from None

    def put(self, alert: dict) -> bool:
        """Persist the alert; False if its id is already queued or was recently acknowledged (nothing changes)."""
        payload = to_bytes(alert).decode("utf-8")
        with self._lock:
            cursor = self._db.execute("INSERT INTO outbox (id, payload, queued_at) VALUES (?, ?, ?) "
                                      "ON CONFLICT (id) DO NOTHING", (alert["id"], payload, _now().isoformat()))
        return cursor.rowcount == 1

    def pending(self) -> list[dict]:
        """Unacknowledged alerts in the order they were put."""
        with self._lock:
            rows = self._db.execute("SELECT payload FROM outbox WHERE acked_at IS NULL ORDER BY seq").fetchall()
        return [json.loads(payload) for (payload,) in rows]

    def mark_acked(self, alert_id: str) -> None:
        """The broker has the alert: drop its payload, keep its id (unknown ids are ignored)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET payload = NULL, acked_at = ? WHERE id = ? AND acked_at IS NULL",
                             (_now().isoformat(), alert_id))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _now() -> datetime:
    return datetime.now(timezone.utc)
