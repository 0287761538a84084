"""Hostile, malformed and oversized payloads end in the dead-letter table with a reason; nothing crashes.

Property-based (hypothesis): the listener's message handler, the code every MQTT message goes through, is
fed random bytes, mutated alerts, values no store or JSON reader can hold (deep nesting, NUL, lone surrogates,
1e400, NaN, huge integers, wrong types) and oversized payloads, with a real SQLite and PostgreSQL store behind it.

The schema check runs the schema compiled to Python (fastjsonschema) and asks jsonschema only about what that
rejects, so on every payload here the compiled check must reject whatever jsonschema rejects.
"""

import copy
import json
import math
import uuid

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import postgres_schema, sample_alert
from sdk.clinician.listener import MAX_PAYLOAD_BYTES, Listener
from sdk.clinician.store import Store
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import SCHEMA_PATH, STATUS_SCHEMA_PATH, _compiled, _validator, to_bytes, validate, \
    validate_status

TOPIC = "heartsight/v1/s1/dev-a/alerts"
VALID = sample_alert()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


# JSON text of values no store or JSON reader can hold, written by hand as a hostile device would (Python's json
# cannot write most of them), and of harmless ones: numbers that overflow or lose precision, NaN, U+0000, lone
# surrogates, nesting from 1 to 100,000 levels, and ordinary values, which are wrong types in most places
NASTY_JSON = st.one_of(
    st.sampled_from(["1e400", "-1e400", "1E309", "NaN", "Infinity", "-Infinity", "9" * 5000, str(2**53),
                     str(-(2**53)), str(2**53 - 1), "5e-324", "1.7976931348623157e308", "-0.0", '"\\u0000"',
                     '"\\ud800"', '"\\udfff"', '"a\\ud83d"', '"\\ud83d\\ude00"', '{"\\u0000": 1}',
                     '{"\\udc00": 1}', "true", "null", "[]", "{}", '""', '"1"']),
    st.integers(1, 100_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 3_000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(lambda x: json.dumps(x)),  # NaN and Infinity included
    st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]),
            max_size=12).map(json.dumps),  # NUL and lone surrogates as \u escapes
    JSON_VALUES.map(json.dumps),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def listener(request, tmp_path_factory):
    """A listener's handler, never started (driven directly), over one store of either kind for all examples."""
    if request.param == "sqlite":
        with Store(tmp_path_factory.mktemp("fuzz") / "store.sqlite") as store:
            yield Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)
    else:
        with postgres_schema() as url, Store(url) as store:
            yield Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _storable(value, depth: int = 1) -> bool:
    """What every store and JSON reader can hold: 64 levels, finite doubles, exact integers, text without U+0000
    or lone surrogates (written here without the code under test)."""
    if isinstance(value, (dict, list)):
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        return depth <= 64 and all(_storable(item, depth + 1) for item in items)
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= 2**53 - 1
    return True


def _compiled_rejects_what_jsonschema_rejects(value, schema_path=SCHEMA_PATH) -> bool:
    """Assert that the compiled schema check is never looser than jsonschema on value; whether jsonschema rejects it."""
    rejected = next(_validator(schema_path).iter_errors(value), None) is not None
    if rejected:
        with pytest.raises(fastjsonschema.JsonSchemaValueException):
            _compiled(schema_path)(value)
    return rejected


def _outcome_is_consistent(listener: Listener, raw: bytes, topic: str = TOPIC) -> None:
    """The handler stores exactly the valid alerts, dead-letters the rest with the raw bytes, and goes on."""
    dead_before = len(listener.store.dead_letters())
    outcome = listener._handle(topic, raw)
    try:
        alert = json.loads(raw, parse_constant=_reject)  # standard JSON only: no NaN or Infinity
        _compiled_rejects_what_jsonschema_rejects(alert)
        valid = _storable(alert)
        validate(alert)
        valid = valid and topic.split("/")[2:4] == [alert["site"], alert["device"]] and len(raw) <= MAX_PAYLOAD_BYTES
    except (ValueError, HeartSightError, TypeError, KeyError, RecursionError):
        valid = False
    if valid:
        assert outcome in ("stored", "duplicates")
        assert alert["id"] in {a["id"] for a in listener.store.alerts(alert["device"])}
    else:
        assert outcome == "dead_letters"
        letters = listener.store.dead_letters()
        assert len(letters) == dead_before + 1 and letters[-1]["reason"] and letters[-1]["raw"] == raw
    assert listener._handle(TOPIC, to_bytes(VALID)) in ("stored", "duplicates")  # the next alert still gets in


