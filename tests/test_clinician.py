"""Clinician side against real Mosquitto brokers and a real PostgreSQL (no mocks): listener, store, review."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import DEADLINE_S, needs_mosquitto, postgres_schema, sample_alert
from sdk.clinician.listener import MAX_PAYLOAD_BYTES, Listener
from sdk.clinician.fhir import to_fhir_observation
from sdk.clinician.review import export_jsonl, write_review
from sdk.clinician.store import Store, UnstorableAlert
from sdk.demo.broker import LocalBroker as Broker
from sdk.demo.broker import wait_until
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import decode_array, to_bytes
from sdk.stream.publisher import Publisher


@pytest.fixture
def postgres_url():
    """A store URL whose tables live in a schema of this test's own, dropped afterwards."""
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    target = tmp_path / "store.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with Store(target) as s:
        yield s


def raw_publish(port: int, messages: list[tuple[str, bytes]], username: str | None = None,
                password: str | None = None) -> None:
    """Publish exactly these bytes (QoS 1), as a misbehaving or malicious device would."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload in messages:
        sent = client.publish(topic, payload, qos=1)
        sent.wait_for_publish(DEADLINE_S)  # returns silently on timeout
        assert sent.is_published(), f"{topic} not acknowledged within {DEADLINE_S:g} s"
    client.disconnect()
    client.loop_stop()


# --- store ---------------------------------------------------------------------------------------------------------

def test_store_keeps_each_alert_once_and_dead_letters(store):
    later, earlier, other = sample_alert(i=5), sample_alert(i=1), sample_alert(device="dev-b", i=3)
    assert [store.add(a) for a in (later, earlier, other)] == [True, True, True]
    assert store.add(later) is False
    assert [a["id"] for a in store.alerts()] == [earlier["id"], other["id"], later["id"]]  # by event time
    assert store.alerts("dev-a") == [earlier, later]
    assert store.devices() == ["dev-a", "dev-b"]
    store.add_dead_letter("heartsight/v1/s1/x/alerts", b"\xff not json", "payload is not UTF-8 JSON")
    [dead] = store.dead_letters()
    assert dead["raw"] == b"\xff not json" and dead["reason"] == "payload is not UTF-8 JSON"
    assert dead["topic"] == "heartsight/v1/s1/x/alerts" and dead["received_at"].startswith("20")


def test_store_explains_an_unreachable_database(tmp_path):
    with pytest.raises(HeartSightError, match="cannot connect to PostgreSQL at postgresql://127.0.0.1:1/test"):
        Store("postgresql://user:secret@127.0.0.1:1/test")


# --- listener ------------------------------------------------------------------------------------------------------

def test_listener_stores_valid_alerts_once_and_dead_letters_the_rest(any_broker, tmp_path):
    broker = any_broker
    good = sample_alert()
    bad_schema = {**sample_alert(i=1), "confidence": 1.7}
    spoofed = sample_alert(device="dev-b", i=2)
    topic = "heartsight/v1/s1/dev-a/alerts"
    with Store(tmp_path / "store.sqlite") as store:
        listener = Listener(BrokerConfig(broker.url), store, client_id="clinic-1")
        listener.start(DEADLINE_S)
        listener.stop()  # the broker now keeps the session and queues alerts for it while it is away
        raw_publish(broker.port, [(topic, to_bytes(good)), (topic, to_bytes(good)), (topic, b"{not json"),
                                  (topic, b"\xff\xfe"), (topic, to_bytes(bad_schema)), (topic, to_bytes(spoofed))])
        counts = Listener(BrokerConfig(broker.url), store, client_id="clinic-1").run(
            duration_s=DEADLINE_S, stop_when=lambda: len(store.dead_letters()) == 4 and store.alerts())
        assert counts == {"stored": 1, "duplicates": 1, "dead_letters": 4, "statuses": 0}
        assert store.alerts() == [good]
        reasons = [d["reason"] for d in store.dead_letters()]
        assert "not UTF-8 JSON" in reasons[0] and "not UTF-8 JSON" in reasons[1]
        assert "alert is invalid at confidence" in reasons[2]
        assert "payload says site s1 device dev-b but came on heartsight/v1/s1/dev-a/alerts" in reasons[3]
        assert store.dead_letters()[0]["raw"] == b"{not json"


@needs_mosquitto
def test_acl_stops_a_device_writing_as_another_and_a_clinician_writing_at_all(tmp_path):
    passwords = tmp_path / "passwords"
    for i, (user, password) in enumerate([("dev-a", "pa"), ("dev-b", "pb"), ("clinic", "pc")]):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwords), user, password],
                       check=True)
    acl = tmp_path / "acl"
    acl.write_text("user clinic\ntopic read heartsight/v1/+/+/alerts\ntopic read heartsight/v1/+/+/status\n"
                   "topic write heartsight/v1/+/+/acks\n\n"
                   "pattern write heartsight/v1/+/%u/alerts\npattern write heartsight/v1/+/%u/status\n"
                   "pattern read heartsight/v1/+/%u/acks\n")
    broker = Broker(tmp_path, f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}")
    broker.start()
    try:
        with Store(tmp_path / "store.sqlite") as store:
            with pytest.raises(HeartSightError, match="refused the connection .*username, password"):
                Listener(BrokerConfig(broker.url, "clinic", "wrong"), store).start()
            listener = Listener(BrokerConfig(broker.url, "clinic", "pc"), store)
            listener.start(DEADLINE_S)
            impostor = Publisher(BrokerConfig(broker.url, "dev-a", "pa"), "dev-b", "s1",
                                 outbox_path=tmp_path / "impostor.sqlite")
            impostor.publish(sample_alert(device="dev-b"))
            with pytest.raises(HeartSightError, match="refused 1 alert.*Not authorized"):
                impostor.flush(DEADLINE_S)  # the broker dropped it
            impostor.close()
            clinician = Publisher(BrokerConfig(broker.url, "clinic", "pc"), "dev-a", "s1",
                                  outbox_path=tmp_path / "clinician.sqlite")  # a clinician may read, never write
            clinician.publish(sample_alert(device="dev-a", i=9))
            with pytest.raises(HeartSightError, match="refused 1 alert.*Not authorized"):
                clinician.flush(DEADLINE_S)
            clinician.close()
            # dev-a on its own topic, but the payload claims dev-b
            raw_publish(broker.port, [("heartsight/v1/s1/dev-a/alerts", to_bytes(sample_alert(device="dev-b")))],
                        "dev-a", "pa")
            honest = Publisher(BrokerConfig(broker.url, "dev-a", "pa"), "dev-a", "s1",
                               outbox_path=tmp_path / "a.sqlite")
            honest.publish(sample_alert(device="dev-a"))
            assert honest.flush(DEADLINE_S) == (0, 0)  # stored, and acknowledged to dev-a alone
            honest.close()
            assert wait_until(lambda: listener.counts["stored"] == 1 and listener.counts["dead_letters"] == 1,
                              DEADLINE_S)
            counts = listener.stop()
            assert {k: counts[k] for k in ("stored", "duplicates", "dead_letters")} == \
                {"stored": 1, "duplicates": 0, "dead_letters": 1}
            assert store.devices() == ["dev-a"] and store.alerts("dev-b") == []
            # statuses too: the honest device's is kept; the impostor's and the clinician's never reached the listener
            assert counts["statuses"] >= 1 and [s["state"] for s in store.device_state("dev-a")] in (["online"],
                                                                                                  ["offline"])
            assert store.device_state("dev-b") == []
            assert "device dev-b but came on heartsight/v1/s1/dev-a/alerts" in store.dead_letters()[0]["reason"]
    finally:
        broker.stop()


def test_shared_subscription_splits_alerts_and_postgres_stores_each_once(any_broker, postgres_url, tmp_path):
    broker, config = any_broker, BrokerConfig(any_broker.url)
    alerts = [sample_alert(device=f"dev-{i % 3}", i=i) for i in range(20)]
    with Store(postgres_url) as first_store, Store(postgres_url) as second_store:
        listeners = [Listener(config, s, shared_group="clinic", client_id=f"clinic-{k}")
                     for k, s in enumerate((first_store, second_store))]
        for listener in listeners:
            listener.start(DEADLINE_S)
        for device in ("dev-0", "dev-1", "dev-2"):
            with Publisher(config, device, "s1", outbox_path=tmp_path / f"{device}.sqlite") as publisher:
                for alert in alerts:
                    if alert["device"] == device:
                        publisher.publish(alert)
                assert publisher.flush(DEADLINE_S) == (0, 0)
        # redeliveries (e.g. after a device restart) reach either listener and must not be stored twice
        raw_publish(broker.port, [(f"heartsight/v1/s1/{a['device']}/alerts", to_bytes(a)) for a in alerts[:6]])
        total = lambda key: sum(listener.counts[key] for listener in listeners)  # noqa: E731
        assert wait_until(lambda: total("stored") + total("duplicates") == 26, DEADLINE_S)
        counts = [listener.stop() for listener in listeners]
        assert total("stored") == 20 and total("duplicates") == 6
        assert all(c["stored"] > 0 for c in counts), counts  # the group really split the work
        assert sorted(a["id"] for a in first_store.alerts()) == sorted(a["id"] for a in alerts)
        assert second_store.devices() == ["dev-0", "dev-1", "dev-2"]


def test_an_alert_the_store_cannot_take_stays_at_the_broker_until_it_can(any_broker, tmp_path):
    broker, config = any_broker, BrokerConfig(any_broker.url)
    path = tmp_path / "store.sqlite"
    alert = sample_alert()
    with Store(path) as store:
        away = Listener(config, store, client_id="clinic-2")
        away.start(DEADLINE_S)
        away.stop()  # the broker keeps its session and queues for it
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE alerts")  # the database breaks under the listener
        raw_publish(broker.port, [("heartsight/v1/s1/dev-a/alerts", to_bytes(alert))])
        with pytest.raises(HeartSightError, match="could not store .*stays unacknowledged"):
            Listener(config, store, client_id="clinic-2").run(duration_s=DEADLINE_S)
    with Store(path) as repaired:
        counts = Listener(config, repaired, client_id="clinic-2").run(duration_s=DEADLINE_S,
                                                                      stop_when=lambda: repaired.alerts())
        assert counts["stored"] == 1 and repaired.alerts() == [alert]


def test_listener_fails_clearly_when_the_broker_is_unreachable(tmp_path):
    with Store(tmp_path / "store.sqlite") as store:
        with pytest.raises(HeartSightError, match="could not subscribe .*refused"):
            Listener(BrokerConfig("mqtt://127.0.0.1:1"), store).start(timeout_s=1.5)


# --- poison messages (issue 10): dead-lettered with the reason and acknowledged, so the clinic goes on -----------

TOPIC = "heartsight/v1/s1/dev-a/alerts"


def poisoned(i: int, path: str, json_text: str) -> bytes:
    """Alert i's bytes with the value at path (dotted) written as json_text, e.g. 1e400, which Python cannot write."""
    alert = sample_alert(i=i)
    *parents, last = path.split(".")
    target = alert
    for key in parents:
        target = target[key]
    target[last] = "@poison@"
    return json.dumps(alert).replace('"@poison@"', json_text).encode()


