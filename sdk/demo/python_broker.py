"""An MQTT 5 broker in pure Python, for the demo on a computer without Mosquitto: one thread, all in memory.

It speaks what HeartSight uses: QoS 0 and 1, persistent sessions (kept while the broker runs), retained messages,
last wills, '+' and '#' wildcards and shared subscriptions ($share/group/filter). It has no authentication, no
TLS, no ACLs and nothing on disk, and it listens on 127.0.0.1 only: anything beyond one computer needs Mosquitto.
No MQTT 5 broker installs with pip (amqtt speaks 3.1.1; mqttools' broker has no QoS 1), hence this one; packet
fields are read with paho-mqtt's own MQTT 5 helpers.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import threading
import time
from dataclasses import dataclass, field

from paho.mqtt.client import topic_matches_sub
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties, VariableByteIntegers, readBytes, readInt16, readUTF

from sdk.errors import HeartSightError

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = \
    1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14
NO_PROPERTIES = b"\x00"
# DISCONNECT and CONNACK reason codes
NORMAL, WITH_WILL, MALFORMED, PROTOCOL_ERROR, UNSUPPORTED_VERSION, TAKEN_OVER, QOS_NOT_SUPPORTED = \
    0x00, 0x04, 0x81, 0x82, 0x84, 0x8E, 0x9B
INVALID_FILTER, NO_SUBSCRIPTION = 0x8F, 0x11


class Malformed(Exception):
    """A packet this broker cannot read: the connection is closed with reason 0x81."""


class QosNotSupported(Exception):
    """A QoS 2 publish, after the CONNACK said Maximum QoS 1: the connection is closed with reason 0x9B."""


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes  # the PUBLISH's MQTT 5 property block (length included), forwarded unchanged


@dataclass
class Session:
    client_id: str
    expiry_s: int = 0
    subscriptions: dict[str, int] = field(default_factory=dict)  # topic filter as given -> granted QoS
    inflight: dict[int, Message] = field(default_factory=dict)  # packet id -> QoS 1 message not yet acknowledged
    queued: list[Message] = field(default_factory=list)  # QoS 1 messages that arrived while it was away
    connection: Connection | None = None
    ended_at: float | None = None  # when its last connection closed
    packet_ids: itertools.cycle = field(default_factory=lambda: itertools.cycle(range(1, 65536)))

    def expired(self, now: float) -> bool:
        return self.connection is None and self.ended_at is not None and now - self.ended_at >= self.expiry_s

    def deliver(self, message: Message, retain: bool = False) -> None:
        if message.qos == 0:
            if self.connection is not None:
                self.connection.send_publish(message, None, retain)
        elif self.connection is None:
            self.queued.append(message)
        else:
            packet_id = next(self.packet_ids)
            while packet_id in self.inflight:
                packet_id = next(self.packet_ids)
            self.inflight[packet_id] = message
            self.connection.send_publish(message, packet_id, retain)


class Connection:
    def __init__(self, broker: PythonBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.broker, self.reader, self.writer = broker, reader, writer
        self.session: Session | None = None
        self.will: Message | None = None
        self.keepalive_s = 0

    def send(self, first_byte: int, body: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(bytes([first_byte]) + VariableByteIntegers.encode(len(body)) + body)

    def send_publish(self, message: Message, packet_id: int | None, retain: bool, duplicate: bool = False) -> None:
        qos = 0 if packet_id is None else 1
        flags = (PUBLISH << 4) | (duplicate << 3) | (qos << 1) | retain
        topic = message.topic.encode()
        self.send(flags, struct.pack("!H", len(topic)) + topic + (struct.pack("!H", packet_id) if qos else b"")
                  + message.properties + message.payload)

    def close(self, reason: int | None = None) -> None:
        if reason is not None:
            self.send(DISCONNECT << 4, bytes([reason]) + NO_PROPERTIES)
        self.writer.close()

    async def read_packet(self) -> tuple[int, bytes]:
        timeout = 1.5 * self.keepalive_s if self.keepalive_s else None
        first = await asyncio.wait_for(self.reader.readexactly(1), timeout)
        length, shift = 0, 0
        for _ in range(4):
            byte = (await self.reader.readexactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            raise Malformed("remaining length longer than 4 bytes")
        return first[0], await self.reader.readexactly(length)


class PythonBroker:
    """Start with `with PythonBroker() as broker:` and connect to broker.url (mqtt://127.0.0.1:<free port>)."""

    def __init__(self, port: int | None = None):
        self.port = port or 0  # 0: the system picks a free port when the server binds, so no other process can take it
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Message] = {}
        self._shared_turn = itertools.count()
        self._client_numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="python-mqtt-broker", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None or not self._ready.is_set():
            raise HeartSightError(f"the Python MQTT broker could not listen on 127.0.0.1:{self.port}: {self._error}")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> PythonBroker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._ready.set()
        async with server:
            await self._stop.wait()
            for session in self.sessions.values():
                if session.connection is not None:
                    session.connection.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(self, reader, writer)
        clean_end = False
        try:
            first, body = await connection.read_packet()
            if first >> 4 != CONNECT:
                raise Malformed("the first packet must be CONNECT")
            if not self._connect(connection, body):
                return
            while True:
                first, body = await connection.read_packet()
                kind = first >> 4
                if kind == PUBLISH:
                    self._publish(connection, first, body)
                elif kind == PUBACK:
                    connection.session.inflight.pop(readInt16(body), None)
                elif kind == SUBSCRIBE:
                    self._subscribe(connection, body)
                elif kind == UNSUBSCRIBE:
                    self._unsubscribe(connection, body)
                elif kind == PINGREQ:
                    connection.send(PINGRESP << 4, b"")
                elif kind == DISCONNECT:
                    clean_end = self._disconnect(connection, body)
                    return
                else:
                    connection.close(PROTOCOL_ERROR)
                    return
        except QosNotSupported:
            connection.close(QOS_NOT_SUPPORTED)
        except (Malformed, MQTTException, IndexError, KeyError, struct.error, UnicodeDecodeError, ValueError):
            connection.close(MALFORMED)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass  # the client went away, or was silent for 1.5 keep-alive periods
        finally:
            self._end(connection, clean_end)

    def _connect(self, connection: Connection, body: bytes) -> bool:
        name, at = readUTF(body, len(body))
        level, flags = body[at], body[at + 1]
        if name != "MQTT" or level != 5:
            # an MQTT 3.1.1 client reads a 3.1.1 CONNACK: return code 1, unacceptable protocol version
            connection.send(CONNACK << 4, b"\x00\x01" if level == 4 else b"\x00" + bytes([UNSUPPORTED_VERSION]))
            connection.close()
            return False
        connection.keepalive_s = readInt16(body[at + 2:])
        at += 4
        properties, used = Properties(PacketTypes.CONNECT).unpack(body[at:])
        at += used
        client_id, used = readUTF(body[at:], len(body) - at)
        at += used
        if flags & 0x04:  # a will
            will_properties, used = _property_block(body, at)
            at += used
            topic, used = readUTF(body[at:], len(body) - at)
            at += used
            payload, used = readBytes(body[at:], len(body) - at)
            connection.will = Message(topic, bytes(payload), min((flags >> 3) & 3, 1), bool(flags & 0x20),
                                      _without_will_delay(will_properties))
        connack = Properties(PacketTypes.CONNACK)
        connack.MaximumQoS = 1
        if not client_id:
            client_id = f"python-broker-{next(self._client_numbers)}"
            connack.AssignedClientIdentifier = client_id
        now = time.monotonic()
        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            old = session.connection
            session.connection = None
            old.close(TAKEN_OVER)
            self._publish_will(old)
        if session is None or flags & 0x02 or session.expired(now):
            session = self.sessions[client_id] = Session(client_id)
            present = False
        else:
            present = True
        session.expiry_s = getattr(properties, "SessionExpiryInterval", 0)
        session.connection, session.ended_at = connection, None
        connection.session = session
        connection.send(CONNACK << 4, bytes([present, 0]) + connack.pack())
        for packet_id, message in session.inflight.items():  # unacknowledged before: resend, marked duplicate
            connection.send_publish(message, packet_id, False, duplicate=True)
        queued, session.queued = session.queued, []
        for message in queued:
            session.deliver(message)
        return True

    def _publish(self, connection: Connection, first: int, body: bytes) -> None:
        qos, retain = (first >> 1) & 3, bool(first & 1)
        if qos > 1:
            raise QosNotSupported
        topic, at = readUTF(body, len(body))
        if not topic or "+" in topic or "#" in topic:
            raise Malformed(f"invalid topic name {topic!r}")
        packet_id = None
        if qos:
            packet_id = readInt16(body[at:])
            at += 2
        properties, used = _property_block(body, at)
        message = Message(topic, bytes(body[at + used:]), qos, retain, properties)
        self._route(message)
        if packet_id is not None:
            connection.send(PUBACK << 4, struct.pack("!H", packet_id))

    def _route(self, message: Message) -> None:
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message
            else:
                self.retained.pop(message.topic, None)
        now = time.monotonic()
        for client_id in [c for c, s in self.sessions.items() if s.expired(now)]:
            del self.sessions[client_id]
        groups: dict[tuple[str, str], list[tuple[Session, int]]] = {}
        for session in self.sessions.values():
            best = None
            for topic_filter, granted in session.subscriptions.items():
                if topic_filter.startswith("$share/"):
                    _, group, shared_filter = topic_filter.split("/", 2)
                    if topic_matches_sub(shared_filter, message.topic):
                        groups.setdefault((group, shared_filter), []).append((session, granted))
                elif topic_matches_sub(topic_filter, message.topic):
                    best = granted if best is None else max(best, granted)
            if best is not None:  # one copy per session, at the highest QoS of its matching filters
                session.deliver(_at_qos(message, best))
        for members in groups.values():  # one member of each group, connected ones first, in turns
            connected = [m for m in members if m[0].connection is not None] or members
            session, granted = connected[next(self._shared_turn) % len(connected)]
            session.deliver(_at_qos(message, granted))

    def _subscribe(self, connection: Connection, body: bytes) -> None:
        packet_id = readInt16(body)
        _, used = _property_block(body, 2)
        at, codes, new = 2 + used, [], []
        while at < len(body):
            topic_filter, used = readUTF(body[at:], len(body) - at)
            options = body[at + used]
            at += used + 1
            if not _valid_filter(topic_filter):
                codes.append(INVALID_FILTER)
                continue
            granted = min(options & 3, 1)
            connection.session.subscriptions[topic_filter] = granted
            codes.append(granted)
            new.append((topic_filter, granted))
        connection.send(SUBACK << 4, struct.pack("!H", packet_id) + NO_PROPERTIES + bytes(codes))
        for topic_filter, granted in new:  # retained messages go to new, non-shared subscriptions
            if topic_filter.startswith("$share/"):
                continue
            for message in list(self.retained.values()):
                if topic_matches_sub(topic_filter, message.topic):
                    connection.session.deliver(_at_qos(message, granted), retain=True)

    def _unsubscribe(self, connection: Connection, body: bytes) -> None:
        packet_id = readInt16(body)
        _, used = _property_block(body, 2)
        at, codes = 2 + used, []
        while at < len(body):
            topic_filter, used = readUTF(body[at:], len(body) - at)
            at += used
            codes.append(NORMAL if connection.session.subscriptions.pop(topic_filter, None) is not None
                         else NO_SUBSCRIPTION)
        connection.send(UNSUBACK << 4, struct.pack("!H", packet_id) + NO_PROPERTIES + bytes(codes))

    def _disconnect(self, connection: Connection, body: bytes) -> bool:
        """True for a normal disconnect, which discards the will."""
        reason = body[0] if body else NORMAL
        if len(body) > 1:
            properties, _ = Properties(PacketTypes.DISCONNECT).unpack(body[1:])
            if hasattr(properties, "SessionExpiryInterval"):
                connection.session.expiry_s = properties.SessionExpiryInterval
        return reason != WITH_WILL

    def _end(self, connection: Connection, clean_end: bool) -> None:
        connection.writer.close()
        session = connection.session
        if session is None or session.connection is not connection:
            return  # never connected, or taken over (the new connection owns the session)
        session.connection, session.ended_at = None, time.monotonic()
        if not clean_end:
            self._publish_will(connection)
        if session.expiry_s == 0:
            del self.sessions[session.client_id]

    def _publish_will(self, connection: Connection) -> None:
        will, connection.will = connection.will, None
        if will is not None:
            self._route(will)


