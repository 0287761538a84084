"""Store-and-forward outbox: an alert is on disk before it is sent and leaves only once the clinic acknowledged it."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from sdk.errors import HeartSightError
from sdk.stream.payload import to_bytes

KEEP_ACKED = timedelta(days=7)  # how long an acknowledged id still makes a re-put a no-op


class Backlog(NamedTuple):
    """The alerts still in an outbox: those the broker has not acknowledged (PUBACK) yet, and those it has but whose
    commit in the clinician's store has not been acknowledged yet."""

    awaiting_broker: int
    awaiting_clinic: int

    @property
    def total(self) -> int:
        return self.awaiting_broker + self.awaiting_clinic


class Outbox:
    """Alerts the clinic has not acknowledged, in an SQLite file (WAL, synchronous=FULL), oldest first; survives
    restarts. An alert is marked sent when the broker acknowledges it and leaves when the clinic does.

    Acknowledged alerts keep only their id for KEEP_ACKED, so putting the same alert again (a recording replayed after
    a crash: the ids are deterministic) does not send it again.
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
                             "id TEXT NOT NULL UNIQUE, payload TEXT, queued_at TEXT NOT NULL, acked_at TEXT, "
                             "sent_at TEXT)")
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(outbox)")]
            if "sent_at" not in columns:  # an outbox from before end-to-end acknowledgement
                self._db.execute("ALTER TABLE outbox ADD COLUMN sent_at TEXT")
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

    def pending_ids(self) -> list[str]:
        """The ids of the unacknowledged alerts, in the order they were put (without reading their payloads)."""
        with self._lock:
            return [i for (i,) in self._db.execute("SELECT id FROM outbox WHERE acked_at IS NULL ORDER BY seq")]

    def payload(self, alert_id: str) -> bytes:
        """The wire bytes of an unacknowledged alert."""
        with self._lock:
            (payload,) = self._db.execute("SELECT payload FROM outbox WHERE id = ? AND acked_at IS NULL",
                                          (alert_id,)).fetchone()
        return payload.encode("utf-8")

    def mark_sent(self, alert_id: str) -> None:
        """The broker has the alert (it may still be lost before the clinic stores it, so it stays)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET sent_at = ? WHERE id = ? AND acked_at IS NULL AND sent_at IS NULL",
                             (_now().isoformat(), alert_id))

    def acknowledge(self, alert_ids: list[str]) -> int:
        """The clinic's store has committed these alerts: drop their payloads, keep their ids; how many were
        waiting (ids unknown or already acknowledged are ignored)."""
        now = _now().isoformat()
        with self._lock, self._db:  # one transaction: one write to disk for the whole list
            self._db.execute("BEGIN")
            cursor = self._db.executemany("UPDATE outbox SET payload = NULL, acked_at = ? "
                                          "WHERE id = ? AND acked_at IS NULL", [(now, i) for i in alert_ids])
        return cursor.rowcount

    def backlog(self) -> Backlog:
        with self._lock:
            unsent, sent = self._db.execute("SELECT count(*) - count(sent_at), count(sent_at) FROM outbox "
                                            "WHERE acked_at IS NULL").fetchone()
        return Backlog(unsent, sent)

    def __len__(self) -> int:
        return self.backlog().total

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _now() -> datetime:
    return datetime.now(timezone.utc)
