"""hs_monitor (firmware_export/runtime/hs_monitor.c), the whole device path for ECG beat models in C, against the Python
Monitor it ports (sdk/device/monitor.py with the int8 export on the c backend): the same chunks in, the same beats
(sample, window start, label, probability, trace), quality events and alerts (type, sample, label, confidence,
details with the embedding and beat marks, excerpt and trace) out, call by call; its status codes; a Cortex-M4 build.

The model is the exported library of models/zoo/ecg_beat_wcam/int8, reached through the hs_model_api that the
exporter's tables define (firmware_export.monitor_tables), as a firmware reaches it; firmware_export.monitor_host
builds it with the runtime and binds it (CMonitor)."""

import ctypes
import itertools
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import ecg_with_quality_problems, needs_mitdb
from firmware_export.codegen import C_SOURCES
from firmware_export.host import RUNTIME_DIR
from firmware_export.monitor_host import (CODE, ON_EVENT, RUNTIME_SOURCES, CMonitor, build_monitor_library,
                                          monitor_config)
from firmware_export.monitor_tables import monitor_tables_c
from sdk.data import synthetic
from sdk.data.records import read_database_record
from sdk.device import monitor as monitor_module
from sdk.device.monitor import MAX_ABS_MV, BeatEvent, Monitor
from sdk.device.quality import QualityEvent

EXPORT = Path(__file__).resolve().parents[1] / "models" / "zoo" / "ecg_beat_wcam" / "int8"
MODEL_SOURCES = [EXPORT / name for name in C_SOURCES]
START = datetime(2026, 1, 1, 8, 0, tzinfo=timezone.utc)
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-std=c99", "-Wall", "-Wextra",
             "-Werror", "-pedantic", "-O2"]
SIZES = (360, 97, 250, 313, 41, 360, 128)  # chunk lengths, cycled: at most one second at 360 Hz


def build(flags: list[str] = ()):
    """The runtime, the exported model and its tables (for 360 Hz; the tests configure other rates from Python) in
    one host library."""
    return build_monitor_library(EXPORT, [360.0], flags)


@pytest.fixture(scope="module")
def lib():
    return build()


# --- the Python Monitor ----------------------------------------------------------------------------------------------

class PythonMonitor:
    """The Python Monitor on the int8 export's C library, and the unrounded probability of every classified beat
    (BeatEvent.p is rounded to 4 places; the policy reads the unrounded one)."""

    def __init__(self, fs: float, monkeypatch):
        self.monitor = Monitor(model=EXPORT, backend="c", fs=fs, start_time=START, stream_id="test")
        self.probabilities: list[float] = []
        label = monitor_module._label

        def recording_label(spec, output):
            name, p = label(spec, output)
            self.probabilities.append(p)
            return name, p
        monkeypatch.setattr(monitor_module, "_label", recording_label)

    def feed(self, chunk):
        return self.monitor.feed(chunk)

    def finish(self):
        return self.monitor.finish()


def chunks_of(x: np.ndarray, sizes=SIZES) -> list[np.ndarray]:
    edges = np.cumsum([0, *itertools.islice(itertools.cycle(sizes), len(x))])
    edges = edges[edges < len(x)].tolist() + [len(x)]
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def kinds(events) -> list[str]:
    """The order of a call's events, by kind, as Python returns them."""
    if events and isinstance(events[0], tuple):
        return [kind for kind, _ in events]
    return ["beat" if isinstance(e, BeatEvent) else "quality" if isinstance(e, QualityEvent) else "alert"
            for e in events]


