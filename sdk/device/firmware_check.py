"""`heartsight verify-firmware DIR --monitor RECORD`: the export's C device path (hs_monitor with its tables, a host
build; with --qemu also built for the Cortex-M4 and run under QEMU, firmware_export.monitor_target) against the Python Monitor running the same
export on the c backend, fed the same one-second chunks of a recording.

Here, not in firmware_export, because it runs the Python Monitor (firmware_export may not import sdk.device).
Compared per run: the beats (same R peak within one model-rate sample, ± round(fs / 128) sensor samples, and the same
label) and the alerts (same type, sample and label, confidence within 1e-6); hs_monitor_overflows is reported with
them (0: the build's fixed sizes held everything).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from firmware_export.monitor_host import CODE, CMonitor, build_monitor_library, config_for
from firmware_export.monitor_tables import shipped_rates
from firmware_export.monitor_target import run_monitor_qemu
from firmware_export.target import toolchain_missing
from sdk.data.preprocess import ECG_FS
from sdk.data.records import check_fs, read_database_record, read_input
from sdk.device.analyze import select_channels
from sdk.device.monitor import AlertEvent, BeatEvent, Monitor
from sdk.errors import HeartSightError

CONFIDENCE_TOLERANCE = 1e-6
START = datetime(2000, 1, 1, tzinfo=timezone.utc)  # alert times play no part in the comparison
MITDB_NAME = re.compile(r"^\d{3}$")  # 100 ... 234


def read_signal(record: str, fs: float | None = None, data_root=None) -> tuple[np.ndarray, float, str]:
    """(the ECG lead the beat models read, its rate, a name): an MIT-BIH record by name (100), or a file
    sdk.data.records.read_input reads (a WFDB record path, .npy or .csv with fs)."""
    if fs is not None:
        check_fs(fs)
    if MITDB_NAME.match(str(record)) and not Path(record).exists():
        recording = read_database_record("mitdb", record, data_root)
        if fs is not None and abs(fs - recording.fs) > 1e-6:
            raise HeartSightError(f"mitdb/{record} is sampled at {recording.fs:g} Hz, not --fs {fs:g}; drop --fs")
        name = f"mitdb/{record}"
    else:
        recording = read_input(record, fs)
        name = str(record)
    return np.asarray(select_channels(recording, "beat", None), np.float32), float(recording.fs), name


def check_monitor(export_dir: str | Path, record: str, seconds: float | None = None, fs: float | None = None,
                  data_root=None, qemu: bool = False) -> dict:
    """Stream the record (its first `seconds`) through the C device path and the Python Monitor; returns the runs
    (host, and qemu when asked) with their counts and whether each equals the Python Monitor."""
    if qemu and toolchain_missing():
        raise HeartSightError(toolchain_missing())  # before any work
    if seconds is not None and (not np.isfinite(seconds) or seconds <= 0):
        raise HeartSightError(f"--seconds must be a positive number of seconds, got {seconds:g}")
    rates = shipped_rates(export_dir)
    x, fs, name = read_signal(record, fs, data_root)
    if fs not in rates:
        raise HeartSightError(f"{name} is sampled at {fs:g} Hz but {export_dir}'s device path has tables for "
                              f"{', '.join(f'{r:g}' for r in rates)} Hz only; export it with --sensor-fs {fs:g}")
    if seconds is not None:
        x = x[: int(round(seconds * fs))]
    if not len(x):
        raise HeartSightError(f"{name} has no samples to compare")
    library = build_monitor_library(export_dir, rates)
    c = CMonitor(library, fs, config=config_for(library, fs))
    if c.status != CODE["OK"]:
        raise HeartSightError(f"hs_monitor_init refused the tables for {fs:g} Hz (status {c.status}); export the model "
                              "again with --sensor-fs")
    chunk = c.max_chunk  # one second: the longest chunk the C takes
    chunks = [x[i: i + chunk] for i in range(0, len(x), chunk)]
    python = python_events(export_dir, fs, chunks)
    c_events = []
    for k, part in enumerate(chunks):
        c_events += c.feed(part)
        if c.status not in (CODE["OK"], CODE["HELD"]):
            raise HeartSightError(f"hs_monitor_feed returned {c.status} for the chunk at sample {k * chunk} "
                                  "(the codes are in hs_monitor.h)")
    c_events += c.finish()
    runs = {"host": compare(python, c_events, c.overflows, fs)}
    if qemu:
        qemu_result = run_monitor_qemu(export_dir, x, fs)
        events = [(kind, {**e, "sample": e["sample_index"]} if kind == "alert" else e)
                  for kind, e in qemu_result["events"]]  # the firmware prints alerts as the wire does: sample_index
        runs["qemu"] = compare(python, events, qemu_result["summary"]["overflows"], fs)
    return {"directory": str(export_dir), "record": name, "fs": fs, "seconds": round(len(x) / fs, 3),
            "sensor_fs": rates, "chunk": chunk, "runs": runs, "equal": all(r["equal"] for r in runs.values())}


def python_events(export_dir: str | Path, fs: float, chunks: list[np.ndarray]) -> dict:
    """The Python Monitor's beats [(sample, label)] and alerts [(type, sample, label, confidence)], fed the chunks."""
    monitor = Monitor(model=export_dir, backend="c", fs=fs, start_time=START, stream_id="verify-firmware")
    events = [event for part in chunks for event in monitor.feed(part)] + monitor.finish()
    return {"beats": [(e.sample, e.label) for e in events if isinstance(e, BeatEvent)],
            "alerts": [(e.alert.type, e.alert.sample_index, e.alert.label, e.alert.confidence)
                       for e in events if isinstance(e, AlertEvent)]}


def compare(python: dict, c_events: list, overflows: int, fs: float) -> dict:
    """Counts of one run: beats matched (R peak within one model-rate sample) and their labels, alerts matched."""
    tolerance = int(round(fs / ECG_FS))
    c_beats = [(e["sample"], e["label"]) for kind, e in c_events if kind == "beat"]
    c_alerts = [(e["type"], e["sample"], e["label"], e["confidence"]) for kind, e in c_events if kind == "alert"]
    pairs, i, j = [], 0, 0
    while i < len(python["beats"]) and j < len(c_beats):  # both in sample order
        p, c = python["beats"][i][0], c_beats[j][0]
        if abs(p - c) <= tolerance:
            pairs.append((python["beats"][i], c_beats[j]))
            i, j = i + 1, j + 1
        elif p < c:
            i += 1
        else:
            j += 1
    unused = list(c_alerts)
    alerts_equal = 0
    for kind, sample, label, confidence in python["alerts"]:
        match = next((a for a in unused if a[:3] == (kind, sample, label)
                      and abs(a[3] - confidence) <= CONFIDENCE_TOLERANCE), None)
        if match is not None:
            unused.remove(match)
            alerts_equal += 1
    result = {"beats": len(python["beats"]), "c_beats": len(c_beats), "beats_equal": len(pairs),
              "labels_equal": sum(p[1] == c[1] for p, c in pairs), "alerts": len(python["alerts"]),
              "c_alerts": len(c_alerts), "alerts_equal": alerts_equal, "overflows": int(overflows),
              "sample_tolerance": tolerance}
    result["equal"] = (result["beats_equal"] == result["beats"] == result["c_beats"]
                       and result["labels_equal"] == result["beats"]
                       and result["alerts_equal"] == result["alerts"] == result["c_alerts"])
    return result
