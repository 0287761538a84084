"""The alert wire format (schemas/alert.v1.json): encode a device's Alert, check, and decode one explained alert."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from sdk.device.alerts import Alert
from sdk.errors import HeartSightError

SCHEMA = "heartsight.alert.v1"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "alert.v1.json"
STATUS_SCHEMA_PATH = SCHEMA_PATH.with_name("status.v1.json")
ENCODING = "base64-int16-le"
_INT16 = np.dtype("<i2")
MAX_DEPTH = 64  # levels of objects and arrays: an alert needs 2, its free-form details a few more
MAX_SAFE_INTEGER = 2**53 - 1  # larger integers lose precision in JSON readers that use doubles (RFC 7493)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # U+0000 and lone surrogates: PostgreSQL stores neither


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


def validate_status(status: object) -> None:
    """Raise HeartSightError naming the first violation of a device's status message (schemas/status.v1.json)."""
    _check_values(status, "status")
    error = best_match(_validator(STATUS_SCHEMA_PATH).iter_errors(status))
    if error is not None:
        raise HeartSightError(f"status is invalid at {_where(error)}: {_message(error)}")
    for i, vitals in enumerate(status.get("vitals", [])):
        try:
            datetime.fromisoformat(vitals["start"])
        except ValueError:
            raise HeartSightError(f"status is invalid at vitals.{i}.start: {vitals['start']!r} is not a real date and "
                                  "time") from None


def validate(alert: object) -> None:
    """Raise HeartSightError naming the first violation: values no store or JSON reader can hold, the schema,
    then what the schema cannot say (time, lengths, finite decoded values)."""
    _check_values(alert, "alert")
    error = best_match(_validator(SCHEMA_PATH).iter_errors(alert))
    if error is not None:
        raise HeartSightError(f"alert is invalid at {_where(error)}: {_message(error)}")
    try:
        datetime.fromisoformat(alert["time"])
    except ValueError:
        raise HeartSightError(f"alert is invalid at time: {alert['time']!r} is not a real date and time") from None
    lengths = {}
    for key in ("signal", "trace"):
        try:
            with np.errstate(over="ignore"):  # reported below
                values = decode_array(alert[key])
        except HeartSightError as exc:
            raise HeartSightError(f"alert is invalid at {key}.data: {exc}") from None
        if not np.isfinite(values).all():
            raise HeartSightError(f"alert is invalid at {key}.scale: {alert[key]['scale']:g} times its int16 steps "
                                  "overflows a 64-bit float; give the real scale")
        lengths[key] = len(values)
    duration_ms = 1000 * lengths["signal"] / alert["signal"]["fs"]
    if not math.isfinite(duration_ms):
        raise HeartSightError(f"alert is invalid at signal.fs: at {alert['signal']['fs']:g} Hz the excerpt's duration "
                              "overflows a 64-bit float; give the real sampling rate")
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
    """Parse UTF-8 JSON into a dict (no schema check: call validate). Rejects NaN, infinity, numbers that
    overflow to it (1e400), integers beyond MAX_SAFE_INTEGER, and nesting too deep for the parser's recursion."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float,
                           parse_int=_safe_int)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeartSightError(f"payload is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise HeartSightError(f"payload nests objects or arrays too deeply to parse (an alert may nest {MAX_DEPTH} "
                              "levels)") from None
    if not isinstance(value, dict):
        raise HeartSightError(f"payload is JSON {type(value).__name__}, not an object")
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {_shorten(text)} overflows a 64-bit float; only finite numbers are allowed")
    return value


def _safe_int(text: str) -> int:
    """int(), but never on thousands of digits: Python refuses 4,300 or more, and anything beyond 17 is unsafe."""
    if len(text) > 17 or abs(int(text)) > MAX_SAFE_INTEGER:
        raise ValueError(f"the integer {_shorten(text)} is beyond ±{MAX_SAFE_INTEGER} (2**53 - 1), which JSON "
                         "readers using doubles cannot hold exactly")
    return int(text)


def _check_values(alert: object, what: str) -> None:
    """Refuse what a store or a JSON reader cannot hold as it is, wherever it is (details too): nesting deeper
    than MAX_DEPTH, NaN, infinity, integers beyond MAX_SAFE_INTEGER, and text with U+0000 or lone surrogates."""
    todo = [("(top level)", alert, 1)]
    while todo:
        path, value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise _invalid(what, path, f"objects and arrays nest deeper than {MAX_DEPTH} levels")
            for key, child in value.items() if isinstance(value, dict) else enumerate(value):
                child_path = str(key) if depth == 1 else f"{path}.{key}"
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    raise _invalid(what, child_path, f"the key {_unstorable(key)}")
                todo.append((child_path, child, depth + 1))
        elif isinstance(value, str) and _UNSTORABLE.search(value):
            raise _invalid(what, path, f"the text {_unstorable(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise _invalid(what, path, f"{value} is not a finite number")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
            raise _invalid(what, path, f"an integer beyond ±{MAX_SAFE_INTEGER} (2**53 - 1), which JSON readers using "
                                 "doubles cannot hold exactly")


def _invalid(what: str, path: str, problem: str) -> HeartSightError:
    return HeartSightError(f"{what} is invalid at {_shorten(path)}: {problem}")


def _unstorable(text: str) -> str:
    return f"holds {_UNSTORABLE.search(text).group()!r}: PostgreSQL cannot store U+0000 or a lone surrogate"


def _shorten(text: str, limit: int = 60) -> str:
    """Payload text quoted in an error, cut so that one hostile value cannot flood logs and dead letters."""
    return text if len(text) <= limit else text[:limit] + "..."


def _utc_text(time: datetime) -> str:
    if time.tzinfo is None:
        raise HeartSightError("alert time has no time zone: pass an aware datetime, e.g. datetime.now(timezone.utc)")
    return time.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cache
def _validator(path: Path) -> Draft202012Validator:
    """The schema's validator; the status schema refers to the alert schema's definitions."""
    schemas = {}
    for schema_path in (SCHEMA_PATH, path):
        if not schema_path.exists():
            raise HeartSightError(f"schema not found at {schema_path}: install HeartSight from its source tree")
        schemas[schema_path.name] = json.loads(schema_path.read_text())
    registry = Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    return Draft202012Validator(schemas[path.name], registry=registry)


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error) -> str:
    message = " ".join(error.message.split())
    return message[:200] + "..." if len(message) > 200 else message
