"""The whole device path on an emulated Cortex-M4 (firmware_export/monitor_target.py, examples/firmware_monitor): the
firmware built with the ecg_beat_wcam export and ecg_af under the prefix af_ in one image, run under QEMU, gives the
events the Python Monitor (backend c) gives for the same one-second chunks; its instruction counts add up; and what it
refuses is said clearly."""

import json
import shutil

import numpy as np
import pytest

from benchmarks.device_path_cost import EXPORT, af_on_host, compare, python_events
from conftest import ecg_with_quality_problems, needs_cmsis_nn, needs_mitdb
from firmware_export import monitor_target
from firmware_export.monitor_target import build_monitor_firmware, read_map, run_monitor_qemu
from firmware_export.target import toolchain_missing
from sdk.data.records import read_database_record
from sdk.errors import HeartSightError

needs_toolchain = pytest.mark.skipif(toolchain_missing() is not None, reason=str(toolchain_missing()))
FS = 360.0


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One build directory for the module: each configuration is built once."""
    return tmp_path_factory.mktemp("firmware_monitor")


def mitdb(record: str, seconds: float = 300.0) -> np.ndarray:
    recording = read_database_record("mitdb", record)
    assert recording.fs == FS
    return recording.channel("MLII")[: int(seconds * FS)].astype(np.float32)


@needs_toolchain
@needs_mitdb
@pytest.mark.parametrize("record", ["100", "233"])
def test_five_minutes_of_mitdb_equal_the_python_monitor(work, record):
    """Every beat (sample, window start, label, probability), alert (type, sample, label, confidence within 1e-6,
    details, excerpt) in the same order; nothing overflowed. QEMU takes a few seconds for the 5 minutes."""
    x = mitdb(record)
    qemu = run_monitor_qemu(EXPORT, x, FS, work_dir=work)
    seen = compare(qemu, python_events(x, FS, int(FS)))
    print(record, f"QEMU {qemu['qemu_s']:.1f} s", seen)
    assert seen["equal"], seen["first_difference"]
    summary = qemu["summary"]
    assert summary["overflows"] == 0 and summary["lost_events"] == 0
    assert summary["chunks"] == 300 and summary["chunk_samples"] == 360 and summary["samples"] == len(x)
    assert seen["classified"] > 300 and len(qemu["beats"]) == summary["beats"] == seen["beats"]
    if record == "233":
        assert seen["alerts"] >= 10 and {a["type"] for a in qemu["alerts"]} >= {"ventricular_run",
                                                                                "high_ectopy_burden"}
    assert 0 < summary["stack_bytes"] < summary["stack_painted_bytes"]


@needs_toolchain
@needs_mitdb
@needs_cmsis_nn
def test_the_path_with_the_model_on_cmsis_nn_equals_the_python_monitor_in_fewer_instructions(work):
    """The export's cmsis_nn/ library (Arm's kernels, their DSP-extension paths) in the device path: the same events
    as the Python Monitor on 2 minutes of 233, and fewer instructions than the portable kernels."""
    x = mitdb("233", 120.0)
    python = python_events(x, FS, int(FS))
    runs = {name: run_monitor_qemu(directory, x, FS, work_dir=work, icount_shift=0)
            for name, directory in (("portable", EXPORT), ("cmsis-nn", EXPORT / "cmsis_nn"))}
    for name, run in runs.items():
        seen = compare(run, python)
        assert seen["equal"] and seen["classified"] > 150, (name, seen["first_difference"])
    assert runs["cmsis-nn"]["instructions"]["path"] < 0.85 * runs["portable"]["instructions"]["path"]


@needs_toolchain
def test_quality_problems_and_their_alerts_equal_the_python_monitor(work):
    """tests/test_c_monitor.py's signal-quality case through the emulator: a NaN dropout (read through semihosting as
    float32 NaN), a flat line, clipping and muscle noise give the same quality events, gated beats and alerts."""
    signal = ecg_with_quality_problems(FS)
    qemu = run_monitor_qemu(EXPORT, signal, FS, work_dir=work)
    seen = compare(qemu, python_events(signal, FS, int(FS)))
    print(seen)
    assert seen["equal"], seen["first_difference"]
    assert seen["quality"] == 8 and seen["beats"] > seen["classified"] and seen["alerts"] >= 3
    assert any(a["type"] == "signal_quality" for a in qemu["alerts"])


@needs_toolchain
def test_the_second_model_runs_in_the_same_image(work):
    """ecg_af under af_ on the firmware's all-zero window computes what its export's host build computes."""
    qemu = run_monitor_qemu(EXPORT, np.zeros(int(5 * FS), np.float32), FS, work_dir=work)
    host = af_on_host()
    assert qemu["af"]["model"] == "ecg_af"
    assert (qemu["af"]["logits"], qemu["af"]["trace_sum"]) == (host["logits"], host["trace_sum"])
    elf = build_monitor_firmware(EXPORT, FS, work)  # already built: the map of that image
    groups = read_map(elf.with_suffix(".map"))
    assert {"af_model", "af_kernels", "heartsight_model", "hs_kernels", "hs_monitor"} <= set(groups)
    af_arena = json.loads((monitor_target.AF_EXPORT / "report.json").read_text())["ram"]["arena"]
    assert groups["af_model"]["bss"] >= af_arena  # af_infer runs on the library's own context
    # the monitor's model runs on the firmware's context (config.model_context): the library's own is not linked
    assert groups["heartsight_model"]["bss"] == 0


@needs_toolchain
@needs_mitdb
def test_instructions_are_counted_per_stage(work):
    """Under -icount the calibration holds (checked inside), the stages add up to the path, the model dominates, and
    the wrappers of the profiled build cost well under 1 % of the path; both builds give the same events."""
    x = mitdb("100", 60.0)
    plain = run_monitor_qemu(EXPORT, x, FS, work_dir=work, icount_shift=0)
    profiled = run_monitor_qemu(EXPORT, x, FS, work_dir=work, icount_shift=0, profile=True)
    counts = profiled["instructions"]
    print({stage: f"{value / 60 / 1e6:.2f} M/s" for stage, value in counts.items()})
    assert plain["summary"]["profile"] is False and profiled["summary"]["profile"] is True
    assert plain["events"] == profiled["events"]
    stages = [s for s in monitor_target.STAGES if s != "harness"]
    assert counts["path"] == pytest.approx(sum(counts[s] for s in stages))
    assert all(counts[s] > 0 for s in stages)
    assert counts["model"] == max(counts[s] for s in stages)
    assert abs(counts["path"] - plain["instructions"]["path"]) < 0.01 * plain["instructions"]["path"]


def test_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(monitor_target, "toolchain_missing", lambda: "the Cortex-M4 toolchain is incomplete, missing: "
                        "qemu-system-arm; install it with `apt-get install ...`")
    with pytest.raises(HeartSightError, match="toolchain is incomplete"):
        run_monitor_qemu(EXPORT, np.zeros(360, np.float32), FS, work_dir=tmp_path)
    monkeypatch.setattr(monitor_target, "toolchain_missing", lambda: None)
    with pytest.raises(HeartSightError, match="up to 360 Hz, not 500 Hz"):
        build_monitor_firmware(EXPORT, 500.0, tmp_path)
    with pytest.raises(HeartSightError, match="not an exported model library"):
        build_monitor_firmware(tmp_path, FS, tmp_path)
    with pytest.raises(HeartSightError, match="no samples"):
        run_monitor_qemu(EXPORT, np.zeros(0, np.float32), FS, work_dir=tmp_path)
    with pytest.raises(HeartSightError, match="1-D array"):
        run_monitor_qemu(EXPORT, np.zeros((2, 360), np.float32), FS, work_dir=tmp_path)
    with pytest.raises(HeartSightError, match="icount_shift"):
        run_monitor_qemu(EXPORT, np.zeros(360, np.float32), FS, work_dir=tmp_path, icount_shift=-1)


@needs_toolchain
def test_a_firmware_error_is_reported(work, monkeypatch):
    """A rate the tables were not written for is refused by the firmware: the error line comes back as a
    HeartSightError (here, tables written for 250 Hz while the run says 360)."""
    real = monitor_target.monitor_tables_c
    monkeypatch.setattr(monitor_target, "monitor_tables_c", lambda rates: real([250.0]))
    with pytest.raises(HeartSightError, match="no tables for this rate"):
        run_monitor_qemu(EXPORT, np.zeros(360, np.float32), FS, work_dir=work / "other")
    shutil.rmtree(work / "other")
