"""`heartsight broker config` against a real Mosquitto started with the configuration it writes (TLS on, as by
default). Every attack on identity is tried by plain paho MQTT 5 clients and must fail: spoofed topics, a clinician
writing alerts, taking another client's id, joining the listeners' shared group, bad credentials, no CA; and
queued alerts must survive kill -9 of the broker.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import stat
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import ConfiguredMosquitto, eventually, has_dynamic_security_plugin
from sdk.demo.broker import free_port, mosquitto_binary
from sdk.errors import HeartSightError
from sdk.stream.broker_setup import parse_device, write_broker_config

needs_broker = pytest.mark.skipif(mosquitto_binary() is None or not has_dynamic_security_plugin()
                                  or shutil.which("openssl") is None, reason="needs mosquitto 2.0 with its dynamic security plugin, and openssl")

DEVICES = ["s1/dev-a", "s1/dev-b", "s2/dev-a"]
CLINICIANS = ["clinic", "clinic-2"]
NOT_AUTHORIZED = "Not authorized"


class Client:
    """A paho MQTT 5 client whose network thread (loop_start: the only thread that writes to the socket) never
    reconnects, so a kicked client stays kicked and shows it. It records the CONNACK, SUBACK and PUBACK reason
    codes, messages and disconnections."""

    def __init__(self, setup, username: str | None, password: str | None = None, client_id: str | None = None,
                 ca: Path | None | str = "default", clean_start: bool = True, session_expiry_s: int | None = None,
                 will: str | None = None):
        self.username = username
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password if password is not None else setup.passwords[username])
        if setup.tls:
            if ca == "default":
                ca = setup.ca
            self.client.tls_set(ca_certs=None if ca is None else str(ca))  # None: the system's CAs
        if will is not None:
            self.client.will_set(will, b'{"state": "offline"}', qos=1, retain=True)
        self.connack = None
        self.session_present = None
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects: list[str] = []
        self.subacks: dict[int, list[str]] = {}
        self.pubacks: dict[int, str] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.append(str(rc))
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.__setitem__(mid, [str(x) for x in codes])
        # PUBACK: "No matching subscribers" (0x10) is a success too.
        self.client.on_publish = lambda c, u, mid, rc, props: self.pubacks.__setitem__(
            mid, str(rc) if rc.is_failure else "Success")
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        props = Properties(PacketTypes.CONNECT)
        if session_expiry_s is not None:
            props.SessionExpiryInterval = session_expiry_s
        self.client.connect("localhost" if setup.tls else "127.0.0.1", setup.port, clean_start=clean_start,
                            properties=props)
        self.client.loop_start()
        assert eventually(lambda: self.connack is not None or self.disconnects), f"{username}: no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.session_present = flags.session_present
        self.connack = str(reason_code)

    @property
    def connected(self) -> bool:
        return self.connack == "Success" and not self.disconnects

    def subscribe(self, topic_filter: str) -> str:
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert eventually(lambda: mid in self.subacks), f"{self.username}: no SUBACK for {topic_filter}"
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> str:
        """The PUBACK's reason code (Mosquitto answers a denied MQTT 5 publish with 'Not authorized')."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert eventually(lambda: info.mid in self.pubacks), f"{self.username}: no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def payloads(self, suffix: str = "") -> list[bytes]:
        return [payload for topic, payload in list(self.messages) if topic.endswith(suffix)]

    def vanish(self) -> None:
        """Drop the connection without DISCONNECT, as a device losing power does: the broker sends its will."""
        self.client.socket().shutdown(socket.SHUT_RDWR)
        assert eventually(lambda: self.disconnects), f"{self.username}: still connected"
        self.client.loop_stop()

    def close(self) -> None:
        if self.connected:
            self.client.disconnect()
        self.client.loop_stop()