POISON = {  # name: (payload, part of its dead letter's reason)
    "240 kB of nesting": (b'{"d":' * 40_000 + b"0" + b"}" * 40_000, "nests objects or arrays too deeply to parse"),
    "details nested 100 deep": (poisoned(1, "details.deep", "[" * 100 + "]" * 100), "nest deeper than 64 levels"),
    "NUL in the label": (poisoned(2, "label", '"V\\u0000"'), "PostgreSQL cannot store U+0000"),
    "lone surrogate in the label": (poisoned(3, "label", '"\\ud800"'), "PostgreSQL cannot store U+0000"),
    "NUL in a details key": (poisoned(4, "details", '{"a\\u0000": 1}'), "PostgreSQL cannot store U+0000"),
    "lone low surrogate in details": (poisoned(5, "details.note", '"x\\udc00"'), "PostgreSQL cannot store U+0000"),
    "1e400 in details": (poisoned(6, "details.burden", "1e400"), "the number 1e400 overflows a 64-bit float"),
    "-1e400 as confidence": (poisoned(7, "confidence", "-1e400"), "the number -1e400 overflows"),
    "NaN": (poisoned(8, "details.burden", "NaN"), "NaN is not valid JSON"),
    "Infinity": (poisoned(9, "details.burden", "-Infinity"), "-Infinity is not valid JSON"),
    "2**53 as sample_index": (poisoned(10, "sample_index", str(2**53)), "is beyond ±9007199254740991"),
    "a 5000-digit integer": (poisoned(11, "details.n", "9" * 5000), "is beyond ±9007199254740991"),
    "fs 5e-324": (poisoned(12, "signal.fs", "5e-324"), "at signal.fs: at 4.94066e-324 Hz the excerpt's duration"),
    "scale 1e308": (poisoned(13, "signal.scale", "1e308"), "at signal.scale: 1e+308 times its int16 steps"),
    "a string for a number": (poisoned(14, "confidence", '"high"'), "alert is invalid at confidence"),
    "not UTF-8": (b"\xff\xfe", "not UTF-8 JSON"),
    "a JSON array": (b"[1, 2]", "JSON list, not an object"),
    "another device's alert": (to_bytes(sample_alert(device="dev-b", i=15)), f"device dev-b but came on {TOPIC}"),
    "2 MB": (to_bytes(sample_alert(i=16))[:-1] + b',"x":"' + b"A" * MAX_PAYLOAD_BYTES + b'"}', "exceeds the"),
}


