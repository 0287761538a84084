"""The device runtime's speed per backend, and alert delivery at fleet scale.

1. Throughput: 10 minutes of MIT-BIH record 233 through Monitor(ecg_beat) in 1-s chunks, one thread,
   per backend, as a multiple of real time.
2. Fleet: N simulated devices (benchmarks.fleet: one MQTT 5 connection each, QoS 1) publish one alert with
   its 3-s excerpt and trace per second to a loopback Mosquitto; `heartsight clinician listen --processes P`
   stores them, P listener processes in one shared subscription, in PostgreSQL (a scratch schema of
   HEARTSIGHT_BENCH_POSTGRES, default the tests' database) or, if it cannot be reached, SQLite. Lost and
   deduplicated alerts, latency from publishing to the commit, and the stored rate.
3. Capacity: what the clinician side can store when nothing else runs. With the listeners stopped, the simulated
   devices queue CAPACITY_ALERTS alerts at the broker for the listeners' persistent sessions; then the listeners
   start and store them. (10,000 devices at one alert/s offer 10,000 alerts/s, so the fleet rows cannot show more.)
4. Mosquitto's own ceiling in the same run, with its bundled mosquitto_pub/mosquitto_sub (QoS 1, the same
   payload), for the ratio.

Fleet and capacity runs also say where the CPU went, per stored alert: the listener processes, Mosquitto and all of
PostgreSQL's processes (from /proc), the simulator (its own count), and the rest of the machine's busy time (other).

Writes benchmarks/results/stream.json and stream.md. Usage: python -m benchmarks.stream [DATA_DIR] [--fleet-only]
[--devices 1000,5000,10000] [--seconds S] [--listeners P] [--capacity N]; --fleet-only keeps the last throughput
figures, --capacity 0 skips the capacity run.
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
LISTENERS = 2  # listener processes, one per core: 1, 2 and 3 stored 3,350, 6,020 and 5,680 alerts/s here
SIMULATOR_PROCESSES = 2
DRAIN_S = 300  # after the fleet's last alert, how long the listeners may take to store the rest
CAPACITY_ALERTS = 50_000  # queued for the capacity run, by CAPACITY_DEVICES devices
CAPACITY_DEVICES = 5000
POLL_S = 0.5  # how often the store is counted while the listeners work (a COUNT(*) costs the database CPU too)
CEILING_MESSAGES = 20_000
CEILING_RUNS = 5
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


def _start_listeners(broker: LocalBroker, db: str, processes: int, log: Path) -> subprocess.Popen:
    """`heartsight clinician listen --processes P` in a shared group: the same client ids, so the same broker sessions,
    at every start."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sdk.cli", "clinician", "listen", "--broker", broker.url, "--db",
                                 db, "--shared", "bench", "--processes", str(processes)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=out, text=True)


def _listeners(broker: LocalBroker, db: str, processes: int, log: Path) -> subprocess.Popen:
    """_start_listeners, once they store: a probe alert is published until one listener has it (a shared subscription
    keeps nothing for a group with no member yet)."""
    listening = _start_listeners(broker, db, processes, log)
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


