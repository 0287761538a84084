"""One MQTT 5 connection shared by the device publisher and the clinician listener.

It reconnects by itself after network failures and stops for good on failures retrying cannot fix (bad credentials,
a broker certificate that does not verify), so callers can turn those into a clear error.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sdk.errors import HeartSightError

log = logging.getLogger("heartsight.mqtt")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# CONNACK reason codes a retry cannot fix: unsupported protocol, client id not valid, bad user name or password,
# not authorized, banned, bad authentication method.
FATAL_CONNACK = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C}
SESSION_TAKEN_OVER = 0x8E  # DISCONNECT: another client connected with this client id


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is and how to log in to it, for the publisher, the listener and the fleet simulator.

    Checked once, when made, so a wrong URL or a missing certificate fails before anything connects.
    """

    url: str  # mqtt://host[:port] or mqtts://host[:port] (TLS)
    username: str | None = None
    password: str | None = None
    tls_ca: str | Path | None = None  # the CA that signed the broker's certificate
    tls_cert: str | Path | None = None  # a client certificate and its key, for a broker that asks for one
    tls_key: str | Path | None = None
    host: str = field(init=False)
    port: int = field(init=False)
    tls: bool = field(init=False)

    def __post_init__(self):
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port == -1 or parts.path not in ("", "/") \
                or parts.username is not None:
            raise HeartSightError(f"broker URL {self.url!r} is not mqtt://host[:port] or mqtts://host[:port] "
                                  "(give credentials as username/password, not in the URL)")
        if self.password is not None and self.username is None:
            raise HeartSightError("a broker password was given without a username: give both")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise HeartSightError("a client certificate needs both tls_cert and tls_key")
        tls = parts.scheme == "mqtts"
        if not tls and (self.tls_ca or self.tls_cert or self.tls_key):
            raise HeartSightError(f"TLS files given but {self.url} is not TLS: use an mqtts:// URL")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise HeartSightError(f"{name} file {path} does not exist")
        object.__setattr__(self, "host", parts.hostname)
        object.__setattr__(self, "port", port or DEFAULT_PORTS[parts.scheme])
        object.__setattr__(self, "tls", tls)

    def apply(self, client: mqtt.Client) -> None:
        """Give a paho client these credentials and TLS settings."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=_text(self.tls_ca), certfile=_text(self.tls_cert), keyfile=_text(self.tls_key))


def json_properties(packet_type: int = PacketTypes.PUBLISH) -> Properties:
    """MQTT 5 properties announcing a UTF-8 JSON payload."""
    props = Properties(packet_type)
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    return props


class Connection:
    """A paho client (MQTT 5, callback API 2) driven by a network thread of its own that reconnects after failures.

    Our thread, not paho's loop_start, and only it touches the client: paho resends its unacknowledged messages
    while it handles CONNACK, within one network round, so what `on_idle` publishes between rounds goes out after
    them. (With loop_start, a publish from another thread while connecting goes out at once, overtaking them.)

    session_expiry_s=None asks for a clean session; a number asks the broker to keep the session (subscriptions,
    undelivered QoS 1 messages) that long after a disconnect, which only helps with a stable client_id.
    """

    def __init__(self, broker: BrokerConfig, client_id: str, *, session_expiry_s: int | None = None,
                 will: tuple[str, bytes] | None = None, on_connected: Callable[[bool], None] | None = None,
                 on_idle: Callable[[], None] | None = None, manual_ack: bool = False, reconnect_max_s: float = 30):
        self.url, self.client_id = broker.url, client_id
        self._on_connected = on_connected
        self._on_idle = on_idle
        self.reconnect_max_s = reconnect_max_s
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  manual_ack=manual_ack)
        broker.apply(self.client)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True,
                                 properties=json_properties(PacketTypes.WILLMESSAGE))
        props = Properties(PacketTypes.CONNECT)
        if session_expiry_s is not None:
            props.SessionExpiryInterval = int(session_expiry_s)
        # Only records the parameters; the network thread connects.
        self.client.connect_async(broker.host, broker.port, keepalive=30, clean_start=session_expiry_s is None,
                                  properties=props)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = threading.Event()
        self.error: HeartSightError | None = None
        self.last_error: str | None = None
        self.retry_in_s: float | None = None  # the current back-off while the broker cannot be reached
        self._stopping = threading.Event()
        self._goodbye: tuple[str, bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{client_id}", daemon=True)

    def start(self) -> None:
        """Connect in the background; never raises for an unreachable broker (the thread keeps retrying)."""
        self._thread.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """True once connected, False after timeout_s; raises HeartSightError if connecting cannot succeed."""
        deadline = time.monotonic() + timeout_s
        while not self.connected.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            self.raise_if_failed()
            if time.monotonic() >= deadline:
                return False
        return True

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def fail(self, error: HeartSightError) -> None:
        """Stop for good: record the error and stop reconnecting."""
        log.error("%s", error)
        self.error = error
        self._stopping.set()

    def stop(self, goodbye: tuple[str, bytes] | None = None) -> None:
        """Publish `goodbye` (topic, payload; retained) if connected, disconnect cleanly (no will), end the thread."""
        self._goodbye = goodbye
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        delay = 1.0
        try:
            while not self._stopping.is_set():
                try:
                    self.client.reconnect()
                except OSError as exc:  # refused, unreachable, DNS, TLS
                    self._connect_failed(exc)
                else:
                    while not self._stopping.is_set() and self.client.loop(0.05) == mqtt.MQTT_ERR_SUCCESS:
                        if self.connected.is_set():
                            delay = 1.0
                            if self._on_idle is not None:
                                self._on_idle()
                if self._stopping.is_set():
                    break
                self.retry_in_s = delay
                log.warning("%s: %s; retrying in %g s", self.url, self.last_error or "connection lost", delay)
                if not self._stopping.wait(delay):
                    delay = min(delay * 2, self.reconnect_max_s)
            if self._goodbye is not None and self.connected.is_set():
                info = self.client.publish(*self._goodbye, qos=1, retain=True, properties=json_properties())
                deadline = time.monotonic() + 2
                while not info.is_published() and time.monotonic() < deadline \
                        and self.client.loop(0.05) == mqtt.MQTT_ERR_SUCCESS:
                    pass
        except Exception as exc:  # a bug must not leave callers waiting on a dead thread
            self.fail(HeartSightError(f"the MQTT connection to {self.url} stopped: {exc!r}"))
        finally:
            if self.client.socket() is not None:
                self.client.disconnect()
            self.connected.clear()

    def _connect_failed(self, exc: OSError) -> None:
        self.last_error = f"cannot connect: {exc}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            self.fail(HeartSightError(f"the TLS certificate of {self.url} does not verify ({exc.verify_message}): "
                                      "pass the CA that signed it as tls_ca, and connect by a name the "
                                      "certificate lists"))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            if reason_code.value in FATAL_CONNACK:
                self.fail(HeartSightError(f"{self.url} refused the connection ({reason_code}): "
                                          "check the username, password and client id the broker expects"))
            return
        self.last_error, self.retry_in_s = None, None
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected(flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure and not self._stopping.is_set():
            self.last_error = f"disconnected: {reason_code}"
            if reason_code.value == SESSION_TAKEN_OVER:  # reconnecting would take it back, and so on for ever
                self.fail(HeartSightError(f"another client connected to {self.url} as {self.client_id} and took over "
                                          "this one's session: give each publisher and listener its own client id "
                                          "(or broker account)"))


def _text(path: str | Path | None) -> str | None:
    return None if path is None else str(path)