@pytest.mark.parametrize("name", POISON)
def test_a_poison_message_is_dead_lettered_with_its_reason_and_the_next_alert_is_stored(store, name):
    raw, reason = POISON[name]
    listener = Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)  # never started: its handler is driven directly
    assert listener._handle(TOPIC, raw) == "dead_letters"
    [dead] = store.dead_letters()
    assert reason in dead["reason"] and dead["raw"] == raw and dead["topic"] == TOPIC
    assert listener._handle(TOPIC, to_bytes(sample_alert(i=99))) == "stored"


def test_poison_messages_are_acknowledged_and_never_come_back(broker, store):
    """Against Mosquitto: the listener goes on past every poison message, and a restart does not see them again."""
    config = BrokerConfig(broker.url)
    listener = Listener(config, store, client_id="clinic-poison")
    listener.start(DEADLINE_S)
    listener.stop()  # the broker keeps the session and queues for it while it is away
    first, second = sample_alert(i=50), sample_alert(i=51)
    raw_publish(broker.port, [(TOPIC, raw) for raw, _ in POISON.values()] + [(TOPIC, to_bytes(first))])
    listener = Listener(config, store, client_id="clinic-poison")
    counts = listener.run(duration_s=DEADLINE_S, stop_when=lambda: listener.counts["stored"] == 1)
    assert counts == {"stored": 1, "duplicates": 0, "dead_letters": len(POISON), "statuses": 0}
    assert [d["raw"] for d in store.dead_letters()] == [raw for raw, _ in POISON.values()]
    raw_publish(broker.port, [(TOPIC, to_bytes(second))])
    listener = Listener(config, store, client_id="clinic-poison")
    counts = listener.run(duration_s=DEADLINE_S, stop_when=lambda: listener.counts["stored"] == 1)
    assert counts == {"stored": 1, "duplicates": 0, "dead_letters": 0, "statuses": 0}  # nothing before it was redelivered
    assert store.alerts() == [first, second]


