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
from typing import Callable

import fastjsonschema
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
    return _steps(d).astype(np.float64) * float(d["scale"])


def _steps(d: dict) -> np.ndarray:
    """The int16 steps of an encoded array."""
    if d.get("encoding") != ENCODING:
        raise HeartSightError(f"unsupported array encoding {d.get('encoding')!r}: expected {ENCODING}")
    try:
        raw = base64.b64decode(d["data"], validate=True)
    except (binascii.Error, KeyError, TypeError) as exc:
        raise HeartSightError(f"array data is not valid base64: {exc}") from None
    if len(raw) % 2:
        raise HeartSightError(f"array data has {len(raw)} bytes, not a whole number of int16 samples")
    return np.frombuffer(raw, dtype=_INT16)


def _largest_step(steps: np.ndarray) -> int:
    return max(-int(steps.min()), int(steps.max())) if steps.size else 0


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
    _check_schema(status, STATUS_SCHEMA_PATH, "status")
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
    _check_schema(alert, SCHEMA_PATH, "alert")
    try:
        datetime.fromisoformat(alert["time"])
    except ValueError:
        raise HeartSightError(f"alert is invalid at time: {alert['time']!r} is not a real date and time") from None
    lengths = {}
    for key in ("signal", "trace"):
        try:
            steps = _steps(alert[key])
        except HeartSightError as exc:
            raise HeartSightError(f"alert is invalid at {key}.data: {exc}") from None
        # Every step times the scale is finite if the largest step in magnitude's is: for most scales even 32768's.
        scale = float(alert[key]["scale"])
        if not math.isfinite(32768 * scale) and not math.isfinite(_largest_step(steps) * scale):
            raise HeartSightError(f"alert is invalid at {key}.scale: {alert[key]['scale']:g} times its int16 steps "
                                  "overflows a 64-bit float; give the real scale")
        lengths[key] = len(steps)
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
                if isinstance(key, str) and _has_unstorable(key):
                    raise _invalid(what, child_path, f"the key {_unstorable(key)}")
                todo.append((child_path, child, depth + 1))
        elif isinstance(value, str) and _has_unstorable(value):
            raise _invalid(what, path, f"the text {_unstorable(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise _invalid(what, path, f"{value} is not a finite number")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
            raise _invalid(what, path, f"an integer beyond ±{MAX_SAFE_INTEGER} (2**53 - 1), which JSON readers using "
                                 "doubles cannot hold exactly")


def _has_unstorable(text: str) -> bool:
    """U+0000 or a lone surrogate in text. isascii() reads a flag, so ASCII text (base64 arrays, most of an alert) is
    only searched for U+0000."""
    return "\x00" in text if text.isascii() else _UNSTORABLE.search(text) is not None


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


def _check_schema(value: object, path: Path, what: str) -> None:
    """Raise HeartSightError naming the schema's first violation.

    The schema compiled to Python (fastjsonschema, ~50 µs an alert) decides; only a value it rejects goes through
    jsonschema (~250 µs), whose best_match names the violation best. The compiled check is never looser on parsed
    JSON (test_payload_fuzz holds it to that); where it is stricter it is right: a pattern is ECMA-262's, whose $ ends
    the text, while jsonschema's (Python's re.search) also matches before a final newline, so "id\n" is refused with
    the compiled check's own message.
    """
    try:
        _compiled(path)(value)
        return
    except fastjsonschema.JsonSchemaValueException as compiled_error:
        error = best_match(_validator(path).iter_errors(value))
        if error is not None:
            raise HeartSightError(f"{what} is invalid at {_where(error)}: {_message(error)}") from None
        where = ".".join(str(p) for p in compiled_error.path[1:]) or "(top level)"
        raise HeartSightError(f"{what} is invalid at {_shorten(where)}: "
                              f"{_shorten(' '.join(compiled_error.message.split()), 200)}") from None


@cache
def _schemas() -> dict[Path, dict]:
    """Both schema files: the status schema refers to the alert schema's definitions."""
    schemas = {}
    for path in (SCHEMA_PATH, STATUS_SCHEMA_PATH):
        if not path.exists():
            raise HeartSightError(f"schema not found at {path}: install HeartSight from its source tree")
        schemas[path] = json.loads(path.read_text())
    return schemas


@cache
def _validator(path: Path) -> Draft202012Validator:
    """jsonschema's validator of the schema at path."""
    registry = Registry().with_resources((schema["$id"], Resource.from_contents(schema))
                                         for schema in _schemas().values())
    return Draft202012Validator(_schemas()[path], registry=registry)


@cache
def _compiled(path: Path) -> Callable[[object], object]:
    """The schema at path as a Python function (fastjsonschema), `format` unchecked as jsonschema leaves it (the
    times are checked with datetime.fromisoformat)."""
    by_id = {schema["$id"]: schema for schema in _schemas().values()}
    return fastjsonschema.compile(_schemas()[path], handlers={"https": by_id.__getitem__}, use_formats=False)


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error) -> str:
    message = " ".join(error.message.split())
    return message[:200] + "..." if len(message) > 200 else message
