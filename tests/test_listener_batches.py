"""The listener stores a network round's alerts in one transaction (Store.add_many), and several listener processes
share one PostgreSQL store: real Mosquitto, real SQLite and PostgreSQL. (A listener killed mid-batch:
test_delivery_faults.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import DEADLINE_S, postgres_schema, sample_alert
from sdk.clinician.listener import Listener
from sdk.clinician.store import _ROWS_PER_INSERT, Store, UnstorableAlert
from sdk.demo.broker import wait_until
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import to_bytes
from sdk.stream.topics import alerts_topic

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def store_url(kind: str, tmp_path: Path):
    if kind == "postgresql":
        with postgres_schema() as url:
            yield url
    else:
        yield str(tmp_path / "store.sqlite")


@contextmanager
def device_client(broker):
    """A bare MQTT client publishing as devices (QoS 1), without an outbox: whatever the broker acknowledged must
    reach the store through the broker alone."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-devices", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


def publish_all(client, messages: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(DEADLINE_S)


def alert_message(alert: dict) -> tuple[str, bytes]:
    return alerts_topic(alert["site"], alert["device"]), to_bytes(alert)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_batch_is_one_transaction_and_stores_each_alert_once(kind, tmp_path):
    alerts = [sample_alert(i=i) for i in range(4)]
    with store_url(kind, tmp_path) as url, Store(url) as store:
        # a duplicate within the batch is stored once, the first time
        assert store.add_many([alerts[0], alerts[1], alerts[0], alerts[2]]) == [True, True, False, True]
        assert len({received for _, received in store.arrivals()}) == 1  # one transaction, one commit time
        assert store.add_many([alerts[1], alerts[3]]) == [False, True]  # a redelivery is not stored again
        assert store.add(alerts[3]) is False and store.add_many([]) == []
        assert sorted(a["id"] for a in store.alerts()) == sorted(a["id"] for a in alerts)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_batch_larger_than_one_insert_statement_is_still_one_transaction(kind, tmp_path):
    """Store.add_many splits its rows into INSERTs of at most _ROWS_PER_INSERT; they commit together."""
    alerts = [sample_alert(f"dev-{i % 7}", i=i) for i in range(_ROWS_PER_INSERT + 3)]
    with store_url(kind, tmp_path) as url, Store(url) as store:
        assert store.add_many(alerts[:2]) == [True, True]
        assert store.add_many(alerts + alerts[-1:]) == [False, False] + [True] * (len(alerts) - 2) + [False]
        assert store.count() == len(alerts)
        assert len({received for _, received in store.arrivals()[2:]}) == 1
        assert store.alerts("dev-3") == sorted((a for a in alerts if a["device"] == "dev-3"),
                                               key=lambda a: (a["time"], a["id"]))


def test_postgresql_compresses_the_payloads_with_lz4_where_it_can():
    """lz4 instead of PostgreSQL's default pglz: a third less of the server's CPU per alert."""
    with postgres_schema() as url, Store(url) as store:
        has_lz4 = store._query("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                               "WHERE name = 'default_toast_compression'")[0][0]
        if not has_lz4:
            pytest.skip("this PostgreSQL was built without lz4")
        store.add(sample_alert())
        assert store._query("SELECT pg_column_compression(payload) FROM alerts") == [("lz4",)]
        Store(url).close()  # opening it again changes nothing
        assert store._query("SELECT attcompression FROM pg_attribute WHERE attrelid = 'alerts'::regclass "
                            "AND attname = 'payload'") == [("l",)]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_batch_with_an_alert_the_database_refuses_stores_none(kind, tmp_path):
    refused = [{**sample_alert(i=1), "confidence": float("nan")}]
    if kind == "postgresql":
        refused.append({**sample_alert(i=2), "label": "V\x00"})  # PostgreSQL text cannot hold U+0000
    with store_url(kind, tmp_path) as url, Store(url) as store:
        for bad in refused:
            with pytest.raises(UnstorableAlert, match="the store refuses this alert"):
                store.add_many([sample_alert(i=0), bad])
            assert store.count() == 0
        assert store.add_many([sample_alert(i=0)]) == [True]


def test_a_backlog_is_stored_in_batches_and_a_bad_payload_is_dead_lettered_without_failing_its_batch(broker, tmp_path):
    """The listener's session queues alerts while it is away; back, it gets them in a burst: many per transaction,
    each once (every alert is sent twice), and the two bad payloads among them go to dead letters with the reason."""
    config = BrokerConfig(broker.url)
    alerts = [sample_alert(f"dev-{i % 3}", i=i) for i in range(300)]
    messages = [alert_message(a) for a in alerts]
    messages[100:100] = [(alerts_topic("s1", "dev-0"), b"{not json"),
                         alert_message({**sample_alert("dev-1", i=1000), "label": 7})]
    with Store(tmp_path / "store.sqlite") as store:
        away = Listener(config, store, client_id="batching")
        away.start(DEADLINE_S)
        away.stop()
        with device_client(broker) as devices:
            publish_all(devices, messages + [alert_message(a) for a in alerts])
        listener = Listener(config, store, client_id="batching")
        listener.start(DEADLINE_S)
        assert wait_until(lambda: sum(listener.counts.values()) == len(messages) + len(alerts), DEADLINE_S), \
            listener.counts
        counts = listener.stop()
        assert counts == {"stored": 300, "duplicates": 300, "dead_letters": 2, "statuses": 0}
        assert sorted(a["id"] for a in store.alerts()) == sorted(a["id"] for a in alerts)
        reasons = [letter["reason"] for letter in store.dead_letters()]
        assert len(reasons) == 2 and "label" in reasons[1], reasons
        commits = {received for _, received in store.arrivals()}
        assert len(commits) < len(alerts) / 2, f"{len(commits)} commits for {len(alerts)} alerts"


def listen_processes(*args, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HEARTSIGHT_DATA"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sdk.cli", "clinician", "listen", *map(str, args)], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=out, text=True)


def test_listener_processes_of_a_shared_group_store_each_alert_once_in_postgresql(broker, tmp_path):
    """`--processes 2`: two listener processes split the alerts; each alert, sent twice, is stored once."""
    with postgres_schema() as url, Store(url) as store:
        log = tmp_path / "listeners.log"
        listening = listen_processes("--broker", broker.url, "--db", url, "--shared", "g", "--processes", 2, log=log)
        try:
            probe = alert_message(sample_alert("probe", i=0))
            with device_client(broker) as devices:
                # a shared subscription keeps nothing for a group without members: publish until one has it
                assert wait_until(lambda: publish_all(devices, [probe]) or store.count(device="probe") == 1,
                                  DEADLINE_S), log.read_text()
                alerts = [sample_alert(f"dev-{i % 4}", i=i) for i in range(400)]
                publish_all(devices, [alert_message(a) for a in alerts] * 2)
            assert wait_until(lambda: store.count() == len(alerts) + 1, DEADLINE_S), log.read_text()
        finally:
            listening.send_signal(signal.SIGTERM)
            out, _ = listening.communicate(timeout=DEADLINE_S)
        assert listening.returncode == 0, log.read_text()
        counts = json.loads(out)
        assert counts["stored"] == len(alerts) + 1 and counts["dead_letters"] == 0
        assert counts["duplicates"] >= len(alerts)  # the second copies, and the probe's repeats
        assert sorted(a["id"] for a in store.alerts() if a["device"] != "probe") == sorted(a["id"] for a in alerts)


def test_listener_processes_need_a_shared_group(heartsight_main, tmp_path):
    result = heartsight_main("clinician", "listen", "--broker", "mqtt://127.0.0.1:1", "--db", tmp_path / "s.sqlite",
                             "--processes", 2)
    assert result.returncode == 2 and "--shared GROUP" in result.stderr
