"""Received alerts and rejected messages, the clinicians' verdicts on alerts, and each device's head-signing key and
head updates, in SQLite (a file path) or PostgreSQL (a postgresql:// URL).

Alerts are keyed by their id, so redeliveries and several listeners sharing one PostgreSQL database store each
alert once. Put a PostgreSQL store in its own schema with `?options=-csearch_path%3D<schema>` in the URL.

Adjudications are an append-only log (who, when, what, the label before and after, a note): nothing here updates
or deletes one, and an alert's verdict is its latest entry. The alert row keeps what the inbox sorts and filters on
(severity, label, confidence, review status) next to its payload, so a page of 100,000 alerts is read from an index.

Devices' status messages keep each device's latest state, and the vitals they carry (sdk.device.vitals: heart rate
and beat counts per minute) are kept once each for the device timelines. Clinicians' accounts (argon2 hashes) live
here too, so every reader of the store shares them.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import psycopg

from sdk.errors import HeartSightError

_SQLITE_TABLES = """
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, device TEXT NOT NULL, site TEXT NOT NULL,
    type TEXT NOT NULL, time TEXT NOT NULL, received_at TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_device_time ON alerts (device, time);
CREATE TABLE IF NOT EXISTS dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,
    topic TEXT NOT NULL, reason TEXT NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS adjudications (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL
    REFERENCES alerts (id), reviewer TEXT NOT NULL, at TEXT NOT NULL, action TEXT NOT NULL, label_before TEXT NOT NULL,
    label_after TEXT NOT NULL, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS adjudications_alert ON adjudications (alert_id, seq);
CREATE TABLE IF NOT EXISTS device_keys (site TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (site, device));
CREATE TABLE IF NOT EXISTS head_updates (site TEXT NOT NULL, device TEXT NOT NULL, version INTEGER NOT NULL,
    published_at TEXT NOT NULL, model_sha256 TEXT NOT NULL, beats INTEGER NOT NULL, blob BLOB NOT NULL,
    PRIMARY KEY (site, device, version));
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_states (site TEXT NOT NULL, device TEXT NOT NULL, received_at TEXT NOT NULL,
    payload TEXT NOT NULL, PRIMARY KEY (site, device));
CREATE TABLE IF NOT EXISTS vitals (site TEXT NOT NULL, device TEXT NOT NULL, start TEXT NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (site, device, start));
"""
_POSTGRES_TABLES = """
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, device TEXT NOT NULL, site TEXT NOT NULL,
    type TEXT NOT NULL, time TIMESTAMPTZ NOT NULL, received_at TIMESTAMPTZ NOT NULL, payload JSONB NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_device_time ON alerts (device, time);
CREATE TABLE IF NOT EXISTS dead_letters (seq BIGSERIAL PRIMARY KEY, received_at TIMESTAMPTZ NOT NULL,
    topic TEXT NOT NULL, reason TEXT NOT NULL, raw BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS adjudications (seq BIGSERIAL PRIMARY KEY, alert_id TEXT NOT NULL REFERENCES alerts (id),
    reviewer TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, action TEXT NOT NULL, label_before TEXT NOT NULL,
    label_after TEXT NOT NULL, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS adjudications_alert ON adjudications (alert_id, seq);
CREATE TABLE IF NOT EXISTS device_keys (site TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (site, device));
CREATE TABLE IF NOT EXISTS head_updates (site TEXT NOT NULL, device TEXT NOT NULL, version BIGINT NOT NULL,
    published_at TIMESTAMPTZ NOT NULL, model_sha256 TEXT NOT NULL, beats INTEGER NOT NULL, blob BYTEA NOT NULL,
    PRIMARY KEY (site, device, version));
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS device_states (site TEXT NOT NULL, device TEXT NOT NULL, received_at TIMESTAMPTZ NOT NULL,
    payload JSONB NOT NULL, PRIMARY KEY (site, device));
CREATE TABLE IF NOT EXISTS vitals (site TEXT NOT NULL, device TEXT NOT NULL, start TIMESTAMPTZ NOT NULL,
    payload JSONB NOT NULL, PRIMARY KEY (site, device, start));
"""
# What the inbox sorts and filters on, added to stores made before it (and filled from their payloads).
_INBOX_COLUMNS = {"severity": "INTEGER NOT NULL DEFAULT 0", "label": "TEXT NOT NULL DEFAULT ''",
                  "confidence": "DOUBLE PRECISION NOT NULL DEFAULT 0", "status": "TEXT NOT NULL DEFAULT 'unreviewed'",
                  "reviewed": "INTEGER NOT NULL DEFAULT 0"}
_INBOX_INDEXES = """
CREATE INDEX IF NOT EXISTS alerts_inbox ON alerts (reviewed, severity DESC, time DESC, id);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts (time DESC, id);
CREATE INDEX IF NOT EXISTS alerts_received ON alerts (received_at)
"""
ACTIONS = ("confirm", "reject", "relabel")
# What a verdict may call an alert: the beat classes for beat alerts, the rhythm classes for AF alerts. A rejected
# beat alert is taken as a normal beat (N): the clinician said it was not the ectopy the model saw.
BEAT_ALERTS = ("ventricular_ectopic_beat", "ventricular_run", "supraventricular_ectopy", "high_ectopy_burden")
RHYTHM_ALERTS = ("af_start", "af_end")
LABELS = {**{kind: ("N", "S", "V", "F") for kind in BEAT_ALERTS}, **{kind: ("non-AF", "AF") for kind in RHYTHM_ALERTS}}
REJECTED_LABEL = {**{kind: "N" for kind in BEAT_ALERTS}, "af_start": "non-AF", "af_end": "AF"}
# Review status of an alert after each verdict; "unreviewed" until the first.
STATUSES = ("unreviewed", "confirmed", "rejected", "relabelled")
_STATUS_OF = {"confirm": "confirmed", "reject": "rejected", "relabel": "relabelled"}
# How urgently an alert needs a clinician: a sustained ventricular run first, then AF onset and other runs, rate and
# burden alarms, single ectopic beats and AF ends, signal quality last.
SEVERITY = {"ventricular_run": 3, "af_start": 3, "hr_out_of_range": 2, "high_ectopy_burden": 2,
            "ventricular_ectopic_beat": 1, "supraventricular_ectopy": 1, "af_end": 1, "signal_quality": 0}
ROLES = ("clinician", "admin")
INBOX_COLUMNS = ("id", "device", "site", "type", "time", "label", "confidence", "severity", "status")
MAX_LIST = 10_000  # alerts one listing may return
_ROWS_PER_INSERT = 500  # alerts per INSERT statement: 5,000 parameters, within both databases' limits
_ALERT_COLUMNS = ("id", "device", "site", "type", "time", "received_at", "payload", "severity", "label", "confidence")


def severity(alert: dict) -> int:
    """SEVERITY of the alert's type; a sustained ventricular run one more."""
    return SEVERITY.get(alert["type"], 0) + (1 if alert.get("details", {}).get("sustained") is True else 0)


class UnstorableAlert(HeartSightError):
    """The database refuses this alert's content, not because it is down: retrying cannot help, so dead-letter it."""


class Store:
    """One interface over both databases; safe to share between a listener's network thread and readers."""

    def __init__(self, target: str | Path):
        self.target = str(target)
        self._lock = threading.RLock()  # re-entered by the statements of a _transaction
        self._postgres = self.target.startswith(("postgresql://", "postgres://"))
        if self._postgres:
            self._db = _connect_postgres(self.target)
            with self._db.transaction():
                # Listeners starting together must not race to create the same tables.
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext('heartsight.clinician.store'))")
                for statement in filter(str.strip, _POSTGRES_TABLES.split(";")):
                    self._db.execute(statement)
                self._add_inbox_columns()
                self._compress_payloads_with_lz4()
        else:
            try:
                Path(self.target).parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SQLITE_TABLES)
                self._add_inbox_columns()
            except (OSError, sqlite3.Error) as exc:
                raise HeartSightError(f"cannot open the store {self.target}: {exc}; "
                                      "pass a writable SQLite file path or a postgresql:// URL") from None

    def add(self, alert: dict) -> bool:
        """Store a (validated) alert; False if its id is already stored. See add_many."""
        return self.add_many([alert])[0]

    def add_many(self, alerts: list[dict]) -> list[bool]:
        """Store (validated) alerts in one transaction, one commit for a listener's whole batch; for each alert, True if
        it is new, False if its id is already stored or came earlier in the batch (redeliveries, several listeners).

        Raises UnstorableAlert, storing none of them, if the database refuses one's content (NaN, a time out of its
        range, U+0000 in PostgreSQL): add them one at a time to find it. A database that is down or broken raises its
        own error, so the alerts are retried later.
        """
        if not alerts:
            return []
        received_at = _now()
        first: dict[str, int] = {}
        rows = []
        try:
            for i, alert in enumerate(alerts):
                if alert["id"] not in first:
                    first[alert["id"]] = i
                    rows.append((alert["id"], alert["device"], alert["site"], alert["type"], _utc(alert["time"]),
                                 received_at, json.dumps(alert, separators=(",", ":"), allow_nan=False),
                                 severity(alert), alert["label"], float(alert["confidence"])))
            inserted = set()
            chunks = [rows[start: start + _ROWS_PER_INSERT] for start in range(0, len(rows), _ROWS_PER_INSERT)]
            # One statement is a transaction of its own: BEGIN and COMMIT would cost PostgreSQL two more round trips.
            with self._transaction() if len(chunks) > 1 else nullcontext():
                for chunk in chunks:
                    inserted.update(alert_id for (alert_id,) in self._insert_alerts(chunk))
        except (ValueError, psycopg.DataError) as exc:  # psycopg.DataError: SQLSTATE class 22, a bad value
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnstorableAlert(f"the store refuses this alert: {reason}") from None
        return [first[alert["id"]] == i and alert["id"] in inserted for i, alert in enumerate(alerts)]

    def _insert_alerts(self, rows: list[tuple]) -> list[tuple]:
        """One INSERT of alert rows (_ALERT_COLUMNS each); the ids it stored. In PostgreSQL through a raw cursor with
        numbered placeholders, which psycopg passes on as they are: it would parse a statement of %s placeholders on
        every call, and at 2,000 of them that costs more than the database's own work."""
        sql = f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)}) VALUES {{}} ON CONFLICT (id) DO NOTHING RETURNING id"
        args = tuple(value for row in rows for value in row)
        if self._postgres:
            with self._lock:
                return psycopg.RawCursor(self._db).execute(sql.format(_numbered_rows(len(rows))), args).fetchall()
        return self._query(sql.format(", ".join([f"({', '.join('?' * len(_ALERT_COLUMNS))})"] * len(rows))), args)

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

    def adjudicate(self, alert_id: str, reviewer: str, action: str, label: str | None = None, note: str = "") -> dict:
        """Record a clinician's verdict on a stored alert (appended to the audit log); returns the entry.

        confirm keeps the alert's label, reject says it is wrong (a beat alert's beat is then taken as N, an AF start
        as non-AF), relabel gives the right label (one of LABELS for the alert's type)."""
        if action not in ACTIONS:
            raise HeartSightError(f"unknown verdict {action!r}; choose one of {', '.join(ACTIONS)}")
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise HeartSightError("a verdict needs the reviewer's name (--reviewer NAME)")
        alert = self.alert(alert_id)
        before = self.verdict_label(alert_id) or alert["label"]
        if action == "relabel":
            allowed = LABELS.get(alert["type"])
            if allowed is None:
                raise HeartSightError(f"a {alert['type']} alert cannot be relabelled (only beat and AF alerts have "
                                      "classes); confirm or reject it")
            if label not in allowed:
                raise HeartSightError(f"{label!r} is not a label of a {alert['type']} alert; choose one of "
                                      f"{', '.join(allowed)}")
            after = label
        elif label is not None:
            raise HeartSightError(f"--label goes with relabel only, not with {action}")
        else:
            after = alert["label"] if action == "confirm" else REJECTED_LABEL.get(alert["type"], "rejected")
        entry = {"alert_id": alert_id, "reviewer": reviewer.strip(), "at": _now(), "action": action,
                 "label_before": before, "label_after": after, "note": _storable(note or "")}
        with self._transaction():
            self._execute("INSERT INTO adjudications (alert_id, reviewer, at, action, label_before, label_after, "
                          "note) VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(entry.values()))
            self._execute("UPDATE alerts SET status = ?, reviewed = 1 WHERE id = ?", (_STATUS_OF[action], alert_id))
        return entry

    def adjudications(self, alert_id: str | None = None) -> list[dict]:
        """The audit log, oldest first, of one alert or all."""
        where, args = ("WHERE alert_id = ?", (alert_id,)) if alert_id is not None else ("", ())
        rows = self._query("SELECT alert_id, reviewer, at, action, label_before, label_after, note FROM adjudications "
                           f"{where} ORDER BY seq", args)
        keys = ("alert_id", "reviewer", "at", "action", "label_before", "label_after", "note")
        return [{**dict(zip(keys, row)), "at": row[2].isoformat() if self._postgres else row[2]} for row in rows]

    def verdict_label(self, alert_id: str) -> str | None:
        """The label of an alert's latest verdict; None if nobody has judged it."""
        rows = self._query("SELECT label_after FROM adjudications WHERE alert_id = ? ORDER BY seq DESC LIMIT 1",
                           (alert_id,))
        return rows[0][0] if rows else None

    def adjudicated(self, site: str, device: str) -> list[tuple[dict, str]]:
        """(alert, label of its latest verdict) for every judged alert of a device, by event time."""
        rows = self._query("SELECT a.payload, j.label_after FROM alerts a JOIN adjudications j ON j.alert_id = a.id "
                           "WHERE a.site = ? AND a.device = ? AND j.seq = (SELECT MAX(seq) FROM adjudications "
                           "WHERE alert_id = a.id) ORDER BY a.time, a.id", (site, device))
        return [(payload if self._postgres else json.loads(payload), label) for payload, label in rows]

    def alert(self, alert_id: str) -> dict:
        rows = self._query("SELECT payload FROM alerts WHERE id = ?", (alert_id,))
        if not rows:
            raise HeartSightError(f"no alert {alert_id} in {self.target}; list them with `heartsight clinician export`")
        return rows[0][0] if self._postgres else json.loads(rows[0][0])

    def set_device_key(self, site: str, device: str, key: bytes) -> None:
        """Keep a device's head-signing key; a device has one (refuses to replace it)."""
        if self.device_key(site, device, required=False) is not None:
            raise HeartSightError(f"device {site}/{device} already has a head-signing key in {self.target}; a device "
                                  "keeps its key")
        self._execute("INSERT INTO device_keys (site, device, key, created_at) VALUES (?, ?, ?, ?)",
                      (site, device, key.hex(), _now()))

    def device_key(self, site: str, device: str, required: bool = True) -> bytes | None:
        rows = self._query("SELECT key FROM device_keys WHERE site = ? AND device = ?", (site, device))
        if not rows and required:
            raise HeartSightError(f"the store {self.target} knows no device {site}/{device} (no head-signing key); "
                                  f"provision it with `heartsight clinician key --db DB --site {site} --device {device} "
                                  "--out FILE`")
        return bytes.fromhex(rows[0][0]) if rows else None

    def head_version(self, site: str, device: str) -> int:
        """The version of the last head published to a device (0: none, it runs its exported head)."""
        rows = self._query("SELECT MAX(version) FROM head_updates WHERE site = ? AND device = ?", (site, device))
        return int(rows[0][0] or 0)

    def add_head_update(self, site: str, device: str, version: int, model_sha256: str, beats: int, blob: bytes) -> None:
        self._execute("INSERT INTO head_updates (site, device, version, published_at, model_sha256, beats, blob) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", (site, device, int(version), _now(), model_sha256, int(beats),
                                                       bytes(blob)))

    def inbox(self, device: str | None = None, kind: str | None = None, status: str | None = None,
              limit: int = 50, offset: int = 0) -> list[dict]:
        """A page of the triage list: unreviewed first, then by severity, then newest; INBOX_COLUMNS of each."""
        where, args = self._filters(device, kind, status)
        return self._summaries(f"{where} ORDER BY reviewed, severity DESC, time DESC, id LIMIT ? OFFSET ?",
                               (*args, _count(limit, "limit"), _count(offset, "offset")))

    def list_alerts(self, device: str | None = None, kind: str | None = None, status: str | None = None,
                    limit: int = 100) -> list[dict]:
        """Newest first, INBOX_COLUMNS of each (what GET /api/alerts answers)."""
        where, args = self._filters(device, kind, status)
        return self._summaries(f"{where} ORDER BY time DESC, id LIMIT ?", (*args, _count(limit, "limit")))

    def count(self, device: str | None = None, kind: str | None = None, status: str | None = None) -> int:
        where, args = self._filters(device, kind, status)
        return int(self._query(f"SELECT COUNT(*) FROM alerts {where}", args)[0][0])

    def received_since(self, since: str) -> list[tuple[str, dict]]:
        """(received_at, summary) of the alerts stored at or after `since` (ISO text), oldest first: what a live page
        has not shown yet. Several listeners may commit slightly out of order, so callers ask again a few seconds
        back and skip the ids they have."""
        rows = self._query(f"SELECT received_at, {', '.join(INBOX_COLUMNS)} FROM alerts WHERE received_at >= ? "
                           f"ORDER BY received_at LIMIT {MAX_LIST}", (since,))
        return [(_text(row[0]), self._summary(row[1:])) for row in rows]

    def neighbours(self, alert_id: str, each_side: int = 5) -> list[dict]:
        """The same device's alerts just before and after this one, in time order, itself included."""
        alert = self._query("SELECT device, site, time FROM alerts WHERE id = ?", (alert_id,))
        if not alert:
            raise HeartSightError(f"no alert {alert_id} in {self.target}")
        device, site, time = alert[0]
        columns = ", ".join(INBOX_COLUMNS)
        before = self._query(f"SELECT {columns} FROM alerts WHERE device = ? AND site = ? AND (time < ? OR "
                             "(time = ? AND id < ?)) ORDER BY time DESC, id DESC LIMIT ?",
                             (device, site, time, time, alert_id, each_side))
        after = self._query(f"SELECT {columns} FROM alerts WHERE device = ? AND site = ? AND (time > ? OR "
                            "(time = ? AND id >= ?)) ORDER BY time, id LIMIT ?",
                            (device, site, time, time, alert_id, each_side + 1))
        return [self._summary(row) for row in [*reversed(before), *after]]

    def add_user(self, name: str, role: str, password_hash: str) -> None:
        """A new account; refuses a name that exists (accounts are not replaced silently)."""
        if role not in ROLES:
            raise HeartSightError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        if self.user(name) is not None:
            raise HeartSightError(f"user {name!r} already exists in {self.target}")
        self._execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                      (name, role, password_hash, _now()))

    def remove_user(self, name: str) -> None:
        """Close an account (the audit log keeps the name on what it did)."""
        self._execute("DELETE FROM users WHERE name = ?", (name,))

    def user(self, name: str) -> dict | None:
        """{"name", "role", "password_hash"}, or None for an unknown name."""
        rows = self._query("SELECT name, role, password_hash FROM users WHERE name = ?", (name,))
        return dict(zip(("name", "role", "password_hash"), rows[0])) if rows else None

    def set_password_hash(self, name: str, password_hash: str) -> None:
        """A rehash of the same password with newer argon2 parameters (at login)."""
        self._execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))

    def add_status(self, status: dict) -> None:
        """A device's status message: its latest state is kept, and each vitals entry it carries is kept once."""
        site, device = status["site"], status["device"]
        text = json.dumps(status, separators=(",", ":"), allow_nan=False)
        with self._transaction():
            self._execute("INSERT INTO device_states (site, device, received_at, payload) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT (site, device) DO UPDATE SET received_at = excluded.received_at, "
                          "payload = excluded.payload", (site, device, _now(), text))
            for vitals in status.get("vitals", []):
                self._execute("INSERT INTO vitals (site, device, start, payload) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT DO NOTHING", (site, device, _utc(vitals["start"]),
                                                         json.dumps(vitals, separators=(",", ":"), allow_nan=False)))

    def device_state(self, device: str) -> list[dict]:
        """The latest status message of each site's device of this name, with when it came."""
        rows = self._query("SELECT received_at, payload FROM device_states WHERE device = ? ORDER BY site", (device,))
        return [{**(payload if self._postgres else json.loads(payload)), "received_at": _text(at)}
                for at, payload in rows]

    def vitals(self, device: str) -> list[dict]:
        """The device's vitals entries (sdk.device.vitals), oldest first."""
        rows = self._query("SELECT payload FROM vitals WHERE device = ? ORDER BY start", (device,))
        return [payload if self._postgres else json.loads(payload) for (payload,) in rows]

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

    def _filters(self, device: str | None, kind: str | None, status: str | None) -> tuple[str, tuple]:
        if status is not None and status not in STATUSES:
            raise HeartSightError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
        if kind is not None and kind not in SEVERITY:
            raise HeartSightError(f"unknown alert type {kind!r}; choose one of {', '.join(SEVERITY)}")
        pairs = [(column, value) for column, value in (("device", device), ("type", kind), ("status", status))
                 if value is not None]
        where = " AND ".join(f"{column} = ?" for column, _ in pairs)
        return (f"WHERE {where}" if where else ""), tuple(value for _, value in pairs)

    def _summaries(self, rest: str, args: tuple) -> list[dict]:
        return [self._summary(row) for row in self._query(f"SELECT {', '.join(INBOX_COLUMNS)} FROM alerts {rest}",
                                                           args)]

    def _summary(self, row: tuple) -> dict:
        summary = dict(zip(INBOX_COLUMNS, row))
        summary["time"] = _text(summary["time"])
        return summary

    def _add_inbox_columns(self) -> None:
        """Give a store made before the inbox its columns, filled from the payloads and the audit log; indexes."""
        if self._postgres:
            have = {name for (name,) in self._db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'alerts' "
                "AND table_schema = current_schema()").fetchall()}
        else:
            have = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)").fetchall()}
        missing = [name for name in _INBOX_COLUMNS if name not in have]
        for name in missing:
            self._db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {_INBOX_COLUMNS[name]}")
        if missing:
            for alert_id, payload in self._db.execute("SELECT id, payload FROM alerts").fetchall():
                alert = payload if self._postgres else json.loads(payload)
                self._db.execute(self._dialect("UPDATE alerts SET severity = ?, label = ?, confidence = ? "
                                               "WHERE id = ?"),
                                 (severity(alert), _storable(alert["label"]), float(alert["confidence"]), alert_id))
            for action, alert_id in self._db.execute(
                    "SELECT j.action, j.alert_id FROM adjudications j WHERE j.seq = (SELECT MAX(seq) FROM "
                    "adjudications WHERE alert_id = j.alert_id)").fetchall():
                self._db.execute(self._dialect("UPDATE alerts SET status = ?, reviewed = 1 WHERE id = ?"),
                                 (_STATUS_OF[action], alert_id))
        for statement in filter(str.strip, _INBOX_INDEXES.split(";")):
            self._db.execute(statement)

    def _compress_payloads_with_lz4(self) -> None:
        """PostgreSQL compresses each alert's payload (6 kB of JSON) as it stores it; lz4 takes about 45 µs of its CPU
        an alert less than its default, pglz: some 40% of the server's work per alert. Only where the server has lz4
        (PostgreSQL 14 or later, built with it); alerts stored before keep how they are stored."""
        has_lz4 = self._db.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                                   "WHERE name = 'default_toast_compression'").fetchone()
        if not (has_lz4 and has_lz4[0]):
            return
        (compression,) = self._db.execute("SELECT attcompression FROM pg_attribute WHERE attrelid = 'alerts'::regclass "
                                          "AND attname = 'payload'").fetchone()
        if compression != "l":
            self._db.execute("ALTER TABLE alerts ALTER COLUMN payload SET COMPRESSION lz4")

    @contextmanager
    def _transaction(self):
        """Statements that land together or not at all (a verdict and the alert's status)."""
        with self._lock:
            if self._postgres:
                with self._db.transaction():
                    yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _execute(self, sql: str, args: tuple = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with self._lock:
            return self._db.execute(self._dialect(sql), args).rowcount

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(self._dialect(sql), args).fetchall()

    def _dialect(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._postgres else sql


@contextmanager
def scratch_schema(server_url: str, name_prefix: str) -> Iterator[str]:
    """A store URL on this PostgreSQL database whose tables live in a new schema of their own, dropped afterwards: for
    tests and benchmarks that share one database. HeartSightError if the server cannot be reached (within 3 s)."""
    admin = _connect_postgres(server_url, connect_timeout=3)
    schema = f"{name_prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{server_url}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def _connect_postgres(url: str, connect_timeout: int = 10) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.Error as exc:
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise HeartSightError(f"cannot connect to PostgreSQL at {shown}: {reason}; "
                              "check the URL and that the server is running") from None


@cache
def _numbered_rows(count: int) -> str:
    """($1, ..., $10), ($11, ..., $20), ...: PostgreSQL's placeholders for `count` rows of _ALERT_COLUMNS."""
    width = len(_ALERT_COLUMNS)
    return ", ".join("(" + ", ".join(f"${row * width + column}" for column in range(1, width + 1)) + ")"
                     for row in range(count))


def _storable(text: str) -> str:
    """U+0000 and lone surrogates (which PostgreSQL text and UTF-8 cannot hold) as visible escapes: \\x00, \\ud800."""
    return re.sub("[\x00\ud800-\udfff]", lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _utc(text: str) -> str:
    """Event time as one sortable UTC format, whatever ISO form the payload used."""
    return datetime.fromisoformat(text).astimezone(timezone.utc).isoformat(timespec="microseconds")


def _text(value) -> str:
    """A time column as ISO text (PostgreSQL gives datetimes, SQLite the text stored)."""
    return value.isoformat() if isinstance(value, datetime) else value


def _count(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value:
        raise HeartSightError(f"{name} must be a whole number of at least 0, got {value!r}")
    if name == "limit" and value > MAX_LIST:
        raise HeartSightError(f"limit {value} is above {MAX_LIST:,}; page through with smaller limits")
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