def test_a_payload_whose_check_breaks_is_dead_lettered_as_a_bug(store, monkeypatch):
    def broken(alert):
        raise TypeError("a bug")
    monkeypatch.setattr("sdk.clinician.listener.validate", broken)
    listener = Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)
    assert listener._handle(TOPIC, to_bytes(sample_alert())) == "dead_letters"
    assert "checking the payload failed (TypeError('a bug')): a HeartSight bug" in store.dead_letters()[0]["reason"]


def test_content_the_database_refuses_is_dead_lettered_not_retried(store, monkeypatch):
    """Should a value slip past the payload checks, the store's refusal (bad data, not an outage) is a dead letter."""
    refused = [{**sample_alert(i=1), "confidence": float("nan")}]
    if store.target.startswith("postgresql"):
        refused.append({**sample_alert(i=2), "label": "V\x00"})  # refused by PostgreSQL itself (SQLSTATE class 22)
    for alert in refused:
        with pytest.raises(UnstorableAlert, match="the store refuses this alert"):
            store.add(alert)
    monkeypatch.setattr("sdk.clinician.listener._checked", lambda topic, raw: refused.pop())
    listener = Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)
    for _ in range(len(refused)):
        assert listener._handle(TOPIC, b"{}") == "dead_letters"
    assert all("the store refuses this alert" in d["reason"] for d in store.dead_letters()) and store.alerts() == []