def run_both(lib, x: np.ndarray, fs: float, monkeypatch, chunks=None) -> dict:
    """Both monitors fed the same chunks: the events of every call in the same order by kind; then every event
    compared. Returns counts of what was compared."""
    python, c = PythonMonitor(fs, monkeypatch), CMonitor(lib, fs)
    assert c.status == CODE["OK"]
    py_events, c_events = [], []
    for call, chunk in enumerate([*(chunks_of(x) if chunks is None else chunks), None]):
        expected = python.finish() if chunk is None else python.feed(chunk)
        got = c.finish() if chunk is None else c.feed(chunk)
        assert c.status in (CODE["OK"], CODE["HELD"]), (call, c.status)
        dropouts = chunk is not None and not (np.abs(chunk) <= MAX_ABS_MV).all()  # NaN, inf or out of range
        assert c.status == (CODE["HELD"] if dropouts else CODE["OK"])
        assert kinds(got) == kinds(expected), (call, kinds(got), kinds(expected))
        py_events += expected
        c_events += got
    assert c.overflows == 0
    return compare(py_events, c_events, python.probabilities)


def compare(py_events: list, c_events: list, probabilities: list[float]) -> dict:
    seen = {"beats": 0, "classified": 0, "quality": 0, "alerts": 0, "max_p_difference": 0.0,
            "max_trace_relative": 0.0, "max_embedding_relative": 0.0}
    assert len(c_events) == len(py_events)
    p_values = iter(probabilities)
    for expected, (kind, got) in zip(py_events, c_events):
        if kind == "beat":
            seen["beats"] += 1
            assert (got["sample"], got["window_start"], got["label"], got["quality"]) == \
                   (expected.sample, expected.window_start, expected.label, expected.quality)
            if expected.label is None:
                assert got["trace"] is None and got["p"] is None
                continue
            seen["classified"] += 1
            p = next(p_values)
            assert abs(got["p"] - p) <= 1e-6 and round(got["p"], 4) == expected.p
            seen["max_p_difference"] = max(seen["max_p_difference"], abs(got["p"] - p))
            seen["max_trace_relative"] = max(seen["max_trace_relative"],
                                               assert_trace_close(got["trace"], expected.trace))
        elif kind == "quality":
            seen["quality"] += 1
            assert isinstance(expected, QualityEvent)
            assert (got["kind"], got["start"], got["end"]) == (expected.kind, expected.start, expected.end)
        else:
            seen["alerts"] += 1
            seen["max_embedding_relative"] = max(seen["max_embedding_relative"],
                                                   assert_alert_equal(got, expected.alert))
    return seen


def assert_trace_close(c: np.ndarray, python: np.ndarray) -> float:
    """Within 1e-6 of the trace's largest value (the library's float scales against Python's float64 ones); returns
    the relative difference."""
    assert c.shape == python.shape
    difference = float(np.abs(c.astype(np.float64) - python).max()) if len(c) else 0.0
    relative = difference / max(float(np.abs(python).max()), 1e-12)
    assert relative <= 1e-6, relative
    return relative


def assert_alert_equal(got: dict, alert) -> float:
    details = dict(alert.details)
    embedding = details.pop("embedding", None)
    c_details = dict(got["details"])
    c_embedding = c_details.pop("embedding", None)
    assert (got["type"], got["sample"], got["label"], c_details) == (alert.type, alert.sample_index, alert.label,
                                                                     details)
    assert abs(got["confidence"] - alert.confidence) <= 1e-6
    assert got["head_version"] == alert.model["head_version"] == 0
    assert not got["truncated"]
    assert (got["start"], len(got["signal"])) == (alert.excerpt.start, len(alert.excerpt.signal))
    assert np.array_equal(got["signal"], alert.excerpt.signal)  # the raw samples themselves
    assert_trace_close(got["trace"], alert.excerpt.trace)
    if embedding is None:
        assert c_embedding is None
        return 0.0
    relative = float(np.abs(np.array(c_embedding) - np.array(embedding)).max()) / max(float(np.abs(embedding).max()),
                                                                                     1e-12)
    assert relative <= 1e-6
    return relative


def mitdb(record: str, seconds: float = 300.0) -> tuple[np.ndarray, float]:
    recording = read_database_record("mitdb", record)
    return recording.channel("MLII")[: int(seconds * recording.fs)].astype(np.float32), recording.fs


# --- equality ---------------------------------------------------------------------------------------------------------

