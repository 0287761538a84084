"""Clinician side against real Mosquitto brokers and a real PostgreSQL (no mocks): listener, store, review."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import DEADLINE_S, needs_mosquitto, sample_alert
from sdk.clinician.listener import Listener
from sdk.clinician.review import export_jsonl, to_fhir_observation, write_review
from sdk.clinician.store import Store
from sdk.demo.broker import LocalBroker as Broker
from sdk.demo.broker import wait_until
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import decode_array, to_bytes
from sdk.stream.publisher import Publisher

POSTGRES = os.environ.get("HEARTSIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url():
    """A store URL whose tables live in a schema of this test's own, dropped afterwards."""
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES} (set HEARTSIGHT_TEST_POSTGRES): "
                    f"{str(exc).splitlines()[0]}")
    schema = f"heartsight_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


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
        assert counts == {"stored": 1, "duplicates": 1, "dead_letters": 4}
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
    acl.write_text("user clinic\ntopic read heartsight/v1/+/+/alerts\n\npattern write heartsight/v1/+/%u/#\n")
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
            assert honest.flush(DEADLINE_S) == 0
            honest.close()
            assert wait_until(lambda: listener.counts["stored"] == 1 and listener.counts["dead_letters"] == 1,
                              DEADLINE_S)
            assert listener.stop() == {"stored": 1, "duplicates": 0, "dead_letters": 1}
            assert store.devices() == ["dev-a"] and store.alerts("dev-b") == []
            assert "device dev-b but came on heartsight/v1/s1/dev-a/alerts" in store.dead_letters()[0]["reason"]
    finally:
        broker.stop()


def test_shared_subscription_splits_alerts_and_postgres_stores_each_once(any_broker, postgres_url, tmp_path):
    broker, config = any_broker, BrokerConfig(any_broker.url)
    alerts = [sample_alert(device=f"dev-{i % 3}", i=i) for i in range(20)]
    with Store(postgres_url) as first_store, Store(postgres_url) as second_store:
        listeners = [Listener(config, s, shared_group="clinic") for s in (first_store, second_store)]
        for listener in listeners:
            listener.start(DEADLINE_S)
        for device in ("dev-0", "dev-1", "dev-2"):
            with Publisher(config, device, "s1", outbox_path=tmp_path / f"{device}.sqlite") as publisher:
                for alert in alerts:
                    if alert["device"] == device:
                        publisher.publish(alert)
                assert publisher.flush(DEADLINE_S) == 0
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
        Listener(config, store, client_id="clinic-2").start(DEADLINE_S)  # a persistent session, then away
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
