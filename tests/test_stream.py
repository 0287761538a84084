"""Alert wire format, ids, outbox and publisher, against real Mosquitto brokers each test starts and stops (no mocks)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import DEADLINE_S, needs_mosquitto, sample_alert
from sdk.clinician.listener import Listener
from sdk.clinician.store import Store
from sdk.demo.broker import LocalBroker as Broker
from sdk.demo.broker import free_port, wait_until
from sdk.errors import HeartSightError
from sdk.stream.acks import ack_bytes, read_ack
from sdk.stream.mqtt import BrokerConfig, Connection
from sdk.stream.outbox import Backlog, Outbox
from sdk.stream.payload import decode_array, encode_array, from_bytes, to_bytes, validate
from sdk.stream.publisher import Publisher
from sdk.stream.topics import acks_topic, alerts_filter, alerts_topic, sender, status_topic

REPO = Path(__file__).resolve().parents[1]


class Collector:
    """A plain MQTT 5 subscriber with a persistent session, recording every message it gets."""

    def __init__(self, port: int, topic: str = "heartsight/v1/#"):
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{os.urandom(6).hex()}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda client, userdata, flags, rc, props: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: setattr(self, "subscribed", True)
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)
        self.subscribed = False
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        self.client.connect_async("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert wait_until(lambda: self.subscribed, DEADLINE_S)

    def alert_ids(self) -> list[str]:
        return [json.loads(m.payload)["id"] for m in self.messages if m.topic.endswith("/alerts")]

    def statuses(self) -> list[str]:
        return [json.loads(m.payload)["state"] for m in self.messages if m.topic.endswith("/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- wire format ---------------------------------------------------------------------------------------------------

def test_arrays_are_int16_little_endian_base64_in_real_units():
    encoded = encode_array(np.array([1.0, -0.002, 0.0304]), 0.001)
    assert encoded["encoding"] == "base64-int16-le"
    assert base64.b64decode(encoded["data"]) == struct.pack("<3h", 1000, -2, 30)
    assert decode_array(encoded) == pytest.approx([1.0, -0.002, 0.030])


def test_encoding_refuses_what_int16_cannot_hold():
    with pytest.raises(HeartSightError, match="do not fit int16"):
        encode_array(np.array([40.0]), 0.001)
    with pytest.raises(HeartSightError, match="NaN"):
        encode_array(np.array([0.0, np.nan]), 0.001)


def test_an_alert_encodes_to_a_valid_wire_dict_that_roundtrips():
    alert = sample_alert()
    validate(alert)
    assert alert["time"] == "2024-05-01T12:00:00.000Z"
    assert from_bytes(to_bytes(alert)) == alert
    t = np.arange(360) / 360
    expected = np.sin(2 * np.pi * 1.2 * t) + 0.2 * np.sin(2 * np.pi * 17 * t)
    assert np.max(np.abs(decode_array(alert["signal"]) - expected)) <= alert["signal"]["scale"] / 2 + 1e-12
    assert len(decode_array(alert["trace"])) == 360


@pytest.mark.parametrize("change, where", [
    (lambda a: a.update(confidence=1.5), "at confidence"),
    (lambda a: a.pop("trace"), "'trace' is a required property"),
    (lambda a: a.update(extra=1), "Additional properties"),
    (lambda a: a.update(type="panic"), "at type"),
    (lambda a: a.update(device="dev/b"), "at device"),
    (lambda a: a.update(time="2024-05-01 12:00:00"), "at time"),
    (lambda a: a.update(time="2024-13-01T12:00:00Z"), "not a real date"),
    (lambda a: a["model"].update(backend="tflite"), "at model.backend"),
    (lambda a: a["signal"].update(data="!!!!"), "at signal.data"),
    (lambda a: a["trace"].update(data=a["trace"]["data"][:-8]), "at trace.data"),
])
def test_validate_names_the_first_violation(change, where):
    alert = sample_alert()
    change(alert)
    with pytest.raises(HeartSightError, match="alert is invalid") as error:
        validate(alert)
    assert where in str(error.value) and "\n" not in str(error.value)


def test_from_bytes_rejects_what_is_not_a_json_object():
    for raw in (b"{not json", b"\xff\xfe", b"[1, 2]", b'{"confidence": NaN}'):
        with pytest.raises(HeartSightError):
            from_bytes(raw)


def test_alert_ids_are_uuids_made_from_what_the_alert_is_about():
    alert = sample_alert()
    assert uuid.UUID(alert["id"]).version == 8 and uuid.UUID(alert["id"]).hex == alert["id"]
    assert sample_alert() == alert  # the same event again: the same id, so the store keeps one
    others = [sample_alert(device="dev-b"), sample_alert(site="s2"), sample_alert(stream="another recording"),
              sample_alert(sample_index=alert["sample_index"] + 1), sample_alert(type="ventricular_run"),
              sample_alert(model={**alert["model"], "sha256": "cd" * 32})]
    assert len({alert["id"]} | {other["id"] for other in others}) == 1 + len(others)
    assert sample_alert(confidence=0.5, label="S", details={})["id"] == alert["id"]  # what is said about the event


def test_an_acknowledgement_lists_alert_ids_and_anything_else_is_refused():
    ids = [sample_alert(i=i)["id"] for i in range(3)]
    assert read_ack(ack_bytes(ids)) == ids
    for raw in (b"{", b"[]", b'{"schema": "heartsight.ack.v1"}', b'{"schema": "x", "ids": []}',
                b'{"schema": "heartsight.ack.v1", "ids": ["not an id"]}', b"\xff"):
        with pytest.raises(HeartSightError, match="acknowledgement is not"):
            read_ack(raw)


def test_one_topic_layout_for_the_publisher_and_the_listener():
    assert alerts_topic("s1", "dev-a") == "heartsight/v1/s1/dev-a/alerts"
    assert status_topic("s1", "dev-a") == "heartsight/v1/s1/dev-a/status"
    assert acks_topic("s1", "dev-a") == "heartsight/v1/s1/dev-a/acks"
    assert sender(alerts_topic("s1", "dev-a")) == ("s1", "dev-a")
    assert sender(status_topic("s1", "dev-a")) is None and sender("heartsight/v1/s1/dev-a/alerts/x") is None
    assert mqtt.topic_matches_sub(alerts_filter(), alerts_topic("s1", "dev-a"))
    assert not mqtt.topic_matches_sub(alerts_filter(), status_topic("s1", "dev-a"))
    assert alerts_filter("clinic") == f"$share/clinic/{alerts_filter()}"
    with pytest.raises(HeartSightError, match="shared group 'a/b'"):
        alerts_filter("a/b")


# --- outbox --------------------------------------------------------------------------------------------------------

def test_outbox_keeps_alerts_until_the_clinic_acknowledges_them_in_order_across_restarts(tmp_path):
    alerts = [sample_alert(i=i) for i in range(4)]
    outbox = Outbox(tmp_path / "outbox.sqlite")
    assert [outbox.put(a) for a in alerts] == [True] * 4
    assert outbox.put(alerts[1]) is False
    outbox.mark_sent(alerts[0]["id"])
    outbox.mark_sent(alerts[1]["id"])
    assert outbox.backlog() == Backlog(awaiting_broker=2, awaiting_clinic=2)  # the broker's PUBACK is not enough
    assert outbox.acknowledge([alerts[0]["id"], alerts[2]["id"], "f" * 32]) == 2  # unknown ids are ignored
    assert outbox.put(alerts[0]) is False  # acknowledged ids are remembered, so a re-put does not resend
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite")
    assert reopened.pending_ids() == [alerts[1]["id"], alerts[3]["id"]]
    assert reopened.pending()[0] == alerts[1] and json.loads(reopened.payload(alerts[3]["id"])) == alerts[3]
    assert reopened.backlog() == Backlog(awaiting_broker=1, awaiting_clinic=1) and len(reopened) == 2
    reopened.close()


def test_an_outbox_from_before_end_to_end_acknowledgement_still_opens(tmp_path):
    """Its rows acknowledged by the broker stay done; the others wait for the clinic like new ones."""
    path = tmp_path / "outbox.sqlite"
    with closing(sqlite3.connect(path)) as old:
        old.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
                    "payload TEXT, queued_at TEXT NOT NULL, acked_at TEXT)")
        old.executemany("INSERT INTO outbox (id, payload, queued_at, acked_at) VALUES (?, ?, ?, ?)",
                        [(sample_alert(i=0)["id"], None, "2099-01-01", "2099-01-01"),
                         (sample_alert(i=1)["id"], to_bytes(sample_alert(i=1)).decode(), "2099-01-01", None)])
        old.commit()
    outbox = Outbox(path)
    assert outbox.pending() == [sample_alert(i=1)] and outbox.backlog() == Backlog(1, 0)
    assert outbox.put(sample_alert(i=0)) is False
    outbox.close()


# --- publisher -----------------------------------------------------------------------------------------------------

def test_publisher_delivers_in_order_with_mqtt5_properties_and_retained_status(any_broker, tmp_path):
    broker = any_broker
    collector = Collector(broker.port)
    store = Store(tmp_path / "store.sqlite")
    listener = Listener(BrokerConfig(broker.url), store)
    listener.start(DEADLINE_S)
    alerts = [sample_alert(i=i) for i in range(5)]
    publisher = Publisher(BrokerConfig(broker.url), "dev-a", "s1", outbox_path=tmp_path / "outbox.sqlite")
    for alert in alerts:
        publisher.publish(alert)
    publisher.publish(alerts[0])  # a duplicate id is neither queued nor sent again
    assert publisher.flush(DEADLINE_S) == Backlog(0, 0)  # the clinic acknowledged each: the outbox is empty
    publisher.close()
    counts = listener.stop()
    assert counts.pop("statuses") >= 1 and store.device_state("dev-a")[0]["state"] in ("online", "offline")
    assert counts == {"stored": 5, "duplicates": 0, "dead_letters": 0}
    store.close()
    assert wait_until(lambda: len(collector.alert_ids()) == 5 and collector.statuses()[-1:] == ["offline"],
                      DEADLINE_S), \
        (collector.alert_ids(), collector.statuses())
    assert collector.alert_ids() == [a["id"] for a in alerts]
    message = next(m for m in collector.messages if m.topic == "heartsight/v1/s1/dev-a/alerts")
    assert message.qos == 1
    assert message.properties.ContentType == "application/json"
    assert message.properties.PayloadFormatIndicator == 1
    assert message.properties.UserProperty == [("schema", "heartsight.alert.v1")]
    assert collector.statuses() == ["online", "offline"]
    acks = [read_ack(m.payload) for m in collector.messages if m.topic == "heartsight/v1/s1/dev-a/acks"]
    assert sorted(sum(acks, [])) == sorted(a["id"] for a in alerts)
    collector.close()
    late = Collector(broker.port, "heartsight/v1/s1/dev-a/status")  # retained: a newcomer sees the last state
    assert wait_until(lambda: late.statuses() == ["offline"], DEADLINE_S)
    late.close()


@pytest.fixture
def restartable_broker(tmp_path):
    """A broker the test stops and starts itself; stopped at the end whatever happens."""
    b = Broker(tmp_path)
    yield b
    b.stop()


@needs_mosquitto
def test_alerts_survive_broker_outages_and_publisher_restarts_in_order(restartable_broker, tmp_path):
    broker = restartable_broker
    broker.start()
    collector = Collector(broker.port)  # persistent session: the broker queues for it across its own restart
    store = Store(tmp_path / "store.sqlite")
    listener = Listener(BrokerConfig(broker.url), store)  # persistent too; it acknowledges what it stores
    listener.start(DEADLINE_S)
    outbox = tmp_path / "outbox.sqlite"
    alerts = [sample_alert(i=i) for i in range(30)]  # more than paho's 20 in flight
    first = Publisher(BrokerConfig(broker.url), "dev-a", "s1", outbox_path=outbox, reconnect_max_s=1)
    first.publish(alerts[0])
    assert first.flush(DEADLINE_S) == Backlog(0, 0)
    broker.stop()
    for alert in alerts[1:3]:
        first.publish(alert)  # broker down: no error, the alert waits on disk
    assert first.flush(0.3) == Backlog(awaiting_broker=2, awaiting_clinic=0)
    first.close()
    # A device process that queues one more alert and then dies without closing anything.
    crashed = subprocess.run(
        [sys.executable, "-c", "import json, os, signal, sys; from sdk.stream.publisher import Publisher; "
         "from sdk.stream.mqtt import BrokerConfig; "
         f"p = Publisher(BrokerConfig({broker.url!r}), 'dev-a', 's1', outbox_path={str(outbox)!r}); "
         "p.publish(json.loads(sys.stdin.read())); os.kill(os.getpid(), signal.SIGKILL)"],
        input=json.dumps(alerts[3]), text=True, cwd=REPO, capture_output=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    broker.start()
    restarted = Publisher(BrokerConfig(broker.url), "dev-a", "s1", outbox_path=outbox, reconnect_max_s=1)
    restarted.publish(alerts[4])
    assert restarted.flush(DEADLINE_S) == Backlog(0, 0)
    broker.stop()  # an outage while connected: what is published meanwhile goes out on reconnect
    for alert in alerts[5:]:
        restarted.publish(alert)
    broker.start()
    assert restarted.flush(DEADLINE_S) == Backlog(0, 0)
    restarted.close()
    listener.stop()
    assert sorted(a["id"] for a in store.alerts()) == sorted(a["id"] for a in alerts)
    store.close()
    assert wait_until(lambda: len(set(collector.alert_ids())) == len(alerts), DEADLINE_S), collector.alert_ids()
    received = list(dict.fromkeys(collector.alert_ids()))  # at least once: drop redeliveries, keep first arrivals
    assert received == [a["id"] for a in alerts], [[a["id"] for a in alerts].index(i) for i in collector.alert_ids()]
    statuses = [json.loads(m.payload) for m in collector.messages if m.topic.endswith("/status")]
    backlogs = [s["queued"] for s in statuses if s["state"] == "online"]
    # each time the device came online it said what it still had to send: after the first outage and the crash,
    # their three alerts (four if alert 4 was queued before the connection was up); after the second, 25
    assert {3, 4} & set(backlogs) and backlogs[-1] == 25, backlogs
    collector.close()


def test_an_alert_the_clinic_does_not_acknowledge_is_published_again_until_it_does(any_broker, tmp_path):
    broker = any_broker
    collector = Collector(broker.port, "heartsight/v1/s1/dev-a/alerts")  # not a clinic: it acknowledges nothing
    alert = sample_alert()
    publisher = Publisher(BrokerConfig(broker.url), "dev-a", "s1", outbox_path=tmp_path / "o.sqlite",
                          ack_timeout_s=0.2)
    publisher.publish(alert)
    assert wait_until(lambda: collector.alert_ids().count(alert["id"]) >= 3, DEADLINE_S), collector.alert_ids()
    assert publisher.backlog() == Backlog(awaiting_broker=0, awaiting_clinic=1)
    assert "1 alert(s) await the clinic's acknowledgement" in publisher.status()
    with Store(tmp_path / "store.sqlite") as store:
        listener = Listener(BrokerConfig(broker.url), store)
        listener.start(DEADLINE_S)
        assert publisher.flush(DEADLINE_S) == Backlog(0, 0)  # the next copy reached the clinic, which acknowledged it
        listener.stop()
        assert store.alerts() == [alert]
    publisher.close()
    collector.close()


def test_a_client_whose_session_another_takes_over_stops_and_says_why():
    """Two clients with one id (two listeners left at the default) would take the session from each other for ever;
    a broker that says why it disconnects (MQTT 5 reason 0x8E, as the Python broker does; Mosquitto 2.0 just closes
    the connection) stops the first."""
    from sdk.demo.python_broker import PythonBroker

    with PythonBroker() as broker:
        first, second = (Connection(BrokerConfig(broker.url), "heartsight-listener", session_expiry_s=60)
                         for _ in range(2))
        first.start()
        assert first.wait_connected(DEADLINE_S)
        second.start()
        assert wait_until(lambda: first.error is not None, DEADLINE_S)
        assert "another client connected" in str(first.error) and "its own client id" in str(first.error)
        assert second.wait_connected(DEADLINE_S) and second.error is None
        for connection in (first, second):
            connection.stop()


def test_last_will_marks_a_killed_device_offline(any_broker, tmp_path):
    broker = any_broker
    collector = Collector(broker.port, "heartsight/v1/s1/dev-a/status")
    device = subprocess.Popen(
        [sys.executable, "-c", "import time; from sdk.stream.publisher import Publisher; "
         "from sdk.stream.mqtt import BrokerConfig; "
         f"p = Publisher(BrokerConfig({broker.url!r}), 'dev-a', 's1', "
         f"outbox_path={str(tmp_path / 'o.sqlite')!r}); "
         "time.sleep(60)"], cwd=REPO)
    try:
        assert wait_until(lambda: collector.statuses() == ["online"], DEADLINE_S), collector.statuses()
    finally:
        device.kill()  # no DISCONNECT packet: the broker publishes the will
        device.wait(DEADLINE_S)
    assert wait_until(lambda: collector.statuses() == ["online", "offline"], DEADLINE_S), collector.statuses()
    collector.close()


def test_unreachable_broker_does_not_raise_and_keeps_the_alert(tmp_path):
    publisher = Publisher(BrokerConfig(f"mqtt://127.0.0.1:{free_port()}"), "dev-a", "s1",
                          outbox_path=tmp_path / "o.sqlite")
    publisher.publish(sample_alert())
    assert publisher.flush(0.5) == Backlog(awaiting_broker=1, awaiting_clinic=0)
    assert "refused" in publisher.last_error.lower()
    publisher.close()
    assert len(Outbox(tmp_path / "o.sqlite").pending()) == 1


def test_a_broker_config_is_checked_when_it_is_made(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("a certificate")
    assert (BrokerConfig("mqtt://broker.example").port, BrokerConfig("mqtts://localhost:8884", tls_ca=ca).tls) == \
        (1883, True)
    for config, message in (
        (dict(url="http://127.0.0.1:1883"), "not mqtt://"),
        (dict(url="mqtt://dev-a:secret@127.0.0.1"), "not in the URL"),
        (dict(url="mqtt://127.0.0.1", password="secret"), "password was given without a username"),
        (dict(url="mqtt://127.0.0.1", tls_ca=ca), "not TLS: use an mqtts:// URL"),
        (dict(url="mqtts://127.0.0.1", tls_ca=tmp_path / "missing.crt"), "tls_ca file .*missing.crt does not exist"),
        (dict(url="mqtts://127.0.0.1", tls_cert=ca), "needs both tls_cert and tls_key"),
    ):
        with pytest.raises(HeartSightError, match=message):
            BrokerConfig(**config)


def test_publisher_refuses_bad_input(tmp_path):
    with pytest.raises(HeartSightError, match="not a valid name"):
        Publisher(BrokerConfig("mqtt://127.0.0.1:1"), "dev/a", outbox_path=tmp_path / "o.sqlite")
    publisher = Publisher(BrokerConfig(f"mqtt://127.0.0.1:{free_port()}"), "dev-a", "s1",
                          outbox_path=tmp_path / "o.sqlite")
    with pytest.raises(HeartSightError, match="one Publisher per device"):
        publisher.publish(sample_alert(device="dev-b"))
    assert publisher.backlog() == Backlog(0, 0)
    publisher.close()


@needs_mosquitto
def test_bad_credentials_give_a_clear_error(tmp_path):
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(tmp_path / "passwords"), "dev-a", "right"], check=True)
    broker = Broker(tmp_path, f"allow_anonymous false\npassword_file {tmp_path / 'passwords'}")
    broker.start()
    try:
        publisher = Publisher(BrokerConfig(broker.url, "dev-a", "wrong"), "dev-a", "s1",
                              outbox_path=tmp_path / "o.sqlite")
        with pytest.raises(HeartSightError, match="refused the connection .*username, password"):
            publisher.wait_connected(DEADLINE_S)
        with pytest.raises(HeartSightError, match="refused the connection"):
            publisher.publish(sample_alert())
        with pytest.raises(HeartSightError, match="refused the connection"):
            publisher.flush(1)
        assert publisher.backlog() == Backlog(1, 0)  # kept for when the credentials are fixed
        publisher.close()
        good = Publisher(BrokerConfig(broker.url, "dev-a", "right"), "dev-a", "s1", outbox_path=tmp_path / "o.sqlite")
        assert wait_until(lambda: good.backlog() == Backlog(0, 1), DEADLINE_S)  # sent; no clinic here to acknowledge
        good.close()
    finally:
        broker.stop()


def make_tls_files(directory: Path, name: str = "ca") -> dict[str, Path]:
    """A throw-away CA and a server certificate for localhost and 127.0.0.1, made with openssl."""
    files = {k: directory / f"{name}-{k}" for k in ("ca.crt", "ca.key", "server.crt", "server.key", "server.csr")}
    ext = directory / f"{name}-san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["openssl", "req", "-x509", *ec, "-keyout", files["ca.key"], "-out", files["ca.crt"], "-days", "2",
         "-subj", f"/CN=HeartSight test {name}"],
        ["openssl", "req", *ec, "-keyout", files["server.key"], "-out", files["server.csr"], "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", files["server.csr"], "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
         "-CAcreateserial", "-out", files["server.crt"], "-days", "2", "-extfile", ext],
    ):
        subprocess.run([str(c) for c in command], check=True, capture_output=True)
    return files


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@needs_mosquitto
def test_tls_publish_verifies_the_broker(tmp_path):
    tls = make_tls_files(tmp_path)
    other = make_tls_files(tmp_path, "other")
    broker = Broker(tmp_path, f"allow_anonymous true\ncafile {tls['ca.crt']}\ncertfile {tls['server.crt']}\n"
                              f"keyfile {tls['server.key']}", tls=True)
    broker.start()
    try:
        publisher = Publisher(BrokerConfig(broker.url, tls_ca=tls["ca.crt"]), "dev-a", "s1",
                              outbox_path=tmp_path / "o.sqlite")
        publisher.publish(sample_alert())
        assert wait_until(lambda: publisher.backlog() == Backlog(0, 1), DEADLINE_S)  # sent; no clinic to acknowledge
        publisher.close()
        untrusted = Publisher(BrokerConfig(broker.url, tls_ca=other["ca.crt"]), "dev-a", "s1",
                              outbox_path=tmp_path / "o2.sqlite")
        with pytest.raises(HeartSightError, match="does not verify"):
            untrusted.wait_connected(DEADLINE_S)
        untrusted.close()
    finally:
        broker.stop()


def test_simulated_fleet_devices_each_deliver_every_alert_on_their_own_topic(broker, tmp_path):
    """The fleet benchmark's load: every simulated device's alerts are acknowledged and stored once, as its own."""
    from sdk.clinician.listener import Listener
    from sdk.clinician.store import Store
    from benchmarks.fleet import run_fleet

    store = Store(tmp_path / "fleet.sqlite")
    listener = Listener(BrokerConfig(broker.url), store)
    listener.start(DEADLINE_S)
    result = run_fleet(BrokerConfig(broker.url), devices=30, seconds=2, processes=2)
    assert result["sent"] == result["acked"] == 60 and result["refused"] == 0
    assert wait_until(lambda: listener.counts["stored"] == 60, DEADLINE_S)
    counts = listener.stop()
    assert counts == {"stored": 60, "duplicates": 0, "dead_letters": 0, "statuses": 0}  # the fleet sends no status
    assert store.devices() == [f"dev-{d:04d}" for d in range(30)]
    assert all(len(store.alerts(device)) == 2 for device in store.devices())
    store.close()