class Setup:
    """The generated files, their passwords, and the running broker."""

    def __init__(self, directory: Path, tls: bool = True, **options):
        self.files = write_broker_config(directory, DEVICES, CLINICIANS, port=free_port(), tls=tls, **options)
        self.directory, self.conf, self.port, self.tls, self.ca = (self.files.directory, self.files.conf,
                                                                   self.files.port, tls, self.files.ca)
        self.passwords = json.loads(self.files.credentials.read_text())
        self.broker = ConfiguredMosquitto(self.conf, self.port, self.directory / "mosquitto.log")
        self.clients: list[Client] = []

    def client(self, username: str | None, **options) -> Client:
        client = Client(self, username, **options)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.broker.stop()


@pytest.fixture
def setup(tmp_path):
    running = Setup(tmp_path / "broker")
    running.broker.start()
    yield running
    running.close()


def listener(setup, username: str = "clinic", topic_filter: str = "heartsight/v1/+/+/alerts", **options) -> Client:
    client = setup.client(username, **options)
    assert client.connack == "Success"
    assert client.subscribe(topic_filter) == "Granted QoS 1"
    return client


# --- the attacks ---------------------------------------------------------------------------------------------------

@needs_broker
def test_a_device_publishes_only_its_own_alerts_and_status(setup):
    """Blocked by the dynamic security plugin's publishClientSend ACLs (one role per device)."""
    clinician = listener(setup)
    assert clinician.subscribe("heartsight/v1/+/+/status") == "Granted QoS 1"
    device = setup.client("s1/dev-a")
    for topic in ("heartsight/v1/s1/dev-b/alerts", "heartsight/v1/s2/dev-a/alerts", "heartsight/v1/s9/dev-a/alerts",
                  "heartsight/v1/s1/dev-b/status", "heartsight/v1/s1/dev-a/acks", "heartsight/v1/s1/dev-a/alerts/x",
                  "heartsight/v1/s1/+/alerts", "elsewhere"):
        if "+" not in topic:
            assert device.publish(topic, b"spoofed") == NOT_AUTHORIZED, topic
    assert device.publish("heartsight/v1/s1/dev-a/status", b'{"state": "online"}', retain=True) == "Success"
    assert device.publish("heartsight/v1/s1/dev-a/alerts", b"genuine") == "Success"
    assert eventually(lambda: b"genuine" in clinician.payloads())
    # The broker routes a message before it acknowledges it, and one publisher's messages keep their order, so
    # any spoofed message that got through would have arrived before "genuine".
    assert clinician.messages == [("heartsight/v1/s1/dev-a/status", b'{"state": "online"}'),
                                  ("heartsight/v1/s1/dev-a/alerts", b"genuine")]
    # Nor can a device read anything but its own acks.
    for topic_filter in ("heartsight/v1/+/+/alerts", "heartsight/v1/#", "#", "heartsight/v1/s1/dev-b/acks",
                         "heartsight/v1/s1/+/acks", "$SYS/#"):
        assert device.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter
    assert device.subscribe("heartsight/v1/s1/dev-a/acks") == "Granted QoS 1"


@needs_broker
def test_a_device_last_will_goes_out_on_its_own_status_only(setup):
    """The plugin checks a will against the device's publish ACL when the broker sends it: a will on another
    device's status is dropped, the device's own goes out."""
    clinician = listener(setup, topic_filter="heartsight/v1/+/+/status")
    for will in ("heartsight/v1/s1/dev-b/status", "heartsight/v1/s1/dev-a/status"):
        device = setup.client("s1/dev-a", will=will)
        assert device.connack == "Success"
        device.vanish()
    # The second connection (same account, so same client id) took over the first, whose will, if sent at all,
    # went out before the second connection was accepted, and so before the second will.
    assert eventually(lambda: clinician.messages)
    assert clinician.messages == [("heartsight/v1/s1/dev-a/status", b'{"state": "offline"}')]