def _stop_listeners(listening: subprocess.Popen, log: Path) -> dict:
    """SIGTERM (they acknowledge what they stored, then exit); their summed counts."""
    if listening.poll() is None:
        listening.send_signal(signal.SIGTERM)
    out, _ = listening.communicate(timeout=60)
    if listening.returncode != 0:
        raise HeartSightError(f"the listeners failed (exit {listening.returncode}): {log.read_text()[-1000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _fleet(devices: int, seconds: int, listeners: int, db: str, work: Path) -> dict:
    _raise_descriptor_limit(devices)
    log = work / "listeners.log"
    with LocalBroker(work, BROKER_CONFIG) as broker, Store(db) as store:
        listening = _listeners(broker, db, listeners, log)
        cpu = {}
        try:
            fleet = run_fleet(BrokerConfig(broker.url), devices, seconds, SIMULATOR_PROCESSES,
                              started=lambda: cpu.update(before=_cpu_snapshot(broker, listening)))
            finished = time.monotonic()
            all_stored = wait_until(lambda: store.count() - 1 >= fleet["sent"] or listening.poll() is not None, DRAIN_S,
                                    POLL_S)
            drain_s = time.monotonic() - finished
            cpu["after"] = _cpu_snapshot(broker, listening)
            arrivals = _fleet_arrivals(store)
        finally:
            counts = _stop_listeners(listening, log)
    latencies = [(received - created).total_seconds() * 1000 for created, received in arrivals]
    sent = fleet["sent"]
    return {"devices": devices, "alerts_per_device_s": 1, "seconds": seconds, "listeners": listeners,
            "sent": sent, "acked": fleet["acked"], "stored": len(arrivals), "lost": sent - len(arrivals),
            "duplicates_deduplicated": counts["duplicates"], "all_stored_within_s": round(drain_s, 1)
            if all_stored else None, "schedule_lag_ms_p99": fleet["schedule_lag_ms_p99"],
            **_stored_rate(arrivals),
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
            "cpu_us_per_alert": _cpu_per_alert(cpu["before"], cpu["after"], fleet["cpu_s"], len(arrivals))}


def _capacity(alerts: int, listeners: int, db: str, work: Path) -> dict:
    """The clinician side's own capacity: `alerts` queued at the broker for the listeners' sessions while they are
    stopped, then stored with nothing else running. The rate is over the span of the commits, so the listeners'
    start-up is not counted; so is the CPU, from the moment a tenth of the alerts are stored."""
    seconds = max(1, alerts // CAPACITY_DEVICES)
    _raise_descriptor_limit(CAPACITY_DEVICES)
    log = work / "listeners.log"
    with LocalBroker(work, BROKER_CONFIG) as broker, Store(db) as store:
        _stop_listeners(_listeners(broker, db, listeners, log), log)  # their sessions stay at the broker
        queued = run_fleet(BrokerConfig(broker.url), CAPACITY_DEVICES, seconds, SIMULATOR_PROCESSES)
        listening = _start_listeners(broker, db, listeners, log)
        try:
            stored = lambda: store.count() - 1 >= queued["sent"] or listening.poll() is not None  # noqa: E731
            wait_until(lambda: store.count() - 1 >= queued["sent"] // 10 or listening.poll() is not None, DRAIN_S,
                       POLL_S)
            before, stored_before = _cpu_snapshot(broker, listening), store.count() - 1
            all_stored = wait_until(stored, DRAIN_S, POLL_S)
            after, stored_after = _cpu_snapshot(broker, listening), store.count() - 1
            arrivals = _fleet_arrivals(store)
        finally:
            counts = _stop_listeners(listening, log)
    return {"alerts": queued["sent"], "acked": queued["acked"], "listeners": listeners, "stored": len(arrivals),
            "lost": queued["sent"] - len(arrivals), "duplicates_deduplicated": counts["duplicates"],
            "all_stored": all_stored, **_stored_rate(arrivals),
            "cpu_us_per_alert": _cpu_per_alert(before, after, 0.0, stored_after - stored_before)}


def _fleet_arrivals(store: Store) -> list[tuple[datetime, datetime]]:
    """(published, stored) of the simulated devices' alerts: not the probe, which keeps bench_alert's placeholder
    time."""
    arrivals = [(_utc(created), _utc(received)) for created, received in store.arrivals()]
    return [(created, received) for created, received in arrivals if created.year != 2000]


def _stored_rate(arrivals: list[tuple[datetime, datetime]]) -> dict:
    """Alerts per second over the span of their commits, and alerts per commit (a commit's alerts share its time)."""
    received = sorted(r for _, r in arrivals)
    span_s = (received[-1] - received[0]).total_seconds() if len(received) > 1 else 0
    return {"messages_per_s": round(len(received) / span_s, 1) if span_s else None,
            "alerts_per_commit": round(len(received) / len(set(received)), 1) if received else None}


def _cpu_snapshot(broker: LocalBroker, listening: subprocess.Popen) -> dict[str, float]:
    """CPU seconds so far of the listener processes, Mosquitto, every PostgreSQL process, the kernel's interrupt
    handling and the whole machine."""
    postgres = [pid for pid in _pids() if _read(f"/proc/{pid}/comm").strip() == "postgres"]
    return {"listeners": sum(map(_cpu_s, _descendants(listening.pid))), "mosquitto": _cpu_s(broker.proc.pid),
            "postgresql": sum(map(_cpu_s, postgres)), **_machine_s()}


def _cpu_per_alert(before: dict, after: dict, simulator_s: float, alerts: int) -> dict:
    """µs of CPU per stored alert by part; other: the machine's busy time that none of them used."""
    used = {part: after[part] - before[part] for part in ("listeners", "postgresql", "mosquitto", "interrupts")}
    used["simulator"] = simulator_s
    used["other"] = max(0.0, after["machine"] - before["machine"] - sum(used.values()))
    return {part: round(seconds / alerts * 1e6, 1) for part, seconds in used.items()} if alerts else {}


def _pids() -> list[int]:
    return [int(path.name) for path in Path("/proc").iterdir() if path.name.isdigit()]


def _read(path: str) -> str:
    """A /proc file's text; empty if its process has gone."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process and of the children it has waited for (/proc/PID/stat: utime, stime, cutime,
    cstime); 0 if it has gone."""
    fields = _read(f"/proc/{pid}/stat").rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def _descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    children: dict[int, list[int]] = {}
    for child in _pids():
        fields = _read(f"/proc/{child}/stat").rpartition(")")[2].split()
        if fields:
            children.setdefault(int(fields[1]), []).append(child)
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _machine_s() -> dict[str, float]:
    """CPU seconds all cores have spent busy since boot, and in interrupt handlers (the kernel's share of loopback
    networking, which no process is charged for): /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, _read("/proc/stat").split("\n")[0].split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return {"machine": (user + nice + system + irq + softirq + steal) / tick, "interrupts": (irq + softirq) / tick}


def _mosquitto_ceiling(work: Path) -> dict:
    """Mosquitto's own rate, best of CEILING_RUNS: one run takes about a second, so a moment's load elsewhere on the
    machine shows in it, and a ceiling measured too low would flatter every share of it."""
    payload = to_bytes(bench_alert("dev-0000", 0)).decode()
    lines = work / "payloads.txt"
    lines.write_text((payload + "\n") * CEILING_MESSAGES)
    rates = []
    with LocalBroker(work, BROKER_CONFIG) as broker:
        for _ in range(CEILING_RUNS):
            sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-h", "127.0.0.1", "-q", "1", "-t",
                                    "ceiling", "-C", str(CEILING_MESSAGES)], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            started = time.perf_counter()
            with open(lines) as stdin:
                subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-h", "127.0.0.1", "-q", "1", "-t", "ceiling",
                                "-l"], stdin=stdin, check=True)
            sub.wait(120)
            rates.append(round(CEILING_MESSAGES / (time.perf_counter() - started), 1))
    return {"messages": CEILING_MESSAGES, "payload_bytes": len(payload), "runs_messages_per_s": rates,
            "messages_per_s": max(rates)}


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", help="folder holding mitdb/ (default $HEARTSIGHT_DATA)")
    parser.add_argument("--fleet-only", action="store_true", help="only the fleet and Mosquitto's ceiling")
    parser.add_argument("--devices", default=",".join(map(str, FLEET_SIZES)), help="fleet sizes, comma-separated")
    parser.add_argument("--seconds", type=int, default=FLEET_SECONDS, help="how long each fleet publishes")
    parser.add_argument("--listeners", type=int, default=LISTENERS, help="listener processes (shared subscription)")
    parser.add_argument("--capacity", type=int, default=CAPACITY_ALERTS, help="alerts queued for the capacity run "
                                                                              "(0: skip it)")
    args = parser.parse_args(argv)
    args.devices = [int(n) for n in args.devices.split(",")]
    return args


def main(argv: list[str]) -> None:
    args = _arguments(argv)
    torch.set_num_threads(1)
    json_path, md_path = RESULTS / "stream.json", RESULTS / "stream.md"
    result = {"machine": describe(), "throughput": [], "fleet": [], "capacity": None, "mosquitto": None}
    if args.fleet_only:  # the last throughput figures, with the machine they were measured on
        previous = json.loads(json_path.read_text()) if json_path.exists() else {}
        result["throughput"] = previous.get("throughput", [])
        result["throughput_machine"] = previous.get("throughput_machine", previous.get("machine"))
    else:
        result["throughput_machine"] = result["machine"]
        for backend in ("torch", "onnxruntime", "c"):
            result["throughput"].append(_monitor_throughput(backend, args.data_dir))
            json_path.write_text(json.dumps(result, indent=1) + "\n")
    if mosquitto_binary() is None or not shutil.which("mosquitto_pub"):
        raise HeartSightError("the fleet benchmark needs Mosquitto and its clients: apt-get install -y mosquitto "
                              "mosquitto-clients")
    result["load_average_before"] = [round(load, 2) for load in os.getloadavg()]  # anything else running?
    with tempfile.TemporaryDirectory() as work:  # the broker's own ceiling first: the fleets may not finish
        result["mosquitto"] = _mosquitto_ceiling(Path(work))
    runs = [("fleet", devices, lambda db, work, n=devices: _fleet(n, args.seconds, args.listeners, db, work))
            for devices in args.devices]
    if args.capacity:
        runs.append(("capacity", None, lambda db, work: _capacity(args.capacity, args.listeners, db, work)))
    for kind, devices, run in runs:
        with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
            try:
                db = stack.enter_context(scratch_schema(POSTGRES, "heartsight_bench"))
            except HeartSightError as exc:
                print(f"{exc}; storing in SQLite instead", file=sys.stderr)
                db = str(Path(work) / "fleet.sqlite")
            result["store"] = "PostgreSQL" if db.startswith("postgresql://") else "SQLite"
            try:
                outcome = run(db, Path(work))
            except Exception as exc:  # report the ceiling we hit rather than nothing
                outcome = {"devices": devices, "error": f"{type(exc).__name__}: {exc}"}
        if kind == "fleet":
            result["fleet"].append(outcome)
        else:
            result["capacity"] = outcome
        print(json.dumps(outcome), flush=True)
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        md_path.write_text(_markdown(result))
    print(f"wrote {json_path} and {md_path}")


def _markdown(result: dict) -> str:
    measured_on = result.get("throughput_machine") or result["machine"]
    earlier = f" (an earlier run, on {measured_on})" if measured_on != result["machine"] else ""
    lines = ["# Streaming benchmark", "", f"Machine: {result['machine']}. Device runtime on one thread{earlier}: "
             f"{THROUGHPUT_SECONDS // 60} minutes of MIT-BIH record 233 through Monitor(ecg_beat) in 1-s chunks.", "",
             "| backend | beats | wall s | × real time |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['beats']} | {r['wall_s']} | {r['x_real_time']} |" for r in result["throughput"]]
    ceiling = result["mosquitto"]["messages_per_s"] if result["mosquitto"] else None
    share = lambda rate: f"{rate / ceiling:.0%}" if ceiling and rate else "–"  # noqa: E731
    seconds = {r["seconds"] for r in result["fleet"] if "seconds" in r}
    listeners = {r["listeners"] for r in [*result["fleet"], result.get("capacity") or {}] if "listeners" in r}
    lines += ["", f"Fleet: N simulated devices (benchmarks/fleet.py: one MQTT 5 connection each, QoS 1, the "
              f"Publisher's properties, {SIMULATOR_PROCESSES} processes speaking MQTT on plain sockets) each publish "
              f"one alert per second with a 3-s excerpt and trace, for {'/'.join(map(str, seconds))} s, to a loopback "
              f"Mosquitto; `heartsight clinician listen --processes {'/'.join(map(str, listeners))}` stores them in "
              f"{result.get('store', '–')}, its processes in one shared subscription, each storing the alerts that "
              "came before its socket ran dry (at most 200) in one transaction and acknowledging them to the broker "
              "after its commit. Lost: sent but not in the store. Deduplicated: redeliveries the store already had. "
              "Latency: from publishing to the transaction that stored the alert (the received_at it stamps as it "
              "starts; a full batch of 200 commits up to ~25 ms later). Stored rate: alerts over the span of their "
              "commits, and as a share of Mosquitto's ceiling. Schedule lag: how late the simulator published (large "
              "means the offered load fell short). All on this one machine, whose load average (1, 5, 15 min) "
              f"before the runs was {', '.join(map(str, result.get('load_average_before', [])))}.", "",
              "| devices | sent | stored | lost | deduplicated | p50 ms | p99 ms | stored msg/s | of Mosquitto's "
              "ceiling | alerts per commit | all stored after last publish, s | schedule lag p99 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["fleet"]:
        if "error" in r:
            lines.append(f"| {r['devices']} | failed: {r['error']} | | | | | | | | | | |")
            continue
        lines.append(f"| {r['devices']} | {r['sent']} | {r['stored']} | {r['lost']} | {r['duplicates_deduplicated']} "
                     f"| {r['latency_ms_p50']} | {r['latency_ms_p99']} | {r['messages_per_s']} | "
                     f"{share(r['messages_per_s'])} | {r['alerts_per_commit']} | "
                     f"{r['all_stored_within_s'] if r['all_stored_within_s'] is not None else 'no'} | "
                     f"{r['schedule_lag_ms_p99']} |")
    capacity = result.get("capacity")
    if capacity and "error" in capacity:
        lines += ["", f"Capacity run failed: {capacity['error']}"]
    elif capacity:
        lines += ["", f"Capacity of the clinician side: with the listeners stopped, {CAPACITY_DEVICES:,} simulated "
                  f"devices queued {capacity['alerts']:,} alerts at the broker for the listeners' sessions; then "
                  f"{capacity['listeners']} listener processes stored them while nothing else ran. The 10,000-device "
                  f"fleet offers at most 10,000 alerts/s ({share(10_000)} of the ceiling), so its row cannot show "
                  "more than that.", "",
                  "| alerts queued | stored | lost | deduplicated | stored msg/s | of Mosquitto's ceiling | alerts per "
                  "commit |", "|---|---|---|---|---|---|---|",
                  f"| {capacity['alerts']} | {capacity['stored']} | {capacity['lost']} | "
                  f"{capacity['duplicates_deduplicated']} | {capacity['messages_per_s']} | "
                  f"{share(capacity['messages_per_s'])} | {capacity['alerts_per_commit']} |"]
    runs = [(f"fleet of {r['devices']}", r) for r in result["fleet"] if r.get("cpu_us_per_alert")]
    runs += [("capacity", capacity)] if capacity and capacity.get("cpu_us_per_alert") else []
    if runs:
        parts = ("listeners", "postgresql", "mosquitto", "simulator", "interrupts", "other")
        lines += ["", "Where the CPU went, µs per stored alert: the listener processes, all of PostgreSQL's processes "
                  "and Mosquitto (from /proc), the simulator (its own count; none in the capacity run, which counts "
                  "from when a tenth of the alerts were stored), the kernel's interrupt handling (mostly the loopback "
                  "traffic) and the rest of the machine's busy time (other: this benchmark's own polling, background "
                  "services, whatever else ran). At 10,000 alerts/s, 200 µs per alert is both cores.", "",
                  "| run | listeners | PostgreSQL | Mosquitto | simulator | interrupts | other | total |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in runs:
            cpu = r["cpu_us_per_alert"]
            lines.append(f"| {name} | " + " | ".join(f"{cpu[part]:.0f}" for part in parts)
                         + f" | {sum(cpu.values()):.0f} |")
    if result["mosquitto"]:
        m = result["mosquitto"]
        lines += ["", f"Mosquitto's own ceiling in the same run (mosquitto_pub -l → mosquitto_sub, QoS 1, "
                  f"{m['payload_bytes']:,}-byte payloads, {m['messages']:,} messages, the best of "
                  f"{', '.join(map(str, m.get('runs_messages_per_s', [])))}): {m['messages_per_s']} msg/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
