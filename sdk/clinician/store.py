"""Received alerts and rejected messages, in SQLite (a file path) or PostgreSQL (a postgresql:// URL).

Alerts are keyed by their id, so redeliveries and several listeners sharing one PostgreSQL database store each
alert once. Put a PostgreSQL store in its own schema with `?options=-csearch_path%3D<schema>` in the URL.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from sdk.errors import HeartSightError

_SQLITE_TABLES = """
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, device TEXT NOT NULL, site TEXT NOT NULL,
    type TEXT NOT NULL, time TEXT NOT NULL, received_at TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_device_time ON alerts (device, time);
CREATE TABLE IF NOT EXISTS dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,
    topic TEXT NOT NULL, reason TEXT NOT NULL, raw BLOB NOT NULL);
"""
_POSTGRES_TABLES = """
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, device TEXT NOT NULL, site TEXT NOT NULL,
    type TEXT NOT NULL, time TIMESTAMPTZ NOT NULL, received_at TIMESTAMPTZ NOT NULL, payload JSONB NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_device_time ON alerts (device, time);
CREATE TABLE IF NOT EXISTS dead_letters (seq BIGSERIAL PRIMARY KEY, received_at TIMESTAMPTZ NOT NULL,
    topic TEXT NOT NULL, reason TEXT NOT NULL, raw BYTEA NOT NULL);
"""


class UnstorableAlert(HeartSightError):
    """The database refuses this alert's content, not because it is down: retrying cannot help, so dead-letter it."""


class Store:
    """One interface over both databases; safe to share between a listener's network thread and readers."""

    def __init__(self, target: str | Path):
        self.target = str(target)
        self._lock = threading.Lock()
        self._postgres = self.target.startswith(("postgresql://", "postgres://"))
        if self._postgres:
            self._db = _connect_postgres(self.target)
            with self._db.transaction():
                # Listeners starting together must not race to create the same tables.
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext('heartsight.clinician.store'))")
                for statement in filter(str.strip, _POSTGRES_TABLES.split(";")):
                    self._db.execute(statement)
        else:
            try:
                Path(self.target).parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SQLITE_TABLES)
            except (OSError, sqlite3.Error) as exc:
                raise HeartSightError(f"cannot open the store {self.target}: {exc}; "
                                      "pass a writable SQLite file path or a postgresql:// URL") from None

    def add(self, alert: dict) -> bool:
        """Store a (validated) alert; False if its id is already stored. Never raises on duplicates.

        Raises UnstorableAlert for content the database refuses (NaN, a time out of its range, U+0000 in
        PostgreSQL); a database that is down or broken raises its own error, so the alert is retried later.
        """
        try:
            row = (alert["id"], alert["device"], alert["site"], alert["type"], _utc(alert["time"]), _now(),
                   json.dumps(alert, separators=(",", ":"), allow_nan=False))
            inserted = self._execute("INSERT INTO alerts (id, device, site, type, time, received_at, payload) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING", row)
        except (ValueError, psycopg.DataError) as exc:  # psycopg.DataError: SQLSTATE class 22, a bad value
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnstorableAlert(f"the store refuses this alert: {reason}") from None
        return inserted == 1

    def add_dead_letter(self, topic: str, raw: bytes, reason: str) -> None:
        """Keep a message that was not stored as an alert, with why, for an operator to inspect.

        raw is kept as bytes; topic and reason are text, with anything PostgreSQL cannot store written as an escape.
        """
        self._execute("INSERT INTO dead_letters (received_at, topic, reason, raw) VALUES (?, ?, ?, ?)",
                      (_now(), _storable(topic), _storable(reason), bytes(raw)))

    def alerts(self, device: str | None = None) -> list[dict]:
        """Alert payloads, by event time, of one device or all."""
        where, args = ("WHERE device = ?", (device,)) if device is not None else ("", ())
        rows = self._query(f"SELECT payload FROM alerts {where} ORDER BY time, id", args)
        return [payload if self._postgres else json.loads(payload) for (payload,) in rows]

    def arrivals(self) -> list[tuple[str, str]]:
        """(event time, received_at) of every stored alert, as ISO text: how late alerts reach the store."""
        rows = self._query("SELECT time, received_at FROM alerts ORDER BY received_at")
        return [(t.isoformat() if self._postgres else t, r.isoformat() if self._postgres else r) for t, r in rows]

    def dead_letters(self) -> list[dict]:
        """Rejected messages, oldest first: received_at (ISO text), topic, reason, raw (bytes)."""
        rows = self._query("SELECT received_at, topic, reason, raw FROM dead_letters ORDER BY seq")
        return [{"received_at": received_at.isoformat() if self._postgres else received_at, "topic": topic,
                 "reason": reason, "raw": bytes(raw)} for received_at, topic, reason, raw in rows]

    def devices(self) -> list[str]:
        """Devices with at least one stored alert, sorted."""
        return [device for (device,) in self._query("SELECT DISTINCT device FROM alerts ORDER BY device")]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _execute(self, sql: str, args: tuple = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with self._lock:
            return self._db.execute(self._dialect(sql), args).rowcount

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(self._dialect(sql), args).fetchall()

    def _dialect(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._postgres else sql


def _connect_postgres(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise HeartSightError(f"cannot connect to PostgreSQL at {shown}: {reason}; "
                              "check the URL and that the server is running") from None


def _storable(text: str) -> str:
    """U+0000 and lone surrogates (which PostgreSQL text and UTF-8 cannot hold) as visible escapes: \\x00, \\ud800."""
    return re.sub("[\x00\ud800-\udfff]", lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _utc(text: str) -> str:
    """Event time as one sortable UTC format, whatever ISO form the payload used."""
    return datetime.fromisoformat(text).astimezone(timezone.utc).isoformat(timespec="microseconds")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