PATHS = st.sampled_from(sorted(VALID) + ["signal.data", "signal.scale", "trace.data", "trace.scale", "model.sha256",
                                          "model.name", "details", "details.x", "signal.fs", "signal.start_sample",
                                          "trace"])


def _with(path: str, value) -> dict:
    """VALID under a new id (so that a valid one is stored, not a duplicate) with the value at path (dotted) replaced."""
    alert = copy.deepcopy(VALID)
    alert["id"] = uuid.uuid4().hex
    *parents, last = path.split(".")
    target = alert
    for key in parents:
        target = target[key]
    target[last] = value
    return alert


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=3000))
def test_random_bytes_never_crash_the_listener(listener, raw):
    _outcome_is_consistent(listener, raw)


@settings(max_examples=200, deadline=None)
@given(path=PATHS, value=JSON_VALUES, delete=st.booleans())
def test_mutated_alerts_are_stored_only_when_still_valid(listener, path, value, delete):
    alert = _with(path, value)
    if delete:
        *parents, last = path.split(".")
        target = alert
        for key in parents:
            target = target[key]
        target.pop(last)
    _outcome_is_consistent(listener, json.dumps(alert).encode())


@settings(max_examples=300, deadline=None)
@given(path=PATHS, text=NASTY_JSON)
def test_values_no_store_can_hold_are_dead_lettered_wherever_they_are(listener, path, text):
    raw = json.dumps(_with(path, "@nasty@")).replace('"@nasty@"', text).encode()
    _outcome_is_consistent(listener, raw)


def test_an_oversized_payload_is_refused_by_size_before_it_is_parsed(listener):
    raw = to_bytes(VALID)[:-1] + b"," + b'"x": "' + b"A" * MAX_PAYLOAD_BYTES + b'"}'
    assert listener._handle(TOPIC, raw) == "dead_letters"
    assert "exceeds the 2,000,000-byte limit" in listener.store.dead_letters()[-1]["reason"]


def test_a_valid_alert_on_its_own_topic_is_stored_once(listener):
    alert = _with("label", "V")
    assert listener._handle(TOPIC, to_bytes(alert)) == "stored"
    assert listener._handle(TOPIC, to_bytes(alert)) == "duplicates"
    assert listener._handle("heartsight/v1/s1/dev-b/alerts", to_bytes(alert)) == "dead_letters"


def _nested(depth: int) -> list:
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("path, fine, bad, problem", [
    ("confidence", 0.5, float("nan"), "at confidence: nan is not a finite number"),
    ("details.rate", 1e308, float("-inf"), "at details.rate: -inf is not a finite number"),
    ("sample_index", 2**53 - 1, 2**53, "at sample_index: an integer beyond ±9007199254740991"),
    ("label", "V\x01", "V\x00", "at label: the text holds '\\x00': PostgreSQL cannot store"),
    ("details", {"\U0001f600": 1}, {"\udfff": 1}, "the key holds '\\udfff': PostgreSQL cannot store"),
    ("details.deep", _nested(62), _nested(63), "objects and arrays nest deeper than 64 levels"),
])
def test_validate_refuses_on_the_device_what_no_store_can_hold(path, fine, bad, problem):
    """What JSON parsing refuses on the listener's side, validate refuses in the dicts a device builds."""
    validate(_with(path, fine))
    with pytest.raises(HeartSightError, match="alert is invalid") as error:
        validate(_with(path, bad))
    assert problem in str(error.value)


