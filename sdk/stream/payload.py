"""The alert wire format (schemas/alert.v1.json): encode a device's Alert, check, and decode one explained alert."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from sdk.device.alerts import Alert
from sdk.errors import HeartSightError

SCHEMA = "heartsight.alert.v1"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "alert.v1.json"
ENCODING = "base64-int16-le"
_INT16 = np.dtype("<i2")


def encode_array(values: np.ndarray, scale: float) -> dict:
    """Quantise real values to int16 steps of `scale`; refuses values int16 cannot hold instead of clipping them."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise HeartSightError(f"expected a non-empty 1-D array, got shape {values.shape}: pass one channel")
    if not np.all(np.isfinite(values)):
        raise HeartSightError("array contains NaN or infinite values: clean the excerpt before encoding it")
    if not scale > 0:
        raise HeartSightError(f"scale must be positive, got {scale}")
    steps = np.round(values / scale)
    if steps.min() < -32768 or steps.max() > 32767:
        raise HeartSightError(f"values up to {np.abs(values).max():g} do not fit int16 at scale {scale:g}: "
                              f"use a scale of at least {np.abs(values).max() / 32767:.3g} (or scale=None)")
    data = base64.b64encode(steps.astype(_INT16).tobytes()).decode("ascii")
    return {"scale": float(scale), "encoding": ENCODING, "data": data}


def decode_array(d: dict) -> np.ndarray:
    """Real values (float64) from an encoded array: int16 little-endian steps times scale."""
    if d.get("encoding") != ENCODING:
        raise HeartSightError(f"unsupported array encoding {d.get('encoding')!r}: expected {ENCODING}")
    try:
        raw = base64.b64decode(d["data"], validate=True)
    except (binascii.Error, KeyError, TypeError) as exc:
        raise HeartSightError(f"array data is not valid base64: {exc}") from None
    if len(raw) % 2:
        raise HeartSightError(f"array data has {len(raw)} bytes, not a whole number of int16 samples")
    return np.frombuffer(raw, dtype=_INT16).astype(np.float64) * float(d["scale"])


def auto_scale(values: np.ndarray) -> float:
    """The finest scale at which the largest magnitude still fits int16."""
    peak = float(np.max(np.abs(np.asarray(values, dtype=np.float64)), initial=0.0))
    return peak / 32767 if peak > 0 and np.isfinite(peak) else 1.0


def encode_alert(alert: Alert) -> dict:
    """The alert's wire dict, validated: signal and trace as int16 at the finest scale that holds them."""
    excerpt = alert.excerpt
    wire = {
        "schema": SCHEMA,
        "id": alert.id,
        "device": alert.device,
        "site": alert.site,
        "type": alert.type,
        "time": _utc_text(alert.time),
        "sample_index": int(alert.sample_index),
        "confidence": float(alert.confidence),
        "label": str(alert.label),
        "model": dict(alert.model),
        "signal": {"fs": float(alert.fs), "start_sample": int(excerpt.start),
                   **encode_array(excerpt.signal, auto_scale(excerpt.signal))},
        "trace": encode_array(excerpt.trace, auto_scale(excerpt.trace)),
        "details": dict(alert.details),
    }
    validate(wire)
    return wire


def validate(alert: object) -> None:
    """Raise HeartSightError naming the first violation: the schema, then what it cannot say (time, lengths)."""
    error = best_match(_validator().iter_errors(alert))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        message = " ".join(error.message.split())
        if len(message) > 200:
            message = message[:200] + "..."
        raise HeartSightError(f"alert is invalid at {path}: {message}")
    try:
        datetime.fromisoformat(alert["time"])
    except ValueError:
        raise HeartSightError(f"alert is invalid at time: {alert['time']!r} is not a real date and time") from None
    lengths = {}
    for key in ("signal", "trace"):
        try:
            lengths[key] = len(decode_array(alert[key]))
        except HeartSightError as exc:
            raise HeartSightError(f"alert is invalid at {key}.data: {exc}") from None
    if lengths["signal"] != lengths["trace"]:
        raise HeartSightError(f"alert is invalid at trace.data: {lengths['trace']} samples, "
                              f"but the signal has {lengths['signal']}; the trace must align with the signal")


def to_bytes(alert: dict) -> bytes:
    """Compact UTF-8 JSON; refuses NaN and infinity, which are not JSON."""
    try:
        return json.dumps(alert, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise HeartSightError(f"alert cannot be written as JSON: {exc}") from None


def from_bytes(raw: bytes) -> dict:
    """Parse UTF-8 JSON into a dict (no schema check: call validate). Rejects NaN and infinity."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeartSightError(f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HeartSightError(f"payload is JSON {type(value).__name__}, not an object")
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _utc_text(time: datetime) -> str:
    if time.tzinfo is None:
        raise HeartSightError("alert time has no time zone: pass an aware datetime, e.g. datetime.now(timezone.utc)")
    return time.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cache
def _validator() -> Draft202012Validator:
    if not SCHEMA_PATH.exists():
        raise HeartSightError(f"alert schema not found at {SCHEMA_PATH}: install HeartSight from its source tree")
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