@needs_broker
def test_a_clinician_account_cannot_publish_alerts_or_status(setup):
    """Blocked by the clinician role, whose only publishClientSend ACL is heartsight/v1/+/+/acks."""
    watcher = listener(setup, "clinic-2")
    assert watcher.subscribe("heartsight/v1/+/+/status") == "Granted QoS 1"
    clinic = setup.client("clinic")
    for topic in ("heartsight/v1/clinic/x/alerts", "heartsight/v1/s1/clinic/alerts", "heartsight/v1/s1/dev-a/alerts",
                  "heartsight/v1/s1/dev-a/status", "heartsight/v1/clinic/clinic/status", "elsewhere"):
        assert clinic.publish(topic, b"forged") == NOT_AUTHORIZED, topic
    assert clinic.subscribe("heartsight/v1/+/+/acks") == NOT_AUTHORIZED  # acks are each device's own
    device = setup.client("s1/dev-a")
    assert device.subscribe("heartsight/v1/s1/dev-a/acks") == "Granted QoS 1"
    assert clinic.publish("heartsight/v1/s1/dev-a/acks", b"ack") == "Success"  # what a clinician may write
    assert eventually(lambda: device.payloads() == [b"ack"])
    assert device.publish("heartsight/v1/s1/dev-a/alerts", b"genuine") == "Success"
    assert eventually(lambda: watcher.payloads())
    assert watcher.messages == [("heartsight/v1/s1/dev-a/alerts", b"genuine")]


@needs_broker
def test_a_device_cannot_take_the_listeners_client_id(setup):
    """use_username_as_clientid: Mosquitto replaces the id a client asks for with its account name, so a device
    asking for the listener's id gets its own session; the listener is neither kicked nor robbed of its queue."""
    clinician = listener(setup, client_id="clinic-listener", clean_start=False, session_expiry_s=3600)
    device = setup.client("s1/dev-a")
    for stolen_id in ("clinic-listener", "clinic"):  # the id it asked for, and the one Mosquitto gave it
        thief = setup.client("s1/dev-b", client_id=stolen_id)
        assert thief.connack == "Success"
        assert device.publish("heartsight/v1/s1/dev-a/alerts", stolen_id.encode()) == "Success"
        assert eventually(lambda: stolen_id.encode() in clinician.payloads())
        assert clinician.connected and clinician.disconnects == []
        assert thief.messages == []
        thief.close()
    # While the listener is away its session queues alerts; a device asking for its id does not get them.
    clinician.close()
    assert device.publish("heartsight/v1/s1/dev-a/alerts", b"while away") == "Success"
    thief = setup.client("s1/dev-b", client_id="clinic", clean_start=False, session_expiry_s=3600)
    assert thief.session_present is False
    assert thief.publish("heartsight/v1/s1/dev-b/status", b"round trip") == "Success"  # queued ones come before
    assert thief.messages == []
    thief.close()
    back = setup.client("clinic", client_id="clinic-listener", clean_start=False, session_expiry_s=3600)
    assert back.session_present is True
    assert eventually(lambda: back.payloads() == [b"while away"])


@needs_broker
def test_a_device_cannot_join_the_listeners_shared_group(setup):
    """The dynamic security plugin checks the whole filter $share/<group>/...; only the clinician role has a
    $share pattern. (With an acl_file Mosquitto 2.0 grants the subscription and then drops the device's round-robin
    share of the alerts: they are lost.)"""
    group = "$share/ward/heartsight/v1/+/+/alerts"
    listeners = [listener(setup, "clinic", group), listener(setup, "clinic-2", group)]
    intruder = setup.client("s1/dev-b")
    for topic_filter in (group, "$share/ward/#", "$share/ward/heartsight/v1/s1/dev-b/acks",
                         "$share/ward/heartsight/v1/s1/dev-a/alerts", "$share/other/heartsight/v1/+/+/alerts"):
        assert intruder.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter
    device = setup.client("s1/dev-a")
    sent = [f"alert {i}".encode() for i in range(30)]
    for payload in sent:
        assert device.publish("heartsight/v1/s1/dev-a/alerts", payload) == "Success"
    assert eventually(lambda: sorted(listeners[0].payloads() + listeners[1].payloads()) == sorted(sent)), \
        f"lost {set(sent) - set(listeners[0].payloads() + listeners[1].payloads())}"
    assert listeners[0].payloads() and listeners[1].payloads()  # shared between them, none lost
    assert intruder.messages == []


