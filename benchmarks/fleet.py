"""Simulated devices for the fleet benchmark (benchmarks.stream): many MQTT 5 connections driven by one event loop
per process.

Each simulated device has its own connection, client id and alerts topic, and publishes schema-valid alerts with
QoS 1 and the Publisher's MQTT 5 properties, one per second at its own phase (devices are not synchronised).
Unlike a Publisher it keeps no outbox and no thread of its own: on the wearable each device does that on its own
processor. It shares this computer's cores with the broker, the listeners and the database, so it costs as little as
it can: it speaks the four MQTT 5 packets it needs (CONNECT, PUBLISH with QoS 1, PUBACK, DISCONNECT) on plain sockets,
and each alert's bytes are stamped into a template. Through paho, encoding each alert, it took ~130 µs of CPU an
alert, more than a core at 10,000 alerts/s, and measured the simulator rather than delivery; now ~35 µs, most of it
the kernel's sending of the 6 kB.
"""

from __future__ import annotations

import multiprocessing
import re
import selectors
import socket
import time
from datetime import datetime, timezone
from queue import Empty
from typing import Callable

import numpy as np

from sdk.device.alerts import Alert, Excerpt, alert_id
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig, json_properties
from sdk.stream.payload import SCHEMA, encode_alert, to_bytes
from sdk.stream.topics import alerts_topic

SITE, STREAM, TYPE = "bench", "bench", "ventricular_ectopic_beat"
EXCERPT_S, FS = 3.0, 360  # the Monitor's alert excerpt: 3 s of ECG and its trace
_PLACEHOLDER_TIME = "2000-01-01T00:00:00.000Z"  # bench_alert's time; the simulator stamps the moment of publishing
CONNECT, CONNACK, PUBLISH_QOS1, PUBACK, DISCONNECT = 0x10, 0x20, 0x32, 0x40, 0xE0  # MQTT packet types (and flags)


def bench_alert(device: str, i: int) -> dict:
    """An alert of the Monitor's size: a 3-s excerpt at 360 Hz with its saliency trace."""
    t = np.arange(int(EXCERPT_S * FS)) / FS
    excerpt = Excerpt(FS * i, np.sin(2 * np.pi * 1.2 * t), np.exp(-((t - 1.5) / 0.1) ** 2))
    return encode_alert(Alert(device=device, site=SITE, stream=STREAM, type=TYPE,
                              time=datetime.fromisoformat(_PLACEHOLDER_TIME), sample_index=FS * i, confidence=0.9,
                              label="V", model={"name": "ecg_beat", "version": "1.0.0", "sha256": "ab" * 32,
                                                "backend": "c"}, fs=FS, excerpt=excerpt, details={"bench": i}))


def payload_template() -> list[bytes]:
    """bench_alert's compact JSON cut where the values that differ between alerts go: text, field name, text, ...,
    text, for _payload to fill in."""
    alert = bench_alert("dev-0000", 0)
    alert.update(id="@id@", device="@device@", time="@time@", sample_index="@sample_index@",
                 details={"bench": "@bench@"})
    alert["signal"]["start_sample"] = "@start_sample@"
    return re.split(rb'"@(\w+)@"', to_bytes(alert))


def _payload(template: list[bytes], device: str, i: int, alert: str) -> bytes:
    """bench_alert(device, i), whose id is `alert`, stamped with the moment of publishing (~4 µs: encoding one costs
    ~25 µs, and 10,000 devices' alerts made in advance would not fit in memory)."""
    start = FS * i
    values = {b"id": b'"%s"' % alert.encode(), b"device": b'"%s"' % device.encode(), b"time": b'"%s"' % _now_text(),
              b"sample_index": b"%d" % start, b"start_sample": b"%d" % start, b"bench": b"%d" % i}
    parts = template.copy()
    parts[1::2] = [values[name] for name in template[1::2]]
    return b"".join(parts)


def _now_text() -> bytes:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()


