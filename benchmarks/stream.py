"""The device runtime's speed per backend, and alert delivery at fleet scale.

1. Throughput: 10 minutes of MIT-BIH record 233 through Monitor(ecg_beat) in 1-s chunks, one thread,
   per backend, as a multiple of real time.
2. Fleet: N simulated devices (benchmarks.fleet: one MQTT 5 connection each, QoS 1) publish one alert with
   its 3-s excerpt and trace per second to a loopback Mosquitto; one clinician listener stores them in
   SQLite. Messages/s, loss, and latency from publishing to the commit in the store.
3. Mosquitto's own ceiling in the same run, with its bundled mosquitto_pub/mosquitto_sub (QoS 1, the same
   payload), for the ratio.

Writes benchmarks/results/stream.json and stream.md. Usage: python -m benchmarks.stream [DATA_DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks.fleet import bench_alert, run_fleet
from sdk.clinician.listener import Listener
from sdk.clinician.store import Store
from sdk.data.records import read_database_record
from sdk.demo.broker import LocalBroker, mosquitto_binary, wait_until
from sdk.device.monitor import BeatEvent, Monitor
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import to_bytes

THROUGHPUT_SECONDS = 600
FLEET_SIZES = (100, 1000, 2000)  # 2,000: past the goal, to show where delivery saturates
FLEET_SECONDS = 20
CEILING_MESSAGES = 20_000
RESULTS = Path(__file__).resolve().parent / "results"


def _monitor_throughput(backend: str, data_root) -> dict:
    recording = read_database_record("mitdb", "233", data_root)
    signal = recording.channel("MLII")[: int(THROUGHPUT_SECONDS * recording.fs)]
    monitor = Monitor(model="ecg_beat", fs=recording.fs, backend=backend, device="bench")
    chunk = int(recording.fs)
    beats = 0
    started = time.perf_counter()
    for first in range(0, len(signal), chunk):
        beats += sum(isinstance(e, BeatEvent) for e in monitor.feed(signal[first: first + chunk]))
    beats += sum(isinstance(e, BeatEvent) for e in monitor.finish())
    seconds = time.perf_counter() - started
    return {"backend": backend, "signal_s": THROUGHPUT_SECONDS, "beats": beats, "wall_s": round(seconds, 2),
            "x_real_time": round(THROUGHPUT_SECONDS / seconds, 1)}


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _fleet(devices: int, work: Path) -> dict:
    with LocalBroker(work) as broker:
        config = BrokerConfig(broker.url)
        store = Store(work / f"fleet-{devices}.sqlite")
        listener = Listener(config, store)
        listener.start()
        devices_result = run_fleet(config, devices, FLEET_SECONDS)
        wait_until(lambda: listener.counts["stored"] >= devices_result["sent"], 60)
        counts = listener.stop()
        arrivals = [(_utc(created), _utc(received)) for created, received in store.arrivals()]
        store.close()
    latencies = [(received - created).total_seconds() * 1000 for created, received in arrivals]
    span_s = (arrivals[-1][1] - arrivals[0][1]).total_seconds() if len(arrivals) > 1 else 0
    sent = devices_result["sent"]
    return {"devices": devices, "alerts_per_device_s": 1, "sent": sent, "acked": devices_result["acked"],
            "stored": counts["stored"], "lost": sent - counts["stored"],
            "schedule_lag_ms_p99": devices_result["schedule_lag_ms_p99"],
            "messages_per_s": round(len(arrivals) / span_s, 1) if span_s else None,
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1) if latencies else None}


def _mosquitto_ceiling(work: Path) -> dict:
    payload = to_bytes(bench_alert("dev-0000", 0)).decode()
    lines = work / "payloads.txt"
    lines.write_text((payload + "\n") * CEILING_MESSAGES)
    with LocalBroker(work) as broker:
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-h", "127.0.0.1", "-q", "1", "-t", "ceiling",
                                "-C", str(CEILING_MESSAGES)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        started = time.perf_counter()
        with open(lines) as stdin:
            subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-h", "127.0.0.1", "-q", "1", "-t", "ceiling",
                            "-l"], stdin=stdin, check=True)
        sub.wait(120)
        seconds = time.perf_counter() - started
    return {"messages": CEILING_MESSAGES, "payload_bytes": len(payload), "seconds": round(seconds, 2),
            "messages_per_s": round(CEILING_MESSAGES / seconds, 1)}


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    torch.set_num_threads(1)
    result = {"throughput": [], "fleet": [], "mosquitto": None}
    json_path, md_path = RESULTS / "stream.json", RESULTS / "stream.md"
    for backend in ("torch", "onnxruntime", "c"):
        result["throughput"].append(_monitor_throughput(backend, data_root))
        json_path.write_text(json.dumps(result, indent=1) + "\n")
    if mosquitto_binary() is not None and shutil.which("mosquitto_pub"):
        with tempfile.TemporaryDirectory() as work:  # the broker's own ceiling first: the fleets may not finish
            result["mosquitto"] = _mosquitto_ceiling(Path(work))
        for devices in FLEET_SIZES:
            with tempfile.TemporaryDirectory() as work:
                try:
                    result["fleet"].append(_fleet(devices, Path(work)))
                except Exception as exc:  # report the ceiling we hit rather than nothing
                    result["fleet"].append({"devices": devices, "error": f"{type(exc).__name__}: {exc}"})
            json_path.write_text(json.dumps(result, indent=1) + "\n")
            md_path.write_text(_markdown(result))
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(_markdown(result))
    print(f"wrote {json_path} and {md_path}")


def _markdown(result: dict) -> str:
    lines = ["# Streaming benchmark", "", f"Machine: {os.cpu_count()} cores. Device runtime on one thread: "
             f"{THROUGHPUT_SECONDS // 60} minutes of MIT-BIH record 233 through Monitor(ecg_beat) in 1-s chunks.", "",
             "| backend | beats | wall s | × real time |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['beats']} | {r['wall_s']} | {r['x_real_time']} |" for r in result["throughput"]]
    ceiling = result["mosquitto"]["messages_per_s"] if result["mosquitto"] else None
    lines += ["", f"Fleet: N simulated devices (one MQTT 5 connection each, QoS 1, one process) each publish one alert "
              f"per second with a 3-s excerpt and trace, for {FLEET_SECONDS} s, to a loopback Mosquitto; one clinician "
              "listener stores them in SQLite and acknowledges each after its commit. Latency: publishing to the "
              "commit. Schedule lag: how late the simulator published (large means the offered load fell short).", "",
              "| devices | sent | acked | stored | lost | msg/s | of Mosquitto's ceiling | p50 ms | p99 ms | schedule lag p99 ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["fleet"]:
        if "error" in r:
            lines.append(f"| {r['devices']} | failed: {r['error']} | | | | | | | | |")
            continue
        share = f"{r['messages_per_s'] / ceiling:.0%}" if ceiling and r["messages_per_s"] else "–"
        lines.append(f"| {r['devices']} | {r['sent']} | {r['acked']} | {r['stored']} | {r['lost']} | {r['messages_per_s']} | "
                     f"{share} | {r['latency_ms_p50']} | {r['latency_ms_p99']} | {r['schedule_lag_ms_p99']} |")
    if result["mosquitto"]:
        m = result["mosquitto"]
        lines += ["", f"Mosquitto's own ceiling in the same run (mosquitto_pub -l → mosquitto_sub, QoS 1, "
                  f"{m['payload_bytes']:,}-byte payloads): {m['messages_per_s']} msg/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