@needs_mitdb
@pytest.mark.parametrize("record", ["100", "233", "208"])
def test_equals_the_python_monitor_on_mitdb(lib, one_thread, monkeypatch, record):
    """The first 5 minutes of MIT-BIH DS2 records, in chunks of 41 to 360 samples: every beat at the same sample with
    the same label, probability and trace; every alert the same (208 and 233: isolated V beats, runs, burden)."""
    x, fs = mitdb(record)
    seen = run_both(lib, x, fs, monkeypatch)
    print(record, seen)
    assert seen["classified"] > 300
    if record != "100":
        assert seen["alerts"] >= 10


def test_two_streams_run_at_once_on_one_model_library_each_with_its_own_context(lib):
    """Two monitors in two threads at the same time on the same model library (ctypes lets go of the GIL in C): each
    infers on its own model context (config.model_context), so each gives what it gives alone. With the library's one
    static arena, as before, their inferences overwrote each other's activations."""
    signals = [synthetic.synthetic_ecg(60, 360.0, heart_rate=70, ectopic={"V": 0.2}, seed=1).signal,
               synthetic.synthetic_ecg(60, 360.0, heart_rate=95, ectopic={"S": 0.2}, seed=2).signal]
    signals = [x.astype(np.float32) for x in signals]

    def run(x: np.ndarray, start: threading.Barrier | None = None) -> list:
        monitor = CMonitor(lib, 360.0)
        if start is not None:
            start.wait()
        return [e for chunk in chunks_of(x) for e in monitor.feed(chunk)] + monitor.finish()

    alone = [run(x) for x in signals]
    start = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(run, signals, [start, start]))
    for got, expected in zip(together, alone):
        assert sum(kind == "beat" for kind, _ in got) > 60 and kinds(got) == kinds(expected)
        assert [str(event) for event in got] == [str(event) for event in expected]


def test_equals_the_python_monitor_through_a_dropout(lib, one_thread, monkeypatch):
    """tests/test_monitor.py's synthetic ECG with a 1 s NaN dropout: the two quality events, the gated beats, the same
    for chunks of 1 sample (every call's rounding in the detector) and of 360."""
    ecg = synthetic.synthetic_ecg(30, 360.0, heart_rate=75, ectopic={"V": 0.15}, seed=0).signal.astype(np.float32)
    ecg[int(14 * 360): int(15 * 360)] = np.nan
    for chunks in (chunks_of(ecg, [360]), chunks_of(ecg, [1, 1, 2, 7, 1])):
        seen = run_both(lib, ecg, 360.0, monkeypatch, chunks)
        print(seen)
        assert seen["quality"] == 2 and seen["beats"] > seen["classified"] > 20 and seen["alerts"] >= 2


def test_equals_the_python_monitor_through_every_quality_problem(lib, one_thread, monkeypatch):
    """Dropout, lead-off, clipping and muscle noise (tests/test_monitor.py): quality events and their alerts, rate
    limited, and the beats under them gated."""
    fs = 360.0
    seen = run_both(lib, ecg_with_quality_problems(fs), fs, monkeypatch)
    print(seen)
    assert seen["quality"] == 8 and seen["alerts"] >= 3


def ventricular_runs(seconds: float = 70.0) -> np.ndarray:
    """tests/test_monitor.py's hand-placed ECG at 360 Hz: an isolated V beat at beat 20, a run of 30 V beats at beat
    50 (the model calls 20 of them V in a row: a 14.5 s excerpt)."""
    from test_monitor import ecg_from_schedule, sinus_with_ectopy

    labels, times = sinus_with_ectopy(seconds, {20: 1, 50: 30})
    return ecg_from_schedule(labels, times, seconds)[0]


def test_equals_the_python_monitor_on_ventricular_runs(lib, one_thread, monkeypatch):
    seen = run_both(lib, ventricular_runs(), 360.0, monkeypatch)
    print(seen)
    assert seen["alerts"] == 4  # the isolated beat, a run of 7, the burden, the run of 20


