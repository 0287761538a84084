"""The in-process Python broker (the demo's broker without Mosquitto), spoken to by paho and by raw sockets.

What HeartSight relies on is also run against Mosquitto by the tests that use the `any_broker` fixture; these
cover what only this broker has to get right on its own: sessions, retained messages, wildcards, bad clients.
"""

import os
import socket

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import DEADLINE_S
from sdk.demo.broker import wait_until
from sdk.demo.python_broker import PythonBroker


class Client:
    """A paho MQTT 5 client that records what it receives and whether the broker kept its session."""

    def __init__(self, broker: PythonBroker, client_id: str | None = None, session_expiry_s: int | None = None,
                 subscribe: str | None = None, qos: int = 1):
        self.messages: list[mqtt.MQTTMessage] = []
        self.session_present: bool | None = None
        self.subscribed = subscribe is None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{os.urandom(4).hex()}",
                                  protocol=mqtt.MQTTv5)

        def on_connect(client, userdata, flags, reason_code, properties):
            self.session_present = flags.session_present
            if subscribe:
                client.subscribe(subscribe, qos=qos)
        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *args: setattr(self, "subscribed", True)
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)
        props = Properties(PacketTypes.CONNECT)
        if session_expiry_s is not None:
            props.SessionExpiryInterval = session_expiry_s
        self.client.connect("127.0.0.1", broker.port, clean_start=session_expiry_s is None, properties=props)
        self.client.loop_start()
        assert wait_until(lambda: self.session_present is not None and self.subscribed, DEADLINE_S)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        sent = self.client.publish(topic, payload, qos=qos, retain=retain)
        sent.wait_for_publish(DEADLINE_S)  # returns silently on timeout
        assert sent.is_published(), f"{topic} not acknowledged within {DEADLINE_S:g} s"

    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_persistent_session_keeps_qos1_messages_for_its_absent_subscriber():
    with PythonBroker() as broker:
        listener = Client(broker, "listener", session_expiry_s=600, subscribe="heartsight/v1/+/+/alerts")
        assert listener.session_present is False
        listener.close()
        device = Client(broker)
        for i in range(3):
            device.publish("heartsight/v1/s1/dev-a/alerts", b"alert %d" % i)
        back = Client(broker, "listener", session_expiry_s=600)
        assert back.session_present is True
        assert wait_until(lambda: back.payloads() == [b"alert 0", b"alert 1", b"alert 2"], DEADLINE_S), back.payloads()
        fresh = Client(broker, "listener")  # a clean start discards the session
        assert fresh.session_present is False
        for client in (device, back, fresh):
            client.close()


def test_retained_messages_reach_later_subscribers_and_an_empty_one_clears_them():
    with PythonBroker() as broker:
        device = Client(broker)
        device.publish("heartsight/v1/s1/dev-a/status", b"online", retain=True)
        device.publish("heartsight/v1/s1/dev-b/status", b"offline", retain=True)
        late = Client(broker, subscribe="heartsight/v1/s1/+/status")
        assert wait_until(lambda: sorted(late.payloads()) == [b"offline", b"online"], DEADLINE_S)
        assert all(m.retain for m in late.messages)
        device.publish("heartsight/v1/s1/dev-a/status", b"", retain=True)
        later = Client(broker, subscribe="heartsight/v1/#")
        assert wait_until(lambda: later.payloads() == [b"offline"], DEADLINE_S), later.payloads()
        for client in (device, late, later):
            client.close()


def test_wildcards_match_levels_and_a_subscriber_gets_one_copy_per_message():
    with PythonBroker() as broker:
        one_level = Client(broker, subscribe="heartsight/v1/+/dev-a/alerts")
        everything = Client(broker, subscribe="heartsight/#")
        overlapping = Client(broker, subscribe="heartsight/v1/s1/dev-a/alerts")
        overlapping.subscribed = False
        overlapping.client.subscribe("heartsight/v1/#", qos=1)
        assert wait_until(lambda: overlapping.subscribed, DEADLINE_S)
        device = Client(broker)
        device.publish("heartsight/v1/s1/dev-a/alerts", b"a")
        device.publish("heartsight/v1/s1/dev-b/alerts", b"b")
        assert wait_until(lambda: everything.payloads() == [b"a", b"b"], DEADLINE_S)
        assert wait_until(lambda: overlapping.payloads() == [b"a", b"b"], DEADLINE_S), overlapping.payloads()
        assert one_level.payloads() == [b"a"]
        for client in (one_level, everything, overlapping, device):
            client.close()


def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes and end the stream; everything the broker answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), DEADLINE_S) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def test_bad_clients_are_disconnected_with_a_reason_and_the_broker_keeps_serving():
    with PythonBroker() as broker:
        watcher = Client(broker, subscribe="#")
        # an MQTT 3.1.1 CONNECT: the 3.1.1 CONNACK "unacceptable protocol version"
        connect_311 = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id"
        assert _raw_exchange(broker.port, connect_311) == b"\x20\x02\x00\x01"
        # an MQTT 5 CONNECT, then a QoS 2 PUBLISH after the CONNACK said Maximum QoS 1: DISCONNECT 0x9B
        connect_5 = b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02id"
        qos2 = b"\x34\x08\x00\x01t\x00\x01\x00hi"
        answer = _raw_exchange(broker.port, connect_5 + qos2)
        assert answer.startswith(b"\x20") and answer.endswith(b"\xe0\x02\x9b\x00")
        # a PUBLISH whose topic length runs past the packet: DISCONNECT 0x81 (malformed)
        garbage = b"\x30\x03\x00\x09x"
        assert _raw_exchange(broker.port, connect_5 + garbage).endswith(b"\xe0\x02\x81\x00")
        assert _raw_exchange(broker.port, b"\x82\x00") == b"\xe0\x02\x81\x00"  # anything before CONNECT
        device = Client(broker)
        device.publish("heartsight/v1/s1/dev-a/alerts", b"still here")
        assert wait_until(lambda: watcher.payloads() == [b"still here"], DEADLINE_S), watcher.payloads()
        for client in (watcher, device):
            client.close()


CONNECT_5 = b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02fz"
PACKET_HEADS = st.sampled_from([0x10, 0x30, 0x32, 0x33, 0x34, 0x40, 0x82, 0xA2, 0xC0, 0xE0, 0xF0])


@pytest.fixture(scope="module")
def fuzzed_broker():
    with PythonBroker() as broker:
        yield broker


@settings(max_examples=150, deadline=None)
@given(packets=st.lists(st.tuples(PACKET_HEADS, st.binary(max_size=40)), max_size=4), tail=st.binary(max_size=20))
def test_random_packets_after_a_connect_never_stop_the_broker_serving_others(fuzzed_broker, packets, tail):
    data = CONNECT_5 + b"".join(bytes([head, len(body)]) + body for head, body in packets) + tail
    _raw_exchange(fuzzed_broker.port, data)
    # a well-behaved client still gets in
    with socket.create_connection(("127.0.0.1", fuzzed_broker.port), DEADLINE_S) as sock:
        sock.sendall(CONNECT_5.replace(b"fz", b"ok") + b"\xc0\x00")  # CONNECT, PINGREQ
        answer = b""
        while not answer.endswith(b"\xd0\x00"):
            chunk = sock.recv(4096)
            assert chunk, f"the broker closed a good connection after {data!r}"
            answer += chunk
    assert answer.startswith(b"\x20")
