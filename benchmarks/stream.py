"""The device runtime's speed per backend, and alert delivery at fleet scale.

1. Throughput: 10 minutes of MIT-BIH record 233 through Monitor(ecg_beat) in 1-s chunks, one thread,
   per backend, as a multiple of real time.
2. Fleet: N simulated devices (benchmarks.fleet: one MQTT 5 connection each, QoS 1) publish one alert with
   its 3-s excerpt and trace per second to a loopback Mosquitto; `heartsight clinician listen --processes P`
   stores them, P listener processes in one shared subscription, in PostgreSQL (a scratch schema of
   HEARTSIGHT_BENCH_POSTGRES, default the tests' database) or, if it cannot be reached, SQLite. Lost and
   deduplicated alerts, latency from publishing to the commit, and the stored rate.
3. Mosquitto's own ceiling in the same run, with its bundled mosquitto_pub/mosquitto_sub (QoS 1, the same
   payload), for the ratio.

Writes benchmarks/results/stream.json and stream.md. Usage: python -m benchmarks.stream [DATA_DIR] [--fleet-only]
[--devices 1000,5000,10000] [--seconds S] [--listeners P]; --fleet-only keeps the last throughput figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import torch
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.fleet import SITE, bench_alert, run_fleet
from benchmarks.machine import describe
from sdk.clinician.store import Store, scratch_schema
from sdk.data.records import read_database_record
from sdk.demo.broker import LocalBroker, mosquitto_binary, wait_until
from sdk.device.monitor import BeatEvent, Monitor
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import to_bytes
from sdk.stream.topics import alerts_topic

THROUGHPUT_SECONDS = 600
FLEET_SIZES = (1000, 5000, 10000)
FLEET_SECONDS = 10
LISTENERS = 2  # listener processes: one per core
SIMULATOR_PROCESSES = 2
DRAIN_S = 300  # after the fleet's last alert, how long the listeners may take to store the rest
CEILING_MESSAGES = 20_000
# Mosquitto takes any number of connections, with a descriptor each (the soft limit is raised for it and the simulator)
BROKER_CONFIG = "allow_anonymous true\nmax_connections -1"
POSTGRES = os.environ.get("HEARTSIGHT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]
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


def _raise_descriptor_limit(devices: int) -> None:
    """One socket per simulated device, in the simulator and in Mosquitto (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = devices + 1000
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise HeartSightError(f"{devices:,} simulated devices need {needed:,} open files, but the hard limit is "
                                  f"{hard:,}: raise it (ulimit -Hn, or LimitNOFILE for a service) and run again")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _listeners(broker: LocalBroker, db: str, processes: int, log: Path) -> subprocess.Popen:
    """`heartsight clinician listen --processes P` in a shared group, once it stores: a probe alert is published until
    one listener has it (a shared subscription keeps nothing for a group with no member yet)."""
    with open(log, "ab") as out:
        listening = subprocess.Popen([sys.executable, "-m", "sdk.cli", "clinician", "listen", "--broker", broker.url,
                                      "--db", db, "--shared", "bench", "--processes", str(processes)],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=out, text=True)
    probe = bench_alert("probe", 0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        with Store(db) as store:
            stored = lambda: store.count(device="probe") == 1  # noqa: E731
            for _ in range(60):
                client.publish(alerts_topic(SITE, "probe"), to_bytes(probe), qos=1)
                if wait_until(lambda: stored() or listening.poll() is not None, 1) and stored():
                    return listening
                if listening.poll() is not None:
                    break
    finally:
        client.loop_stop()
        client.disconnect()
    listening.kill()
    raise HeartSightError(f"the listeners did not store a probe alert within 60 s: {log.read_text()[-1000:]}")


def _fleet(devices: int, seconds: int, listeners: int, db: str, work: Path) -> dict:
    _raise_descriptor_limit(devices)
    with LocalBroker(work, BROKER_CONFIG) as broker:
        listening = _listeners(broker, db, listeners, work / "listeners.log")
        try:
            fleet = run_fleet(BrokerConfig(broker.url), devices, seconds, SIMULATOR_PROCESSES)
            finished = time.monotonic()
            with Store(db) as store:
                all_stored = wait_until(lambda: store.count() - 1 >= fleet["sent"] or listening.poll() is not None,
                                        DRAIN_S)
                drain_s = time.monotonic() - finished
                arrivals = [(_utc(created), _utc(received)) for created, received in store.arrivals()]
        finally:
            if listening.poll() is None:
                listening.send_signal(signal.SIGTERM)
            out, _ = listening.communicate(timeout=60)
    if listening.returncode != 0:
        raise HeartSightError(f"the listeners failed (exit {listening.returncode}): "
                              f"{(work / 'listeners.log').read_text()[-1000:]}")
    counts = json.loads(out.strip().splitlines()[-1])
    arrivals = [(c, r) for c, r in arrivals if c.year != 2000]  # the probe, with bench_alert's placeholder time
    latencies = [(received - created).total_seconds() * 1000 for created, received in arrivals]
    received = sorted(r for _, r in arrivals)
    span_s = (received[-1] - received[0]).total_seconds() if len(received) > 1 else 0
    sent = fleet["sent"]
    return {"devices": devices, "alerts_per_device_s": 1, "seconds": seconds, "listeners": listeners,
            "sent": sent, "acked": fleet["acked"], "stored": len(arrivals), "lost": sent - len(arrivals),
            "duplicates_deduplicated": counts["duplicates"], "all_stored_within_s": round(drain_s, 1)
            if all_stored else None, "schedule_lag_ms_p99": fleet["schedule_lag_ms_p99"],
            "messages_per_s": round(len(arrivals) / span_s, 1) if span_s else None,
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1) if latencies else None}


def _mosquitto_ceiling(work: Path) -> dict:
    payload = to_bytes(bench_alert("dev-0000", 0)).decode()
    lines = work / "payloads.txt"
    lines.write_text((payload + "\n") * CEILING_MESSAGES)
    with LocalBroker(work, BROKER_CONFIG) as broker:
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


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", help="folder holding mitdb/ (default $HEARTSIGHT_DATA)")
    parser.add_argument("--fleet-only", action="store_true", help="only the fleet and Mosquitto's ceiling")
    parser.add_argument("--devices", default=",".join(map(str, FLEET_SIZES)), help="fleet sizes, comma-separated")
    parser.add_argument("--seconds", type=int, default=FLEET_SECONDS, help="how long each fleet publishes")
    parser.add_argument("--listeners", type=int, default=LISTENERS, help="listener processes (shared subscription)")
    args = parser.parse_args(argv)
    args.devices = [int(n) for n in args.devices.split(",")]
    return args


def main(argv: list[str]) -> None:
    args = _arguments(argv)
    torch.set_num_threads(1)
    json_path, md_path = RESULTS / "stream.json", RESULTS / "stream.md"
    result = {"machine": describe(), "throughput": [], "fleet": [], "mosquitto": None}
    if args.fleet_only:
        result["throughput"] = json.loads(json_path.read_text())["throughput"] if json_path.exists() else []
    else:
        for backend in ("torch", "onnxruntime", "c"):
            result["throughput"].append(_monitor_throughput(backend, args.data_dir))
            json_path.write_text(json.dumps(result, indent=1) + "\n")
    if mosquitto_binary() is None or not shutil.which("mosquitto_pub"):
        raise HeartSightError("the fleet benchmark needs Mosquitto and its clients: apt-get install -y mosquitto "
                              "mosquitto-clients")
    with tempfile.TemporaryDirectory() as work:  # the broker's own ceiling first: the fleets may not finish
        result["mosquitto"] = _mosquitto_ceiling(Path(work))
    for devices in args.devices:
        with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
            try:
                db = stack.enter_context(scratch_schema(POSTGRES, "heartsight_bench"))
            except HeartSightError as exc:
                print(f"{exc}; storing in SQLite instead", file=sys.stderr)
                db = str(Path(work) / "fleet.sqlite")
            result["store"] = "PostgreSQL" if db.startswith("postgresql://") else "SQLite"
            try:
                result["fleet"].append(_fleet(devices, args.seconds, args.listeners, db, Path(work)))
            except Exception as exc:  # report the ceiling we hit rather than nothing
                result["fleet"].append({"devices": devices, "error": f"{type(exc).__name__}: {exc}"})
        print(json.dumps(result["fleet"][-1]), flush=True)
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        md_path.write_text(_markdown(result))
    print(f"wrote {json_path} and {md_path}")


def _markdown(result: dict) -> str:
    lines = ["# Streaming benchmark", "", f"Machine: {result['machine']}. Device runtime on one thread: "
             f"{THROUGHPUT_SECONDS // 60} minutes of MIT-BIH record 233 through Monitor(ecg_beat) in 1-s chunks.", "",
             "| backend | beats | wall s | × real time |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['beats']} | {r['wall_s']} | {r['x_real_time']} |" for r in result["throughput"]]
    ceiling = result["mosquitto"]["messages_per_s"] if result["mosquitto"] else None
    seconds = {r["seconds"] for r in result["fleet"] if "seconds" in r}
    listeners = {r["listeners"] for r in result["fleet"] if "listeners" in r}
    lines += ["", f"Fleet: N simulated devices (one MQTT 5 connection each, QoS 1, {SIMULATOR_PROCESSES} processes) "
              f"each publish one alert per second with a 3-s excerpt and trace, for {'/'.join(map(str, seconds))} s, to a "
              f"loopback Mosquitto; `heartsight clinician listen --processes {'/'.join(map(str, listeners))}` stores "
              f"them in {result.get('store', '–')}, its processes in one shared subscription, each storing a network "
              "round's alerts in one transaction and acknowledging them to the broker after its commit. Lost: sent "
              "but not in the store. Deduplicated: redeliveries the store already had. Latency: publishing to the "
              "commit. Stored rate: alerts over the span of their commits, and as a share of Mosquitto's ceiling. "
              "Schedule lag: how late the simulator published (large means the offered load fell short). All on "
              "this one machine.", "",
              "| devices | sent | stored | lost | deduplicated | p50 ms | p99 ms | stored msg/s | of Mosquitto's "
              "ceiling | all stored after last publish, s | schedule lag p99 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["fleet"]:
        if "error" in r:
            lines.append(f"| {r['devices']} | failed: {r['error']} | | | | | | | | | |")
            continue
        share = f"{r['messages_per_s'] / ceiling:.0%}" if ceiling and r["messages_per_s"] else "–"
        lines.append(f"| {r['devices']} | {r['sent']} | {r['stored']} | {r['lost']} | {r['duplicates_deduplicated']} "
                     f"| {r['latency_ms_p50']} | {r['latency_ms_p99']} | {r['messages_per_s']} | {share} | "
                     f"{r['all_stored_within_s'] if r['all_stored_within_s'] is not None else 'no'} | "
                     f"{r['schedule_lag_ms_p99']} |")
    if result["mosquitto"]:
        m = result["mosquitto"]
        lines += ["", f"Mosquitto's own ceiling in the same run (mosquitto_pub -l → mosquitto_sub, QoS 1, "
                  f"{m['payload_bytes']:,}-byte payloads): {m['messages_per_s']} msg/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