def test_a_run_longer_than_the_build_holds_is_cut_and_flagged(one_thread, monkeypatch):
    """Built to hold 8 s at 500 Hz (11.1 s at 360 Hz), the run of 20's 14.5 s excerpt is its first 4,000 samples,
    flagged and counted as an overflow; everything else is as before."""
    small = build(["-DHS_MONITOR_EXCERPT_S=8"])
    x = ventricular_runs()
    python, c = PythonMonitor(360.0, monkeypatch), CMonitor(small, 360.0)
    py_events, c_events = [], []
    for chunk in chunks_of(x):
        py_events += python.feed(chunk)
        c_events += c.feed(chunk)
    py_events += python.finish()
    c_events += c.finish()
    assert kinds(c_events) == kinds(py_events) and c.overflows == 1
    long_run = [i for i, (kind, a) in enumerate(c_events) if kind == "alert" and a["truncated"]]
    assert len(long_run) == 1
    got, expected = c_events[long_run[0]][1], py_events[long_run[0]].alert
    assert expected.details["run_length"] == 20 and len(expected.excerpt.signal) > 4000 == len(got["signal"])
    assert got["start"] == expected.excerpt.start
    assert np.array_equal(got["signal"], expected.excerpt.signal[:4000])
    assert_trace_close(got["trace"], expected.excerpt.trace[:4000])
    del c_events[long_run[0]], py_events[long_run[0]]
    compare(py_events, c_events, python.probabilities)


@pytest.mark.parametrize("fs", [128.0, 250.0, 500.0])
def test_equals_the_python_monitor_at_other_sensor_rates(lib, one_thread, monkeypatch, fs):
    """Pass-through at the model rate, and two resampling ratios, in chunks of up to one second."""
    ecg = synthetic.synthetic_ecg(40, fs, heart_rate=80, ectopic={"V": 0.1, "S": 0.05}, seed=int(fs))
    x = ecg.signal.astype(np.float32)
    sizes = [min(size, int(fs)) for size in SIZES]
    seen = run_both(lib, x, fs, monkeypatch, chunks_of(x, sizes))
    print(fs, seen)
    assert seen["classified"] > 40


@needs_mitdb
def test_equals_the_python_monitor_from_a_beat_at_the_first_sample_through_a_long_pause(lib, one_thread, monkeypatch):
    """Record 233 from an R wave at its first sample (windows and bumps reach before the signal), with a 9 s flat
    pause (a flat line, the detector's longest wait: the most signal held back) and an end 2 s after a beat."""
    from sdk.data.records import read_annotations

    recording = read_database_record("mitdb", "233")
    first_beat = int(read_annotations("mitdb", "233").sample[1])
    x = recording.channel("MLII")[first_beat: first_beat + int(60 * recording.fs)].astype(np.float32)
    pause = slice(int(20 * recording.fs), int(29 * recording.fs))
    x[pause] = x[pause.start]
    seen = run_both(lib, x, recording.fs, monkeypatch)
    print(seen)
    assert seen["quality"] >= 2 and seen["beats"] > seen["classified"] > 50


@needs_mitdb
def test_adc_counts_with_a_gain(lib, one_thread, monkeypatch):
    """hs_monitor_feed_int16: MIT-BIH's own counts (200 per mV) give what the Python Monitor gives for
    float32(counts) * float32(gain)."""
    x, fs = mitdb("233", 60.0)
    counts = np.round(x * 200).astype(np.int16)
    gain = np.float32(0.005)
    python, c = PythonMonitor(fs, monkeypatch), CMonitor(lib, fs)
    py_events, c_events = [], []
    for chunk in chunks_of(counts):
        py_events += python.feed(chunk.astype(np.float32) * gain)
        c_events += c.feed_int16(chunk, float(gain))
        assert c.status == CODE["OK"]
    py_events += python.finish()
    c_events += c.finish()
    assert kinds(c_events) == kinds(py_events)
    assert compare(py_events, c_events, python.probabilities)["classified"] > 50