def test_dead_letters_keep_any_bytes_and_reason_in_both_stores(store):
    raw = b"\x00\xff\xfe{" + "\ud800".encode("utf-8", "surrogatepass")
    store.add_dead_letter("heartsight/v1/s1/dev-a/alerts", raw, "bad \x00 and \ud800 <here>")
    [dead] = store.dead_letters()
    assert dead["raw"] == raw and dead["reason"] == "bad \\x00 and \\ud800 <here>"


# --- review --------------------------------------------------------------------------------------------------------

def test_review_pages_show_every_alert_with_its_plot_and_escape_payload_text(tmp_path):
    hostile = sample_alert(i=1, label="<b>V</b>", details={"note": "<script>alert(1)</script>"})
    alerts = [sample_alert(i=0), hostile, sample_alert(device="dev-b", i=2, type="af_start", label="AF")]
    with Store(tmp_path / "store.sqlite") as store:
        for alert in alerts:
            store.add(alert)
        store.add_dead_letter("heartsight/v1/s1/<x>/alerts", b"{", "payload is not UTF-8 JSON: <oops>")
        pages = write_review(store, tmp_path / "review")
    index = pages[0].read_text()
    assert [p.name for p in pages] == ["index.html", "device-dev-a.html", "device-dev-b.html"]
    assert 'href="device-dev-a.html"' in index and 'href="device-dev-b.html"' in index
    assert "&lt;x&gt;" in index and "<x>" not in index and "&lt;oops&gt;" in index
    for page in pages[1:]:
        text = page.read_text()
        shown = [a for a in alerts if f"device-{a['device']}.html" == page.name]
        assert text.count("<img ") == len(shown)
        for alert in shown:
            assert alert["id"] in text and alert["type"] in text and alert["model"]["sha256"][:12] in text
            png = tmp_path / "review" / "png" / f"{alert['id']}.png"
            assert f'src="png/{alert["id"]}.png"' in text and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dev_a = pages[1].read_text()
    assert "<script>" not in dev_a and "&lt;script&gt;" in dev_a and "&lt;b&gt;V&lt;/b&gt;" in dev_a


def test_export_jsonl_and_fhir_decode_arrays_to_real_units(tmp_path):
    alert = sample_alert()
    with Store(tmp_path / "store.sqlite") as store:
        store.add(alert)
        [line] = list(export_jsonl(store))
    row = json.loads(line)
    assert (row["id"], row["device"], row["type"]) == (alert["id"], "dev-a", "ventricular_ectopic_beat")
    assert np.allclose(row["signal"], decode_array(alert["signal"])) and len(row["trace"]) == 360
    assert all(isinstance(v, float) for v in row["signal"][:5])
    observation = to_fhir_observation(alert)
    sampled = observation["valueSampledData"]
    assert observation["resourceType"] == "Observation" and observation["effectiveDateTime"] == alert["time"]
    assert sampled["period"] == pytest.approx(1000 / 360) and sampled["origin"]["unit"] == "mV"
    steps = np.array(sampled["data"].split(), dtype=float)
    assert np.allclose(steps * sampled["factor"], decode_array(alert["signal"]))
    trace = observation["component"][-1]["valueSampledData"]
    assert len(trace["data"].split()) == 360