def _simulate(broker: BrokerConfig, devices: list[str], phases: list[float], seconds: int, ready, start,
              results) -> None:
    """One process: connect every device, wait for `start`, publish on schedule, wait for every PUBACK."""
    props = json_properties()
    props.UserProperty = [("schema", SCHEMA)]
    properties = props.pack()  # the Publisher's properties, packed once
    template = payload_template()
    topics = {device: _string(alerts_topic(SITE, device)) for device in devices}
    sha256 = bench_alert(devices[0], 0)["model"]["sha256"]
    schedule = sorted((second + phase, device, second, alert_id(device, SITE, sha256, STREAM, FS * second, TYPE))
                      for device, phase in zip(devices, phases) for second in range(seconds))
    acked, refused = [0], [0]
    selector = selectors.DefaultSelector()
    sockets = {}
    for device in devices:
        sockets[device] = _connect(broker, f"bench-{device}")
        selector.register(sockets[device], selectors.EVENT_READ, (device, bytearray()))

    def pump(timeout: float) -> None:
        """Count the PUBACKs that came."""
        for key, _ in selector.select(timeout):
            device, buffer = key.data
            data = key.fileobj.recv(65536)
            if not data:
                raise HeartSightError(f"the broker closed simulated device {device}'s connection")
            buffer += data
            for kind, body in _take_packets(buffer):
                if kind != PUBACK:
                    raise HeartSightError(f"simulated device {device} got MQTT packet type {kind >> 4} from the "
                                          f"broker instead of a PUBACK: {body[:40]!r}")
                reason = body[2] if len(body) > 2 else 0
                (refused if reason >= 0x80 else acked)[0] += 1

    ready.put(len(sockets))
    start.wait()
    began, cpu_began = time.monotonic(), time.process_time()
    lateness = np.empty(len(schedule))
    for n, (due, device, second, alert) in enumerate(schedule):
        while (now := time.monotonic() - began) < due:
            pump(min(due - now, 0.01))
        lateness[n] = now - due
        head = topics[device] + (second % 65535 + 1).to_bytes(2, "big") + properties  # topic, packet id, properties
        payload = _payload(template, device, second, alert)
        sockets[device].sendall(b"".join((bytes([PUBLISH_QOS1]), _varint(len(head) + len(payload)), head, payload)))
    sent = len(schedule)
    deadline = time.monotonic() + 30
    while acked[0] + refused[0] < sent and time.monotonic() < deadline:
        pump(0.05)
    cpu_s = time.process_time() - cpu_began
    for sock in sockets.values():
        try:
            sock.sendall(bytes([DISCONNECT, 0]))
        except OSError:
            pass
        sock.close()
    results.put({"sent": sent, "acked": acked[0], "refused": refused[0], "cpu_s": cpu_s,
                 "schedule_lag_ms_p99": round(float(np.percentile(lateness, 99)) * 1000, 1)})


def _connect(broker: BrokerConfig, client_id: str) -> socket.socket:
    """An MQTT 5 connection (clean start, no keep-alive: it lives for a minute and publishes every second), once the
    broker accepted it."""
    if broker.tls:
        raise HeartSightError(f"the fleet simulator speaks plain MQTT; give it an mqtt:// broker, not {broker.url}")
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=30)
    except OSError as exc:
        raise HeartSightError(f"simulated device {client_id} cannot connect to {broker.url}: {exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    flags, login = 0x02, b""  # clean start
    if broker.username is not None:
        flags, login = flags | 0x80, login + _string(broker.username)
    if broker.password is not None:
        flags, login = flags | 0x40, login + _string(broker.password)
    body = _string("MQTT") + bytes([5, flags, 0, 0, 0]) + _string(client_id) + login  # v5, keep-alive 0, no props
    sock.sendall(bytes([CONNECT]) + _varint(len(body)) + body)
    buffer = bytearray()
    while not (packets := _take_packets(buffer)):
        data = sock.recv(65536)
        if not data:
            raise HeartSightError(f"{broker.url} closed simulated device {client_id}'s connection before its CONNACK")
        buffer += data
    kind, body = packets[0]
    if kind != CONNACK or body[1] != 0:
        raise HeartSightError(f"{broker.url} refused simulated device {client_id} (packet type {kind >> 4}, reason "
                              f"code {body[1] if len(body) > 1 else '?'}): check its max_connections and ACL")
    return sock


def _take_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """The whole MQTT packets at the front of buffer, as (type, body), removed from it."""
    packets = []
    while True:
        length, multiplier, i = 0, 1, 1
        while True:  # the remaining length: a variable byte integer after the type byte
            if i >= len(buffer):
                return packets
            length += (buffer[i] & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not buffer[i - 1] & 0x80:
                break
        if len(buffer) < i + length:
            return packets
        packets.append((buffer[0] & 0xF0, bytes(buffer[i: i + length])))
        del buffer[: i + length]


def _varint(value: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    """MQTT's UTF-8 string: its length in two bytes, then the bytes."""
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def run_fleet(broker: BrokerConfig, devices: int, seconds: int, processes: int = 1,
              started: Callable[[], None] | None = None) -> dict:
    """`devices` simulated devices publish one alert per second each for `seconds`; totals once all are acknowledged.
    started() is called once every device is connected, just before the first publishes.

    schedule_lag_ms_p99 says how late the simulator published against its schedule: if it is large, the offered
    load was lower than asked for. cpu_s: the CPU seconds the simulator used from then on.
    """
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    names = [f"dev-{d:04d}" for d in range(devices)]
    phases = [d / devices for d in range(devices)]
    workers = [context.Process(target=_simulate, args=(broker, names[p::processes], phases[p::processes], seconds,
                                                       ready, start, results), daemon=True)
               for p in range(processes)]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            _get(ready, workers, 180)
        if started is not None:
            started()
        start.set()
        parts = [_get(results, workers, seconds + 120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.terminate()
    return {"sent": sum(p["sent"] for p in parts), "acked": sum(p["acked"] for p in parts),
            "refused": sum(p["refused"] for p in parts), "cpu_s": sum(p["cpu_s"] for p in parts),
            "schedule_lag_ms_p99": max(p["schedule_lag_ms_p99"] for p in parts)}


def _get(queue, workers, timeout_s: float):
    """The next item from a worker; a clear error instead of a long wait if one of them died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=1)
        except Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead:
                raise HeartSightError(f"a simulated-device process failed (exit code {dead[0]}); its error is above")
    raise HeartSightError(f"the simulated devices did not answer within {timeout_s:g} s")
