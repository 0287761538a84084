"""Hostile, malformed and oversized payloads end in the dead-letter table with a reason; nothing crashes.

Property-based (hypothesis): the listener's message handler, the code every MQTT message goes through, is
fed random bytes, mutated alerts and oversized payloads, with a real SQLite store behind it.
"""

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import sample_alert
from sdk.clinician.listener import MAX_PAYLOAD_BYTES, Listener
from sdk.clinician.store import Store
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import to_bytes, validate

TOPIC = "heartsight/v1/s1/dev-a/alerts"
VALID = sample_alert()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _handler(tmp_path_factory) -> Listener:
    store = Store(tmp_path_factory.mktemp("fuzz") / "store.sqlite")
    return Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)  # never started: the handler is driven directly


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _outcome_is_consistent(listener: Listener, raw: bytes, topic: str = TOPIC) -> None:
    dead_before = len(listener.store.dead_letters())
    outcome = listener._handle(topic, raw)
    try:
        alert = json.loads(raw, parse_constant=_reject)  # standard JSON only: no NaN or Infinity
        validate(alert)
        valid = topic.split("/")[2:4] == [alert["site"], alert["device"]] and len(raw) <= MAX_PAYLOAD_BYTES
    except (ValueError, HeartSightError, TypeError, KeyError, RecursionError):
        valid = False
    if valid:
        assert outcome in ("stored", "duplicates")
    else:
        assert outcome == "dead_letters"
        letters = listener.store.dead_letters()
        assert len(letters) == dead_before + 1 and letters[-1]["reason"] and letters[-1]["raw"] == raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=3000))
def test_random_bytes_never_crash_the_listener(tmp_path_factory, raw):
    _outcome_is_consistent(_handler(tmp_path_factory), raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(sorted(VALID) + ["signal.data", "signal.scale", "trace.data", "model.sha256",
                                              "details", "signal.fs", "trace"]),
       value=JSON_VALUES, delete=st.booleans())
def test_mutated_alerts_are_stored_only_when_still_valid(tmp_path_factory, path, value, delete):
    alert = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    target = alert
    for key in parents:
        target = target[key]
    if delete:
        target.pop(last, None)
    else:
        target[last] = value
    _outcome_is_consistent(_handler(tmp_path_factory), json.dumps(alert).encode())


def test_an_oversized_payload_is_refused_by_size_before_it_is_parsed(tmp_path_factory):
    listener = _handler(tmp_path_factory)
    raw = to_bytes(VALID)[:-1] + b"," + b'"x": "' + b"A" * MAX_PAYLOAD_BYTES + b'"}'
    assert listener._handle(TOPIC, raw) == "dead_letters"
    assert "exceeds the 2,000,000-byte limit" in listener.store.dead_letters()[0]["reason"]


def test_a_valid_alert_on_its_own_topic_is_stored_once(tmp_path_factory):
    listener = _handler(tmp_path_factory)
    assert listener._handle(TOPIC, to_bytes(VALID)) == "stored"
    assert listener._handle(TOPIC, to_bytes(VALID)) == "duplicates"
    assert listener._handle("heartsight/v1/s1/dev-b/alerts", to_bytes(VALID)) == "dead_letters"