@pytest.mark.parametrize("change", [
    lambda a: a.update(confidence=1.5), lambda a: a.pop("trace"), lambda a: a.update(extra=1),
    lambda a: a.update(type="panic"), lambda a: a.update(device="dev/b"),
    lambda a: a.update(time="2024-05-01 12:00:00"),
    lambda a: a["model"].update(backend="tflite"), lambda a: a["signal"].update(data="!!!!"),
    lambda a: a.update(sample_index=True), lambda a: a.update(sample_index=1.5), lambda a: a.update(details=[]),
    lambda a: a["model"].update(sha256="AB" * 32), lambda a: a["signal"].update(fs=0), lambda a: a.update(label=""),
    lambda a: a["trace"].update(encoding="base64"), lambda a: a["signal"].update(data="AAA"),
])
def test_the_compiled_check_rejects_what_jsonschema_rejects_and_the_error_is_jsonschemas(change):
    alert = copy.deepcopy(VALID)
    change(alert)
    assert _compiled_rejects_what_jsonschema_rejects(alert)
    with pytest.raises(HeartSightError, match="alert is invalid at") as error:
        validate(alert)
    assert "\n" not in str(error.value)


def test_a_pattern_ends_the_text_as_json_schema_says_even_where_jsonschema_lets_a_final_newline_through():
    """JSON Schema's patterns are ECMA-262, whose $ ends the text; jsonschema's (Python's re.search) matches before a
    final newline too. The compiled check decides, so an id or name with a newline after it is refused."""
    alert = {**VALID, "model": {**VALID["model"], "sha256": "ab" * 32 + "\n"}}
    assert not _compiled_rejects_what_jsonschema_rejects(alert)  # jsonschema alone would take it
    with pytest.raises(HeartSightError, match="alert is invalid at model.sha256: .*must match pattern") as error:
        validate(alert)
    assert "\n" not in str(error.value)


VALID_STATUS = {"device": "dev-a", "site": "s1", "state": "online", "queued": 2, "head": {"version": 1},
                "vitals": [{"start": "2026-01-01T08:00:00+00:00", "period_s": 60.0, "hr_bpm": 71.5,
                            "beats": {"N": 70, "V": 1}, "af_fraction": None}]}
STATUS_PATHS = st.sampled_from(["device", "site", "state", "queued", "head", "vitals", "vitals.0", "vitals.0.start",
                                "vitals.0.period_s", "vitals.0.hr_bpm", "vitals.0.beats", "vitals.0.beats.N",
                                "vitals.0.af_fraction", "extra"])


@settings(max_examples=300, deadline=None)
@given(path=STATUS_PATHS, value=JSON_VALUES, delete=st.booleans())
def test_the_compiled_status_check_follows_the_reference_into_the_alert_schema(path, value, delete):
    """The status schema refers to the alert schema's definitions (device and site names); mutated statuses are
    refused by the compiled check whenever jsonschema refuses them, and validate_status says why."""
    status = copy.deepcopy(VALID_STATUS)
    *parents, last = path.split(".")
    target = status
    for key in parents:
        target = target[int(key) if isinstance(target, list) else key]
    if isinstance(target, list):
        target.pop(int(last)) if delete else target.__setitem__(int(last), value)
    elif delete:
        target.pop(last, None)
    else:
        target[last] = value
    if _compiled_rejects_what_jsonschema_rejects(status, STATUS_SCHEMA_PATH):
        with pytest.raises(HeartSightError, match="status is invalid"):
            validate_status(status)


def test_a_device_name_the_alert_schema_refuses_is_refused_in_a_status():
    status = {**VALID_STATUS, "device": "dev/b"}
    assert _compiled_rejects_what_jsonschema_rejects(status, STATUS_SCHEMA_PATH)
    with pytest.raises(HeartSightError, match="status is invalid at device"):
        validate_status(status)