def _property_block(body: bytes, at: int) -> tuple[bytes, int]:
    """The raw property block (length prefix included) that starts at body[at], and its size."""
    length, used = VariableByteIntegers.decode(body[at:])
    if at + used + length > len(body):
        raise Malformed("properties run past the end of the packet")
    return bytes(body[at: at + used + length]), used + length


def _without_will_delay(block: bytes) -> bytes:
    """Will properties as PUBLISH properties: the will delay is not one (this broker publishes wills at once)."""
    will, _ = Properties(PacketTypes.WILLMESSAGE).unpack(block)
    publish = Properties(PacketTypes.PUBLISH)
    for name in (n.replace(" ", "") for n in will.names):
        if name != "WillDelayInterval" and hasattr(will, name):
            setattr(publish, name, getattr(will, name))
    return bytes(publish.pack())


def _at_qos(message: Message, granted: int) -> Message:
    qos = min(message.qos, granted)
    return message if qos == message.qos else Message(message.topic, message.payload, qos, message.retain,
                                                      message.properties)


def _valid_filter(topic_filter: str) -> bool:
    levels = topic_filter.split("/")
    if topic_filter.startswith("$share/"):
        if len(levels) < 3 or not levels[1] or set(levels[1]) & set("+#"):
            return False
        levels = levels[2:]
    return bool(topic_filter) and all(level in ("+", "#") or not set(level) & set("+#") for level in levels) \
        and "#" not in levels[:-1]