def nastiest_alerts() -> list[dict]:
    """Alerts with the worst values the listener still accepts: hostile text, extreme but finite numbers."""
    deepest = 1
    for _ in range(62):  # with the alert and its details: 64 levels, the most there may be
        deepest = [deepest]
    text = "<script>\x01\x1b[31m\u202e😀&\"'"
    alerts = [sample_alert(i=i, label=text, details={"": deepest, text: [1.7976931348623157e308, 5e-324,
                                                                           -(2**53 - 1)]}) for i in range(4)]
    alerts[0]["signal"].update(fs=1e-300)  # the slowest rate whose excerpt's duration is still a float
    alerts[0]["sample_index"] = 2**53 - 1
    alerts[1]["signal"].update(fs=1.7976931348623157e308)
    alerts[1]["time"] = "0001-01-01T00:00:00Z"
    alerts[2]["signal"].update(scale=1e303)  # values up to 3.3e307
    alerts[2]["trace"].update(scale=5e-324)
    alerts[2]["confidence"] = 5e-324
    alerts[3]["time"] = "9999-12-31T23:59:59.999999Z"
    alerts[3]["signal"].update(scale=5e303)  # values up to 1.6e308, beyond what matplotlib's axes can compute
    return alerts


def strict_json(line: str):
    def refuse(token):
        raise ValueError(f"{token} is not JSON")
    return json.loads(line, parse_constant=refuse, parse_float=lambda text: float(text) if np.isfinite(float(text))
                      else refuse(text))


def test_review_and_export_show_the_nastiest_values_that_get_in(store, tmp_path):
    alerts = nastiest_alerts()
    listener = Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)
    assert [listener._handle(TOPIC, to_bytes(a)) for a in alerts] == ["stored"] * len(alerts)
    store.add_dead_letter(TOPIC, POISON["lone surrogate in the label"][0], "lone \ud800 and \x00")
    pages = write_review(store, tmp_path / "review")
    assert [p.name for p in pages] == ["index.html", "device-dev-a.html"]
    assert "lone \\ud800 and \\x00" in pages[0].read_text()
    page = pages[1].read_text()
    assert page.count("<section") == len(alerts) == page.count("<img ") + page.count("No plot: matplotlib")
    assert "&lt;script&gt;\\x01\\x1b[31m\u202e😀&amp;&quot;&#x27;" in page and "<script>" not in page
    exported = [strict_json(line) for line in export_jsonl(store)]
    assert sorted(row["id"] for row in exported) == sorted(a["id"] for a in alerts)
    for row, alert in zip(exported, store.alerts()):
        assert row == strict_json(json.dumps(row)) and row["label"] == alert["label"]
        strict_json(json.dumps(to_fhir_observation(alert), allow_nan=False))


def test_review_shows_what_a_store_filled_before_these_checks_holds(tmp_path):
    """Older listeners stored lone surrogates, NUL, fs 5e-324 and NaN in SQLite: review still writes every page."""
    path = tmp_path / "old.sqlite"
    old = [sample_alert(i=0), sample_alert(i=1), sample_alert(i=2)]
    old[0]["label"] = "\ud800\x00"
    old[1]["signal"]["fs"] = 5e-324
    old[2]["details"] = {"burden": float("nan"), "rate": float("inf")}
    with sqlite3.connect(path) as db:  # the alerts table as it was before the inbox's columns
        db.execute("CREATE TABLE alerts (id TEXT PRIMARY KEY, device TEXT NOT NULL, site TEXT NOT NULL, type TEXT NOT "
                   "NULL, time TEXT NOT NULL, received_at TEXT NOT NULL, payload TEXT NOT NULL)")
        for alert in old:  # as Store.add wrote them before it refused NaN
            db.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?)", (alert["id"], alert["device"], alert["site"],
                       alert["type"], alert["time"], alert["time"], json.dumps(alert)))
    with Store(path) as store:
        listed = {a["id"]: (a["label"], a["status"]) for a in store.list_alerts()}
        assert listed == {old[0]["id"]: ("\\ud800\\x00", "unreviewed"), **{a["id"]: (a["label"], "unreviewed")
                                                                            for a in old[1:]}}
        pages = write_review(store, tmp_path / "review")
        page = pages[1].read_text(encoding="utf-8")
        assert page.count("<section") == 3 and page.count("<img ") == 2
        assert "\\ud800\\x00" in page and "No plot: matplotlib cannot draw this excerpt" in page
        assert "{&#x27;burden&#x27;: nan, &#x27;rate&#x27;: inf}" in page
        with pytest.raises(HeartSightError, match=f"alert {old[2]['id']} holds NaN or an infinite number"):
            list(export_jsonl(store))