# --- status codes ----------------------------------------------------------------------------------------------------

def test_configurations_are_checked(lib):
    state = (ctypes.c_uint64 * ((lib.hs_monitor_state_size() + 7) // 8))()
    good = monitor_config(lib, 360.0)
    assert lib.hs_monitor_init(None, ctypes.byref(good)) == CODE["ERR_NULL"]
    assert lib.hs_monitor_init(state, None) == CODE["ERR_NULL"]
    for fs in (360.0, 250.0, 500.0, 128.0, 80.0):
        assert CMonitor(lib, fs).status == CODE["OK"], fs
    for fs, code in ((50.0, "ERR_UNSUPPORTED"), (1000.0, "ERR_UNSUPPORTED"), (float("nan"), "ERR_UNSUPPORTED")):
        config = monitor_config(lib, 360.0)
        config.fs = fs
        assert lib.hs_monitor_init(state, ctypes.byref(config)) == CODE[code], fs
    for field, value in (("excerpt_s", 0.0), ("excerpt_s", 3.01), ("excerpt_s", float("nan"))):
        config = monitor_config(lib, 360.0)
        setattr(config, field, value)
        assert lib.hs_monitor_init(state, ctypes.byref(config)) == CODE["ERR_CONFIG"], (field, value)
    config = monitor_config(lib, 360.0)
    config.resampler.down = 44  # not 128 / 360
    assert lib.hs_monitor_init(state, ctypes.byref(config)) == CODE["ERR_CONFIG"]
    config = monitor_config(lib, 360.0)
    config.rpeak.fs = 360.0  # the detector runs at the model rate
    assert lib.hs_monitor_init(state, ctypes.byref(config)) == CODE["ERR_CONFIG"]
    for field in ("model", "model_context"):
        config = monitor_config(lib, 360.0)
        setattr(config, field, None)
        assert lib.hs_monitor_init(state, ctypes.byref(config)) == CODE["ERR_NULL"], field
    # a failed init leaves a state nothing accepts
    assert lib.hs_monitor_feed(state, None, 0, ON_EVENT(lambda *_: None), None) == CODE["ERR_STATE"]
    assert lib.hs_monitor_finish(state, ON_EVENT(lambda *_: None), None) == CODE["ERR_STATE"]


def test_out_of_range_samples_are_dropouts_as_in_python(lib, one_thread, monkeypatch):
    """Samples beyond +-1e6 mV (a wrong unit, garbage) are taken as dropouts by both monitors: held at the last finite
    value, reported by the gate as a "nan" problem, and the call says HS_MONITOR_HELD."""
    fs = 360.0
    ecg = synthetic.synthetic_ecg(30, fs, heart_rate=75, seed=4).signal.astype(np.float32)
    ecg[int(12 * fs): int(13 * fs)] = 1e7
    ecg[int(20 * fs): int(20 * fs) + 5] = -3e9
    seen = run_both(lib, ecg, fs, monkeypatch, chunks_of(ecg, [360]))
    assert seen["quality"] >= 2 and seen["beats"] > seen["classified"] > 15
    monitor = CMonitor(lib, fs)
    events = monitor.feed(ecg[int(12 * fs): int(13 * fs)])
    assert monitor.status == CODE["HELD"]
    assert ("quality", {"kind": "nan", "start": 0, "end": None}) in events
    monitor.feed(ecg[:360])
    assert monitor.status == CODE["OK"]
    edge = np.float32(MAX_ABS_MV)
    monitor.feed(np.full(10, edge))
    assert monitor.status == CODE["OK"]
    monitor.feed(np.full(10, np.nextafter(edge, np.float32(np.inf))))
    assert monitor.status == CODE["HELD"]


def test_bad_calls_give_status_codes_and_change_nothing(lib, one_thread, monkeypatch):
    fs = 360.0
    x = synthetic.synthetic_ecg(20, fs, seed=3).signal.astype(np.float32)
    python, c = PythonMonitor(fs, monkeypatch), CMonitor(lib, fs)
    assert c.max_chunk == 360 and CMonitor(lib, 250.0).max_chunk == 250 and CMonitor(lib, 500.0).max_chunk == 500
    py_events, c_events = [], []
    for chunk in chunks_of(x):
        assert c.feed(np.zeros(c.max_chunk + 1, np.float32)) == [] and c.status == CODE["ERR_LENGTH"]
        assert c.feed_int16(np.zeros(10, np.int16), float("nan")) == [] and c.status == CODE["ERR_RANGE"]
        assert c.feed_int16(np.zeros(10, np.int16), 0.0) == [] and c.status == CODE["ERR_RANGE"]
        assert c.lib.hs_monitor_feed(c.state, None, 5, c.callback, None) == CODE["ERR_NULL"]
        assert c.lib.hs_monitor_feed(c.state, None, -1, c.callback, None) == CODE["ERR_LENGTH"]
        assert c.feed(np.zeros(0, np.float32)) == [] and c.status == CODE["OK"]
        py_events += python.feed(chunk)
        c_events += c.feed(chunk)
    py_events += python.finish()
    c_events += c.finish()
    assert kinds(c_events) == kinds(py_events) and compare(py_events, c_events, python.probabilities)["beats"] > 15
    assert c.feed(x[:10]) == [] and c.status == CODE["ERR_FINISHED"]
    assert c.finish() == [] and c.status == CODE["OK"]  # as Monitor.finish: nothing more
    assert c.lib.hs_monitor_overflows(c.state, None) == CODE["ERR_NULL"]
    assert c.lib.hs_monitor_feed(None, x.ctypes.data, 1, c.callback, None) == CODE["ERR_NULL"]


def test_state_size(lib, tmp_path):
    """The caller's struct: its size with the default maxima (sensors up to 500 Hz) and built for 360 Hz."""
    size = lib.hs_monitor_state_size()
    program = tmp_path / "size.c"
    program.write_text('#include <stdio.h>\n#include "hs_monitor.h"\n'
                       'int main(void) { printf("%lu\\n", (unsigned long)sizeof(hs_monitor_t)); return 0; }\n')
    sizes = {}
    for flags in ([], ["-DHS_MONITOR_MAX_FS=360"]):
        binary = tmp_path / "size"
        subprocess.run([shutil.which("gcc"), "-std=c99", "-I", str(RUNTIME_DIR), *flags, str(program), "-o",
                        str(binary)], check=True)
        sizes[" ".join(flags) or "default"] = int(subprocess.run([str(binary)], capture_output=True, text=True,
                                                                 check=True).stdout)
    print("hs_monitor_t bytes:", sizes)
    assert sizes["default"] == size
    assert size < 160_000 and sizes["-DHS_MONITOR_MAX_FS=360"] < 130_000


# --- the build for the device ----------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
def test_compiles_for_cortex_m4_without_static_state(tmp_path):
    tables = tmp_path / "hs_monitor_tables.c"
    tables.write_text(monitor_tables_c([360.0]))
    for source in [*(RUNTIME_DIR / name for name in RUNTIME_SOURCES), *MODEL_SOURCES, tables]:
        obj = tmp_path / (source.stem + ".o")
        run = subprocess.run(["arm-none-eabi-gcc", *ARM_FLAGS, "-I", str(RUNTIME_DIR), "-I", str(EXPORT), "-c",
                              str(source), "-o", str(obj)], capture_output=True, text=True)
        assert run.returncode == 0, (source.name, run.stderr)
    sizes = subprocess.run(["arm-none-eabi-size", str(tmp_path / "hs_monitor.o")], capture_output=True, text=True,
                           check=True)
    text, data, bss = map(int, sizes.stdout.splitlines()[1].split()[:3])
    assert text > 0 and data == 0 and bss == 0  # all state in the caller's struct
    symbols = subprocess.run(["arm-none-eabi-nm", "-u", str(tmp_path / "hs_monitor.o")], capture_output=True,
                             text=True, check=True).stdout
    assert "malloc" not in symbols