@needs_broker
def test_a_device_cannot_kick_another_device_off(setup):
    """use_username_as_clientid: the victim's id is its account name, which only its own password can claim."""
    victim = setup.client("s1/dev-b", client_id="heartsight-s1-dev-b")  # the Publisher's default id
    assert victim.subscribe("heartsight/v1/s1/dev-b/acks") == "Granted QoS 1"
    clinic = setup.client("clinic")
    for stolen_id in ("heartsight-s1-dev-b", "s1/dev-b"):  # the id the victim asked for, the one Mosquitto gave it
        attacker = setup.client("s1/dev-a", client_id=stolen_id)
        assert attacker.connack == "Success"
        assert clinic.publish("heartsight/v1/s1/dev-b/acks", stolen_id.encode()) == "Success"
        assert eventually(lambda: stolen_id.encode() in victim.payloads())
        assert victim.connected and victim.disconnects == []
        attacker.close()


@needs_broker
def test_wrong_passwords_and_anonymous_clients_are_refused(setup):
    """allow_anonymous false, and the plugin checks each password against its PBKDF2-SHA512 hash."""
    assert setup.client("s1/dev-a", password="wrong").connack == NOT_AUTHORIZED
    assert setup.client("s1/dev-a", password=setup.passwords["s1/dev-b"]).connack == NOT_AUTHORIZED
    assert setup.client("nobody", password="x").connack == NOT_AUTHORIZED
    assert setup.client(None).connack == NOT_AUTHORIZED
    assert setup.client("s1/dev-a").connack == "Success"


@needs_broker
def test_tls_needs_the_generated_ca(setup, tmp_path):
    """The listener speaks only TLS, with a server certificate for localhost and 127.0.0.1 signed by DIR/ca.crt."""
    with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs do not know it
        setup.client("s1/dev-a", ca=None)
    other = write_broker_config(tmp_path / "other", ["s1/dev-a"], [], port=free_port())
    with pytest.raises(ssl.SSLCertVerificationError):  # nor does another setup's CA
        setup.client("s1/dev-a", ca=other.ca)
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    plain.username_pw_set("s1/dev-a", setup.passwords["s1/dev-a"])
    connacks = []
    plain.on_connect = lambda c, u, flags, rc, props: connacks.append(rc)
    plain.connect("127.0.0.1", setup.port)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and plain.loop(0.1) == mqtt.MQTT_ERR_SUCCESS:
        pass
    assert connacks == []  # the broker closed the connection: no MQTT without TLS
    assert setup.client("s1/dev-a").connack == "Success"
    assert setup.client("s1/dev-a", ca=setup.directory / "ca.crt").connack == "Success"


@needs_broker
def test_alerts_queued_for_an_offline_listener_survive_kill_9(setup):
    """persistence, autosave_on_changes and autosave_interval 1: the state is written after every change.

    Mosquitto acknowledges a publish before it writes (at the end of the event-loop pass that handled it), so the
    device makes one more round trip, which Mosquitto handles in a later pass, before the broker is killed. (A
    kill -9 within the same pass, well under a millisecond here, would lose the last alert.)"""
    clinician = listener(setup, client_id="clinic", clean_start=False, session_expiry_s=3600)
    clinician.close()
    device = setup.client("s1/dev-a")
    sent = [f"queued alert {i:03d} {uuid.uuid4().hex}".encode() for i in range(50)]
    for payload in sent:
        assert device.publish("heartsight/v1/s1/dev-a/alerts", payload) == "Success"
    assert device.publish("heartsight/v1/s1/dev-a/status", b'{"state": "online"}', retain=True) == "Success"
    setup.broker.kill9()
    device.close()
    setup.broker.start()
    back = setup.client("clinic", client_id="clinic", clean_start=False, session_expiry_s=3600)
    assert back.session_present is True
    assert eventually(lambda: len(back.payloads()) >= len(sent))
    assert sorted(back.payloads()) == sorted(sent)  # 0 lost, none twice


