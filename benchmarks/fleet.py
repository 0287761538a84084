"""Simulated devices for the fleet benchmark (benchmarks.stream): many MQTT 5 connections driven by one event loop
per process.

Each simulated device has its own connection, client id and alerts topic, and publishes schema-valid alerts with
QoS 1 and the Publisher's MQTT 5 properties, one per second at its own phase (devices are not synchronised).
Unlike a Publisher it keeps no outbox and no thread of its own: on the wearable each device does that on its own
processor, and 1,000 Python threads and SQLite files on this computer would measure the simulator, not delivery.
"""

from __future__ import annotations

import multiprocessing
import selectors
import time
from datetime import datetime, timezone
from queue import Empty

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig, json_properties
from sdk.device.alerts import Alert, Excerpt, alert_id
from sdk.stream.payload import SCHEMA, encode_alert, to_bytes
from sdk.stream.topics import alerts_topic

SITE, STREAM = "bench", "bench"
EXCERPT_S, FS = 3.0, 360  # the Monitor's alert excerpt: 3 s of ECG and its trace
_PLACEHOLDER_TIME = "2000-01-01T00:00:00.000Z"  # bench_alert's time; the simulator stamps the moment of publishing


def bench_alert(device: str, i: int) -> dict:
    """An alert of the Monitor's size: a 3-s excerpt at 360 Hz with its saliency trace."""
    t = np.arange(int(EXCERPT_S * FS)) / FS
    excerpt = Excerpt(FS * i, np.sin(2 * np.pi * 1.2 * t), np.exp(-((t - 1.5) / 0.1) ** 2))
    return encode_alert(Alert(device=device, site=SITE, stream=STREAM, type="ventricular_ectopic_beat",
                              time=datetime.fromisoformat(_PLACEHOLDER_TIME), sample_index=FS * i, confidence=0.9,
                              label="V", model={"name": "ecg_beat", "version": "1.0.0", "sha256": "ab" * 32,
                                                "backend": "c"}, fs=FS, excerpt=excerpt, details={"bench": i}))


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _payload(template: dict, device: str, i: int) -> bytes:
    """bench_alert(device, i) stamped with the moment of publishing: the template's excerpt is reused, because encoding
    and checking one costs ~1 ms, and 10,000 devices' alerts made in advance would not fit in memory."""
    start = FS * i
    return to_bytes({**template, "device": device, "time": _now_text(), "sample_index": start, "details": {"bench": i},
                     "id": alert_id(device, SITE, template["model"]["sha256"], STREAM, start, template["type"]),
                     "signal": {**template["signal"], "start_sample": start}})


def _simulate(broker: BrokerConfig, devices: list[str], phases: list[float], seconds: int, ready, start,
              results) -> None:
    """One process: connect every device, wait for `start`, publish on schedule, wait for every PUBACK."""
    props = json_properties()
    props.UserProperty = [("schema", SCHEMA)]
    template = bench_alert(devices[0], 0)
    acked, refused = [0], [0]

    def on_publish(client, userdata, mid, reason_code, properties):
        if reason_code.is_failure:
            refused[0] += 1
        else:
            acked[0] += 1

    selector = selectors.DefaultSelector()
    clients = {}
    writing = set()  # clients whose last packet the socket did not take whole (paho writes it at publishing)
    for device in devices:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{device}", protocol=mqtt.MQTTv5)
        client.on_publish = on_publish
        broker.apply(client)
        client.connect(broker.host, broker.port, keepalive=60, clean_start=True)
        selector.register(client.socket(), selectors.EVENT_READ, client)
        clients[device] = client

    def pump(timeout: float) -> None:
        for key, _ in selector.select(timeout):
            key.data.loop_read()
            if key.data.want_write():  # a PINGREQ or PUBACK answer
                writing.add(key.data)
        for client in list(writing):
            client.loop_write()
            if not client.want_write():
                writing.discard(client)

    deadline = time.monotonic() + 120
    while not all(c.is_connected() for c in clients.values()):
        if time.monotonic() > deadline:
            raise HeartSightError(f"only {sum(c.is_connected() for c in clients.values())} of {len(clients)} "
                                  f"simulated devices connected to {broker.url} within 120 s")
        pump(0.05)
    ready.put(len(clients))
    start.wait()
    began = time.monotonic()
    schedule = sorted((second + phase, device, second) for device, phase in zip(devices, phases)
                      for second in range(seconds))
    lateness = []
    last_misc = began
    for due, device, second in schedule:
        while (now := time.monotonic() - began) < due:
            pump(min(due - now, 0.01))
        lateness.append(now - due)
        client = clients[device]
        client.publish(alerts_topic(SITE, device), _payload(template, device, second), qos=1, properties=props)
        if client.want_write():
            writing.add(client)
        if time.monotonic() - last_misc > 1:
            for client in clients.values():
                client.loop_misc()
            last_misc = time.monotonic()
    sent = len(schedule)
    deadline = time.monotonic() + 30
    while acked[0] + refused[0] < sent and time.monotonic() < deadline:
        pump(0.05)
    for client in clients.values():
        client.disconnect()
    results.put({"sent": sent, "acked": acked[0], "refused": refused[0],
                 "schedule_lag_ms_p99": round(float(np.percentile(lateness, 99)) * 1000, 1)})


def run_fleet(broker: BrokerConfig, devices: int, seconds: int, processes: int = 1) -> dict:
    """`devices` simulated devices publish one alert per second each for `seconds`; totals once all are acknowledged.

    schedule_lag_ms_p99 says how late the simulator published against its schedule: if it is large, the offered
    load was lower than asked for.
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
        start.set()
        parts = [_get(results, workers, seconds + 120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.terminate()
    return {"sent": sum(p["sent"] for p in parts), "acked": sum(p["acked"] for p in parts),
            "refused": sum(p["refused"] for p in parts),
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
