"""The C device path (firmware_export/runtime/hs_monitor.c with an export's tables) against the Python Monitor on every
MIT-BIH DS2 record, in full, at the records' own 360 Hz: what `heartsight verify-firmware DIR --monitor RECORD` checks.

The export is the zoo's ecg_beat_wcam int8 export with its device path for 360 Hz (what `heartsight export
--sensor-fs 360` adds), copied to a temporary directory; or --export DIR, an export that ships one. Both monitors read
lead MLII in the same one-second chunks (sdk.device.firmware_check.check_monitor).

    python -m benchmarks.monitor_c_equality [--data-dir DIR] [--export DIR]
        # writes benchmarks/results/monitor_c_equality.{md,json}
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from firmware_export.monitor_tables import write_monitor
from models.registry import ZOO_DIR
from sdk.data.mitdb import DS2
from sdk.data.records import data_dir, database_path, fetch_command
from sdk.device.firmware_check import check_monitor
from sdk.errors import HeartSightError

RESULTS = Path(__file__).parent / "results"
MODEL = "ecg_beat_wcam"
FS = 360.0
COUNTS = ("beats", "c_beats", "beats_equal", "labels_equal", "alerts", "c_alerts", "alerts_equal", "overflows")


def evaluate(export: Path, record: str, data_root: Path) -> dict:
    start = time.perf_counter()
    result = check_monitor(export, record, data_root=data_root)
    row = {"record": record, "seconds": result["seconds"], **result["runs"]["host"],
           "seconds_both": round(time.perf_counter() - start, 1)}
    print(json.dumps(row), flush=True)
    return row


def report(rows: list[dict], totals: dict, machine: str, model: str) -> str:
    equal = sum(r["equal"] for r in rows)
    lines = [
        "# C device path = Python Monitor on MIT-BIH DS2 (`hs_monitor`)",
        "",
        f"Every DS2 record in full (lead MLII, 360 Hz) streamed in one-second chunks into the Python Monitor "
        f"(`Monitor(model=<export>, backend=\"c\")`) and into the C device path of the same export ({model}: "
        "`hs_monitor` with the tables `heartsight export --sensor-fs 360` writes, a host build with the strict flags, "
        "through ctypes), as `heartsight verify-firmware DIR --monitor RECORD` does. *Beats equal*: the same R peak "
        "within one model-rate sample (± 3 sensor samples); *labels equal*: of those, the same class (or both "
        "unclassified); *alerts equal*: the same type, sample and label, confidence within 1e-6; *overflows*: what "
        "the build's fixed sizes could not hold (`hs_monitor_overflows`). Regenerate with "
        "`python -m benchmarks.monitor_c_equality`.",
        "",
        f"Equal on {equal} of {len(rows)} records: {totals['beats_equal']:,} of {totals['beats']:,} beats "
        f"({totals['c_beats']:,} from C), {totals['labels_equal']:,} labels, {totals['alerts_equal']:,} of "
        f"{totals['alerts']:,} alerts ({totals['c_alerts']:,} from C), {totals['overflows']} overflows.",
        "",
        f"Machine: {machine}.",
        "",
        "| record | seconds | beats | C beats | beats equal | labels equal | alerts | C alerts | alerts equal "
        "| overflows | equal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['record']} | {r['seconds']:g} | " + " | ".join(f"{r[k]:,}" for k in COUNTS)
                     + f" | {'yes' if r['equal'] else '**NO**'} |")
    lines.append(f"| total | {totals['seconds']:,.0f} | " + " | ".join(f"**{totals[k]:,}**" for k in COUNTS)
                 + f" | {equal}/{len(rows)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="data directory holding mitdb/ (default $HEARTSIGHT_DATA)")
    parser.add_argument("--export", help="an export with its device path for 360 Hz (default: the zoo's "
                                         f"{MODEL} export with one added, in a temporary directory)")
    args = parser.parse_args(argv)
    data_root = data_dir(args.data_dir)
    folder = database_path("mitdb", data_root)
    missing = [r for r in DS2 if not (folder / f"{r}.hea").exists()]
    if missing:
        print(f"monitor_c_equality: error: records {' '.join(missing)} missing in {folder}; get them with "
              f"`{fetch_command('mitdb')}`, or point --data-dir (or $HEARTSIGHT_DATA) at the data directory",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        try:
            if args.export is None:
                export = Path(scratch) / MODEL
                shutil.copytree(ZOO_DIR / MODEL / "int8", export)
                write_monitor(export, [FS])
            else:
                export = Path(args.export)
            rows = [evaluate(export, record, data_root) for record in DS2]
        except HeartSightError as exc:
            print(f"monitor_c_equality: error: {exc}", file=sys.stderr)
            return 2
    totals = {"seconds": round(sum(r["seconds"] for r in rows), 1), **{k: sum(r[k] for r in rows) for k in COUNTS}}
    machine = describe()
    model = MODEL if args.export is None else str(args.export)
    results = {
        "protocol": {
            "database": "mitdb", "records": list(DS2), "lead": "MLII", "fs": FS, "chunk_s": 1.0, "model": model,
            "c": "hs_monitor with the export's tables (hs_monitor_config_for), host build, strict flags",
            "python": "sdk.device.monitor.Monitor on the same export, backend c",
            "beats_equal": "the same R peak within one model-rate sample (round(fs / 128) sensor samples)",
            "labels_equal": "of the equal beats, the same class (or both unclassified)",
            "alerts_equal": "the same type, sample and label, confidence within 1e-6",
        },
        "machine": machine,
        "equal_records": sum(r["equal"] for r in rows),
        "totals": totals,
        "records": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "monitor_c_equality.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "monitor_c_equality.md").write_text(report(rows, totals, machine, model))
    return 0 if results["equal_records"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