@needs_broker
def test_without_tls_the_same_rules_hold(tmp_path):
    running = Setup(tmp_path / "plain", tls=False)
    running.broker.start()
    try:
        assert running.ca is None and not (running.directory / "ca.crt").exists()
        clinician = listener(running)
        device = running.client("s1/dev-a")
        assert device.publish("heartsight/v1/s1/dev-b/alerts", b"spoofed") == NOT_AUTHORIZED
        assert device.subscribe("$share/g/heartsight/v1/+/+/alerts") == NOT_AUTHORIZED
        assert device.publish("heartsight/v1/s1/dev-a/alerts", b"genuine") == "Success"
        assert eventually(lambda: clinician.payloads() == [b"genuine"])
        assert running.client(None).connack == NOT_AUTHORIZED
    finally:
        running.close()


# --- the command line ----------------------------------------------------------------------------------------------

@needs_broker
def test_broker_config_writes_a_runnable_configuration(heartsight_main, tmp_path):
    out, port = tmp_path / "b", free_port()
    run = heartsight_main("broker", "config", "--out", out, "--port", port, "--device", "s1/dev-a",
                          "--device", "s2/dev-a", "--clinician", "clinic")
    assert run.returncode == 0, run.stderr
    assert f"mosquitto -c {out / 'mosquitto.conf'}" in run.stdout and str(out / "ca.crt") in run.stdout
    credentials = out / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    for private in ("dynamic-security.json", "ca.key", "server.key"):
        assert stat.S_IMODE((out / private).stat().st_mode) == 0o600, private
    passwords = json.loads(credentials.read_text())
    assert sorted(passwords) == ["clinic", "s1/dev-a", "s2/dev-a"] and len(set(passwords.values())) == 3
    conf = (out / "mosquitto.conf").read_text().splitlines()
    for line in (f"listener {port} 127.0.0.1", "allow_anonymous false", "use_username_as_clientid true",
                 f"cafile {out / 'ca.crt'}", "persistence true", f"persistence_location {out / 'data'}/",
                 "autosave_on_changes true", "autosave_interval 1", "max_queued_messages 1000000"):
        assert line in conf
    dynsec = json.loads((out / "dynamic-security.json").read_text())
    assert all(password not in json.dumps(dynsec) for password in passwords.values())  # hashed only
    assert {c["username"] for c in dynsec["clients"]} == set(passwords)
    assert dynsec["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                          "subscribe": False, "unsubscribe": True}
    written = SimpleNamespace(directory=out, conf=out / "mosquitto.conf", port=port, tls=True, ca=out / "ca.crt",
                              passwords=passwords)
    broker = ConfiguredMosquitto(written.conf, port, out / "mosquitto.log")
    broker.start()  # `mosquitto -c DIR/mosquitto.conf`, as printed
    try:
        device = Client(written, "s1/dev-a")
        assert device.connack == "Success"
        assert device.publish("heartsight/v1/s1/dev-a/alerts", b"genuine") == "Success"
        device.close()
    finally:
        broker.stop()


@needs_broker
def test_broker_config_again_keeps_passwords_and_the_ca(heartsight_main, tmp_path):
    """Adding a device must not invalidate the passwords and CA already deployed; a device left out is removed."""
    out = tmp_path / "b"
    assert heartsight_main("broker", "config", "--out", out, "--device", "s1/dev-a", "--device", "s1/dev-b",
                           "--clinician", "clinic").returncode == 0
    first, ca = json.loads((out / "credentials.json").read_text()), (out / "ca.crt").read_bytes()
    run = heartsight_main("broker", "config", "--out", out, "--device", "s1/dev-a", "--device", "s1/dev-c",
                          "--clinician", "clinic")
    assert run.returncode == 0 and "kept the passwords of 2 existing account(s)" in run.stdout
    second = json.loads((out / "credentials.json").read_text())
    assert sorted(second) == ["clinic", "s1/dev-a", "s1/dev-c"]
    assert second["s1/dev-a"] == first["s1/dev-a"] and second["clinic"] == first["clinic"]
    assert (out / "ca.crt").read_bytes() == ca


@pytest.fixture
def fake_plugin(tmp_path) -> Path:
    """A stand-in for the plugin's file, so that what is checked before it needs no Mosquitto installed."""
    path = tmp_path / "mosquitto_dynamic_security.so"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("args, says", [
    (["--device", "a/b/c"], "is not SITE/ID"),
    (["--device", "nosite"], "is not SITE/ID"),
    (["--device", "s1/dev a"], "'dev a' is not a valid name"),
    (["--device", "s1/+"], "'+' is not a valid name"),
    (["--device", "#/dev-a"], "'#' is not a valid name"),
    (["--device", "s1/" + "d" * 65], "is not a valid name"),
    (["--device", "s1/dev-a", "--device", "s1/dev-a"], "given twice"),
    (["--clinician", "clinic", "--clinician", "clinic"], "given twice"),
    (["--clinician", "ward/clinic"], "is not a valid name"),
    ([], "no accounts"),
    (["--device", "s1/dev-a", "--port", "0"], "is not a TCP port"),
    (["--device", "s1/dev-a", "--port", "x"], "invalid int value"),
    (["--device", "s1/dev-a", "--dynsec-plugin", "/nonexistent/plugin.so"], "plugin /nonexistent/plugin.so does not"),
])
def test_broker_config_refuses_bad_arguments_in_one_line(heartsight_main, tmp_path, args, says):
    run = heartsight_main("broker", "config", "--out", tmp_path / "b", *args)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("heartsight: error: ") and run.stderr.count("\n") == 1 and says in run.stderr
    assert not (tmp_path / "b").exists()  # checked before anything is written


def test_broker_config_refuses_an_unwritable_directory(heartsight_main, tmp_path, fake_plugin):
    (tmp_path / "file").write_text("")
    run = heartsight_main("broker", "config", "--out", tmp_path / "file" / "b", "--device", "s1/dev-a", "--no-tls",
                          "--dynsec-plugin", fake_plugin)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"heartsight: error: cannot write the broker configuration to {tmp_path / 'file'}")


def test_broker_config_without_openssl_says_to_install_it_or_use_no_tls(heartsight_main, tmp_path, monkeypatch,
                                                                        fake_plugin):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    run = heartsight_main("broker", "config", "--out", tmp_path / "b", "--device", "s1/dev-a",
                          "--dynsec-plugin", fake_plugin)
    assert run.returncode == 2 and "openssl command is needed" in run.stderr and "--no-tls" in run.stderr
    assert not (tmp_path / "b").exists()


def test_broker_config_without_the_plugin_says_to_install_mosquitto(heartsight_main, tmp_path, monkeypatch):
    monkeypatch.setattr("sdk.stream.broker_setup.PLUGIN_PLACES", [str(tmp_path / "nowhere")])
    run = heartsight_main("broker", "config", "--out", tmp_path / "b", "--device", "s1/dev-a")
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "dynamic security plugin" in run.stderr and "install Mosquitto 2.0" in run.stderr
    assert not (tmp_path / "b").exists()


def test_broker_config_refuses_a_damaged_credentials_file(heartsight_main, tmp_path, fake_plugin):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "credentials.json").write_text("{not json")
    run = heartsight_main("broker", "config", "--out", tmp_path / "b", "--device", "s1/dev-a", "--no-tls",
                          "--dynsec-plugin", fake_plugin)
    assert run.returncode == 2 and "credentials.json cannot be read as JSON" in run.stderr
    assert "delete it" in run.stderr and run.stderr.count("\n") == 1


def test_device_specs_name_the_site_and_the_device():
    assert parse_device("ward-3/dev.0042") == ("ward-3", "dev.0042")
    with pytest.raises(HeartSightError, match="exactly one '/'"):
        parse_device("ward-3")
