"""hs_channels (firmware_export/runtime/hs_channels.c), the ECG models' input channels in C, against
sdk.data.preprocess as the Python Monitor streams it: the beat context, R amplitudes, beat and rhythm windows and the
too-few-beats check, on MIT-BIH through the Monitor itself and on edge cases; its errors; and a Cortex-M4 build."""

import ctypes
import re
import shutil
import subprocess
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import needs_mitdb
from firmware_export.host import RUNTIME_DIR, build_runtime_library
from models.registry import get_spec, load_model
from sdk.data import preprocess
from sdk.data.records import read_annotations, read_database_record
from sdk.device import monitor as monitor_module
from sdk.device.monitor import Monitor

BEAT = get_spec("ecg_beat")
RHYTHM = get_spec("ecg_af")
TOLERANCE = 1e-5  # largest difference allowed between a C window and the Python one (they are expected to be equal)

# the status codes, read from the header so that the test and the C agree by construction
STATUS = {name: int(value) for name, value in
          re.findall(r"#define HS_CHANNELS_(\w+) \(?(-?\d+)\)?", (RUNTIME_DIR / "hs_channels.h").read_text())}
MAX_BEATS = STATUS["MAX_BEATS"]


class ChannelsError(Exception):
    def __init__(self, status: int):
        names = [name for name, value in STATUS.items() if value == status and name.startswith("ERR_")]
        super().__init__(f"status {status} ({', '.join(names)})")
        self.status = status


class Config(ctypes.Structure):
    _fields_ = [("model_fs", ctypes.c_int), ("beat_window", ctypes.c_int), ("rhythm_window", ctypes.c_int)]


class Signal(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("start", ctypes.c_int64), ("capacity", ctypes.c_int32),
                ("head", ctypes.c_int32), ("count", ctypes.c_int32)]


class Beat(ctypes.Structure):
    _fields_ = [("r", ctypes.c_int64), ("rr_relative", ctypes.c_float), ("rr_change", ctypes.c_float),
                ("amplitude_scale", ctypes.c_float)]


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    lib = build_runtime_library(["hs_channels.c"])
    state, signal = ctypes.c_void_p, ctypes.POINTER(Signal)
    for name, restype, argtypes in [
        ("state_size", ctypes.c_size_t, []),
        ("init", ctypes.c_int, [state, ctypes.POINTER(Config)]),
        ("r_amplitude", ctypes.c_int, [signal, ctypes.c_int64, ctypes.POINTER(ctypes.c_float)]),
        ("add", ctypes.c_int, [state, ctypes.c_int64, ctypes.c_float]),
        ("add_peak", ctypes.c_int, [state, signal, ctypes.c_int64]),
        ("forget", ctypes.c_int, [state, ctypes.c_int]),
        ("forget_before", ctypes.c_int, [state, ctypes.c_int64, ctypes.POINTER(ctypes.c_int)]),
        ("count", ctypes.c_int, [state]),
        ("beat", ctypes.c_int, [state, ctypes.c_int, ctypes.POINTER(Beat)]),
        ("beat_window", ctypes.c_int, [state, ctypes.c_int, signal, ctypes.c_void_p]),
        ("rhythm_window", ctypes.c_int, [state, ctypes.c_int64, signal, ctypes.c_void_p]),
        ("rhythm_problem", ctypes.c_int, [state, ctypes.c_int64]),
    ]:
        function = getattr(lib, f"hs_channels_{name}")
        function.restype, function.argtypes = restype, argtypes
    return lib


class View:
    """An hs_channels_signal_t of filtered[start:end] in a ring of `capacity` floats, as a device keeps the filtered
    ECG. Slots holding no kept sample are NaN, so reading one shows as HS_CHANNELS_ERR_NOT_FINITE."""

    def __init__(self, filtered: np.ndarray, start: int, end: int, capacity: int | None = None):
        capacity = max(end - start, 1) if capacity is None else capacity
        assert end - start <= capacity
        self.data = np.full(capacity, np.nan, np.float32)
        self.data[np.arange(start, end) % capacity] = filtered[start:end]
        self.struct = Signal(self.data.ctypes.data, start, capacity, start % capacity, end - start)


def check(status: int) -> int:
    if status < 0:
        raise ChannelsError(status)
    return status


class Channels:
    """An hs_channels_t in an opaque buffer of hs_channels_state_size() bytes, on numpy arrays."""

    def __init__(self, beat_window: int = BEAT.window, rhythm_window: int = RHYTHM.window, model_fs: int = 128):
        self.lib = library()
        self.buffer = np.zeros(self.lib.hs_channels_state_size(), np.uint8)
        self.state = self.buffer.ctypes.data
        self.beat_length, self.rhythm_length = beat_window, rhythm_window
        check(self.lib.hs_channels_init(self.state, ctypes.byref(Config(model_fs, beat_window, rhythm_window))))

    def r_amplitude(self, view: View, r: int) -> np.float32:
        amplitude = ctypes.c_float()
        check(self.lib.hs_channels_r_amplitude(ctypes.byref(view.struct), r, ctypes.byref(amplitude)))
        return np.float32(amplitude.value)

    def add(self, r: int, amplitude: float) -> None:
        check(self.lib.hs_channels_add(self.state, r, amplitude))

    def add_peak(self, view: View, r: int) -> None:
        check(self.lib.hs_channels_add_peak(self.state, ctypes.byref(view.struct), r))

    def forget(self, n: int) -> None:
        check(self.lib.hs_channels_forget(self.state, n))

    def forget_before(self, keep_from: int) -> int:
        forgotten = ctypes.c_int(-1)
        check(self.lib.hs_channels_forget_before(self.state, keep_from, ctypes.byref(forgotten)))
        return forgotten.value

    def count(self) -> int:
        return check(self.lib.hs_channels_count(self.state))

    def beat(self, k: int) -> tuple:
        beat = Beat()
        check(self.lib.hs_channels_beat(self.state, k, ctypes.byref(beat)))
        return beat.r, np.float32(beat.rr_relative), np.float32(beat.rr_change), np.float32(beat.amplitude_scale)

    def context(self) -> list[tuple]:
        return [self.beat(k) for k in range(self.count())]

    def beat_window(self, k: int, view: View) -> np.ndarray:
        window = np.full((STATUS["BEAT_INPUTS"], self.beat_length), np.nan, np.float32)
        check(self.lib.hs_channels_beat_window(self.state, k, ctypes.byref(view.struct), window.ctypes.data))
        return window

    def rhythm_window(self, start: int, view: View) -> np.ndarray:
        window = np.full((STATUS["RHYTHM_INPUTS"], self.rhythm_length), np.nan, np.float32)
        check(self.lib.hs_channels_rhythm_window(self.state, start, ctypes.byref(view.struct), window.ctypes.data))
        return window

    def rhythm_problem(self, start: int) -> str | None:
        answer = check(self.lib.hs_channels_rhythm_problem(self.state, start))
        return preprocess.TOO_FEW_BEATS if answer == STATUS["TOO_FEW_BEATS"] else None


def python_context(builder: preprocess.BeatContextBuilder) -> list[tuple]:
    return list(zip(builder.r_peaks, builder.rr_relative, builder.rr_change, builder.amplitude_scale))


class Windows:
    """The Monitor's own window building (_EcgTask.tracks, _BeatTask.ready, _RhythmTask.inputs) over a
    BeatContextBuilder and the filtered samples [start, end) it has kept; finished: the stream has ended."""

    def __init__(self, builder, filtered: np.ndarray, start: int, end: int, finished: bool):
        samples = monitor_module._Samples(1)
        samples.data, samples.start = filtered[start:end, None].astype(np.float32), start
        self.task = object.__new__(monitor_module._RhythmTask)
        self.task.beats, self.task.spec = builder, RHYTHM
        self.task.monitor = SimpleNamespace(_filtered=samples, _finished=finished)

    def beat(self, indices) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        starts = np.array(self.task.beats.r_peaks, np.int64)[indices] - BEAT.window // 2
        return preprocess.beat_windows(self.task.tracks(starts.min(), starts.max() + BEAT.window), indices, BEAT.window)

    def rhythm(self, starts) -> np.ndarray:
        return self.task.inputs(np.asarray(starts, np.int64))


def assert_windows_equal(c_window: np.ndarray, python_window: np.ndarray) -> float:
    assert c_window.shape == python_window.shape and python_window.dtype == np.float32
    difference = float(np.abs(c_window - python_window).max())
    assert difference < TOLERANCE
    return difference


# --- the beat context ----------------------------------------------------------------------------------------------

def test_beat_context_equals_the_builder_beat_by_beat():
    """Every add gives BeatContextBuilder's floats exactly: first beats, the 256-beat history wrapping, long pauses
    (rr_relative clipped at 2), tied and even-count amplitude medians, the 0.05 mV floor; forget keeps the history."""
    rng = np.random.default_rng(1)
    rr = rng.integers(60, 140, size=700)
    rr[[5, 300, 301, 550]] = [900, 1500, 40, 5000]  # pauses, and a beat right after one
    amplitudes = rng.choice(np.float32([0.01, 0.3, 0.3, 0.8, 1.25, 2.0, 0.02]), size=700) * rng.choice([1, 1, 3], 700)
    amplitudes[400:420] = 0.02  # lead-off: the median falls under the floor
    c, python = Channels(), preprocess.BeatContextBuilder()
    r, clipped, floored = 3, 0, 0
    for i in range(700):
        r += int(rr[i])
        python.add(r, np.float32(amplitudes[i]))
        c.add(r, float(np.float32(amplitudes[i])))
        assert c.beat(c.count() - 1) == python_context(python)[-1]
        clipped += python.rr_relative[-1] == 2.0
        floored += python.amplitude_scale[-1] == np.float32(0.05)
        if i % 37 == 36:  # forget some, as the Monitor does between beats
            n = len(python.r_peaks) - 3
            python.forget(n)
            c.forget(n)
            assert c.context() == python_context(python)
    assert clipped and floored


def test_rr_relative_clips_and_the_first_beat():
    c, python = Channels(), preprocess.BeatContextBuilder()
    for r in [*range(0, 1000, 100), 100000, 100001]:  # the first beat at sample 0; a pause; a beat 1 sample later
        python.add(r, np.float32(1.0))
        c.add(r, 1.0)
    assert c.context() == python_context(python)
    assert python.rr_relative[0] == 0 and python.rr_change[0] == 0 and python.rr_relative[10] == 2.0


def test_forget_before_is_the_monitors_rule():
    """_EcgTask.forget: drop the beats before keep_from - REACH but the last of them."""
    for keep_from in [-500, 0, 100, 500, 512, 513, 10_000]:
        c, python = Channels(), preprocess.BeatContextBuilder()
        for r in range(0, 2000, 100):
            c.add(r, 1.0)
            python.add(r, np.float32(1.0))
        task = SimpleNamespace(beats=python)
        before = len(python.r_peaks)
        monitor_module._EcgTask.forget(task, keep_from)
        assert c.forget_before(keep_from) == before - len(python.r_peaks)
        assert c.context() == python_context(python)


# --- windows on edge cases -----------------------------------------------------------------------------------------

def synthetic_filtered(n: int, r_peaks, seed: int = 0) -> np.ndarray:
    """A band-passed-ECG-like float32 signal: noise with a sharp spike (either sign) at each R peak."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, n)
    for i, r in enumerate(r_peaks):
        shape = np.exp(-0.5 * ((np.arange(n) - r) / 2.0) ** 2) * (1.0 if i % 3 else -1.4)
        x += shape + 0.2 * np.exp(-0.5 * ((np.arange(n) - r - 35) / 8.0) ** 2)
    return x.astype(np.float32)


def build(r_peaks, filtered: np.ndarray, end: int | None = None) -> tuple[Channels, preprocess.BeatContextBuilder]:
    """Both builders over these beats, each beat's amplitude from the filtered signal up to `end` (as streamed)."""
    end = len(filtered) if end is None else end
    c, python = Channels(), preprocess.BeatContextBuilder()
    view = View(filtered, 0, end)
    reach = int(round(preprocess.R_SEARCH_S * preprocess.ECG_FS))
    kept = monitor_module._Samples(1)
    kept.append(filtered[:end, None])
    for r in r_peaks:  # as _EcgTask.take
        amplitude = preprocess.r_amplitudes(kept.slice(r - reach, r + reach + 1)[:, 0], np.array([reach]))[0]
        assert c.r_amplitude(view, r) == amplitude
        python.add(r, amplitude)
        c.add_peak(view, r)
    assert c.context() == python_context(python)
    return c, python


@pytest.mark.parametrize("finished", [False, True])
def test_beat_windows_at_the_start_of_the_signal_and_after_pauses(finished):
    """Beats from sample 2 on (windows, bumps and the R search reaching before sample 0), a long pause (isolated
    beats: no template), and at the end of a finished stream, windows past the signal's end (zero-padded)."""
    r_peaks = [2, 90, 200, 300, 395, 500, 602, 700, 1700, 3100, 3190, 3290, 3390, 3480, 3570, 3665, 3760, 3850]
    n = 3900 if finished else 4300
    filtered = synthetic_filtered(n, r_peaks)
    c, python = build(r_peaks, filtered)
    windows = Windows(python, filtered, 0, n, finished)
    indices = np.arange(len(r_peaks))
    expected = windows.beat(indices)
    view = View(filtered, 0, n, capacity=n + 17)
    for k in indices:
        assert_windows_equal(c.beat_window(int(k), view), expected[k])
    assert np.any(expected[1:, 3] != 0) and not np.any(expected[8, 3])  # templates; none after the pause


def test_template_from_all_whole_beats_when_none_has_normal_timing():
    """Each other beat in the window premature (rr_relative < -0.15): the template is all whole beats; and a beat
    whose rr_relative is exactly float32(-0.15) counts as normal timing, as numpy compares in float32."""
    # RR 23 then 17: beat 2's rr_relative is 17 / 20 - 1 = -0.15000000000000002 in float64, -0.15 in float32; beat 3
    # is premature. Beat 4's window (from sample 1) holds beats 2 and 3 whole, beats 0 and 1 not.
    r_peaks = [0, 23, 40, 55, 385, 800, 1000, 1100, 1170, 1230, 1280, 1600, 1623, 1640, 1655, 2000]
    filtered = synthetic_filtered(2500, r_peaks, seed=3)
    c, python = build(r_peaks, filtered)
    assert python.rr_relative[2] == np.float32(-0.15) and float(python.rr_relative[2]) < -0.15
    assert python.rr_relative[3] < -0.15
    windows = Windows(python, filtered, 0, 2500, finished=True)
    indices = np.arange(len(r_peaks))
    expected = windows.beat(indices)
    view = View(filtered, 0, 2500)
    for k in indices:
        assert_windows_equal(c.beat_window(int(k), view), expected[k])
    # compared in float64, beat 2 would not be of normal timing and the template would be beats 2 and 3's median
    positions, rr_relative = np.array([39, 54]), np.array([-0.15000000000000002, python.rr_relative[3]])
    in_float64 = preprocess.template_difference(expected[4, 0], (positions, rr_relative), BEAT.window)
    assert np.any(expected[4, 3]) and np.abs(in_float64 - expected[4, 3]).max() > 0.01


def test_rhythm_windows_with_no_beats_before_and_past_the_end():
    """Scale 1 with no beat kept; the first kept beat's scale for a window before every beat; the last one before the
    window's end otherwise; a last window past the end of a finished stream (zero-padded); too few beats."""
    window = RHYTHM.window
    filtered = synthetic_filtered(9000, [], seed=5) * 10
    c, python = Channels(), preprocess.BeatContextBuilder()
    empty = Windows(python, filtered, 0, 9000, finished=False)
    view = View(filtered, 0, 9000, capacity=9001)
    for start in [0, 100, 5000]:
        assert_windows_equal(c.rhythm_window(start, view), empty.rhythm([start])[0])
        assert c.rhythm_problem(start) == preprocess.rhythm_problem(np.zeros(0), start, window) == "too_few_beats"
    r_peaks = [3000, 3100, 3180, 3300, 3400, 5000, 5120, 5230, 5300, 8900, 8990]
    filtered = synthetic_filtered(9000, r_peaks, seed=6)
    c, python = build(r_peaks, filtered)
    starts = [0, 1280, 1900, 2560, 3840, 5120, 7680, 8400, 8960]  # 8400 and 8960: past the end
    for finished in [False, True]:
        n = 9000 if finished else 8960 + window
        if not finished:
            filtered = np.concatenate([filtered, synthetic_filtered(n - 9000, [], seed=7)])
        windows = Windows(python, filtered, 0, n, finished)
        view = View(filtered, 0, n)
        expected = windows.rhythm(starts)
        for start, row in zip(starts, expected):
            assert_windows_equal(c.rhythm_window(start, view), row)
            assert c.rhythm_problem(start) == preprocess.rhythm_problem(np.array(r_peaks), start, window)
        if finished:
            assert not np.any(expected[-1][:, 9000 - 8960:])


# --- errors --------------------------------------------------------------------------------------------------------

def status_of(call) -> int:
    with pytest.raises(ChannelsError) as error:
        call()
    return error.value.status


def test_bad_configuration_is_refused():
    for fs, beat, rhythm in [(360, 768, 1280), (0, 768, 1280), (128, -1, 1280), (128, 768, 1281), (128, 5000, 0)]:
        assert status_of(lambda: Channels(beat, rhythm, fs)) == STATUS["ERR_CONFIG"]
    lib = library()
    assert lib.hs_channels_init(None, ctypes.byref(Config(128, 768, 1280))) == STATUS["ERR_NULL"]
    buffer = np.zeros(lib.hs_channels_state_size(), np.uint8)  # never initialised
    assert lib.hs_channels_add(buffer.ctypes.data, 10, 1.0) == STATUS["ERR_STATE"]
    assert lib.hs_channels_count(buffer.ctypes.data) == STATUS["ERR_STATE"]
    assert lib.hs_channels_rhythm_problem(buffer.ctypes.data, 0) == STATUS["ERR_STATE"]
    beat_only, rhythm_only = Channels(rhythm_window=0), Channels(beat_window=0)
    beat_only.add(500, 1.0)
    rhythm_only.add(500, 1.0)
    view = View(np.zeros(2000, np.float32), 0, 2000)
    assert status_of(lambda: beat_only.rhythm_window(0, view)) == STATUS["ERR_CONFIG"]
    assert status_of(lambda: beat_only.rhythm_problem(0)) == STATUS["ERR_CONFIG"]
    assert status_of(lambda: rhythm_only.beat_window(0, view)) == STATUS["ERR_CONFIG"]
    assert beat_only.beat_window(0, view).shape == (4, 768) and rhythm_only.rhythm_window(0, view).shape == (3, 1280)


def test_bad_input_gives_a_status_and_changes_nothing():
    c = Channels()
    c.add(1000, 1.0)
    c.add(1100, 0.5)
    state = c.buffer.copy()
    for call, status in [
        (lambda: c.add(1200, float("nan")), "ERR_NOT_FINITE"),
        (lambda: c.add(1200, float("inf")), "ERR_NOT_FINITE"),
        (lambda: c.add(1100, 1.0), "ERR_ORDER"),  # not after the last beat
        (lambda: c.add(900, 1.0), "ERR_ORDER"),
        (lambda: c.add(-5, 1.0), "ERR_ORDER"),
        (lambda: c.add(2 ** 45 + 1, 1.0), "ERR_ORDER"),
        (lambda: c.forget(-1), "ERR_ARGUMENT"),
        (lambda: c.forget_before(2 ** 62), "ERR_ARGUMENT"),
        (lambda: c.beat(2), "ERR_ARGUMENT"),
        (lambda: c.beat(-1), "ERR_ARGUMENT"),
        (lambda: c.rhythm_problem(2 ** 60), "ERR_ARGUMENT"),
    ]:
        assert status_of(call) == STATUS[status]
        assert np.array_equal(c.buffer, state)
    lib = c.lib
    assert lib.hs_channels_add_peak(c.state, None, 1200) == STATUS["ERR_NULL"]
    assert lib.hs_channels_beat(c.state, 0, None) == STATUS["ERR_NULL"]
    assert lib.hs_channels_count(None) == STATUS["ERR_NULL"]

    filtered = synthetic_filtered(3000, [1000, 1100])
    good = View(filtered, 0, 3000)
    assert status_of(lambda: c.beat_window(2, good)) == STATUS["ERR_ARGUMENT"]
    assert status_of(lambda: c.add_peak(good, 1100)) == STATUS["ERR_ORDER"]
    assert status_of(lambda: c.add_peak(good, -3)) == STATUS["ERR_ORDER"]
    dropped = View(filtered, 800, 3000)  # beat 0's window starts at 616
    assert status_of(lambda: c.beat_window(0, dropped)) == STATUS["ERR_DROPPED"]
    assert status_of(lambda: c.rhythm_window(700, dropped)) == STATUS["ERR_DROPPED"]
    assert status_of(lambda: c.add_peak(View(filtered, 1300, 3000), 1200)) == STATUS["ERR_DROPPED"]
    poisoned = filtered.copy()
    poisoned[1150] = np.nan
    assert status_of(lambda: c.beat_window(1, View(poisoned, 0, 3000))) == STATUS["ERR_NOT_FINITE"]
    assert status_of(lambda: c.add_peak(View(poisoned, 0, 3000), 1148)) == STATUS["ERR_NOT_FINITE"]
    for field, value in [("head", 3000), ("head", -1), ("count", 3001), ("capacity", 0), ("start", -1), ("data", None)]:
        bad = View(filtered, 0, 3000)
        setattr(bad.struct, field, value)
        assert status_of(lambda: c.beat_window(0, bad)) == STATUS["ERR_ARGUMENT"]
        assert status_of(lambda: c.r_amplitude(bad, 1000)) == STATUS["ERR_ARGUMENT"]
    assert np.array_equal(c.buffer, state)
    assert c.beat_window(1, good).shape == (4, 768)


def test_a_full_state_refuses_a_beat_until_beats_are_forgotten():
    c, python = Channels(), preprocess.BeatContextBuilder()
    for k in range(MAX_BEATS):
        c.add(100 * k, 1.0 + k % 5)
        python.add(100 * k, np.float32(1.0 + k % 5))
    state = c.buffer.copy()
    assert status_of(lambda: c.add(100 * MAX_BEATS, 1.0)) == STATUS["ERR_FULL"]
    assert np.array_equal(c.buffer, state)
    c.forget(MAX_BEATS - 2)
    python.forget(MAX_BEATS - 2)
    for k in range(MAX_BEATS, MAX_BEATS + 300):  # the ring of beats wraps, and the 256-beat history too
        c.add(100 * k + k % 7, 0.5)
        python.add(100 * k + k % 7, np.float32(0.5))
        assert c.beat(c.count() - 1) == python_context(python)[-1]
        if c.count() == MAX_BEATS:
            c.forget(60)
            python.forget(60)
            assert c.context() == python_context(python)
    c.forget(10 ** 6)  # more than kept: all, as del list[:n]
    python.forget(10 ** 6)
    assert c.context() == python_context(python) == []


# --- the Monitor on MIT-BIH ----------------------------------------------------------------------------------------

def monitor_log(monkeypatch, model: str, x: np.ndarray, fs: float, chunk: int) -> tuple[list, np.ndarray]:
    """Runs the Python Monitor over x and records, in order, what its channels did: each beat added (its R peak,
    amplitude, context, and the filtered samples kept then), each forget, each beat and rhythm window it built
    and each rhythm problem it asked. The model itself is replaced by zeros: no window depends on its outputs."""
    log: list = []
    filtered: list[np.ndarray] = []
    holder = {}

    def kept() -> tuple[int, int]:
        samples = holder["monitor"]._filtered
        return samples.start, samples.end

    add, forget = preprocess.BeatContextBuilder.add, monitor_module._EcgTask.forget
    beat_windows, inputs = preprocess.beat_windows, monitor_module._RhythmTask.inputs
    rhythm_problem = preprocess.rhythm_problem

    def recording_add(self, r, amplitude):
        add(self, r, amplitude)
        log.append(("add", r, amplitude, *kept(), python_context(self)[-1]))

    def recording_forget(self, keep_from):
        forget(self, keep_from)
        log.append(("forget", keep_from, len(self.beats.r_peaks)))

    def recording_beat_windows(tracks, indices, window):
        out = beat_windows(tracks, indices, window)
        log.append(("beat", np.asarray(indices).tolist(), out, *kept()))
        return out

    def recording_inputs(self, starts):
        out = inputs(self, starts)
        log.append(("rhythm", starts.tolist(), out, *kept()))
        return out

    def recording_problem(r_peaks, start, window):
        answer = rhythm_problem(r_peaks, start, window)
        log.append(("problem", int(start), answer))
        return answer

    def zeros(self, x):
        return np.zeros((len(x), len(self.spec.outputs)), np.float32), np.zeros((len(x), self.spec.window), np.float32)

    def no_ectopic_beats(classify, tracks, beat_spec, indices):
        preprocess.beat_windows(tracks, indices, beat_spec.window)  # recorded: the rhythm model's beat windows
        return np.zeros(len(indices), bool)

    with monkeypatch.context() as patch:
        patch.setattr(preprocess.BeatContextBuilder, "add", recording_add)
        patch.setattr(monitor_module._EcgTask, "forget", recording_forget)
        patch.setattr(preprocess, "beat_windows", recording_beat_windows)
        patch.setattr(monitor_module._RhythmTask, "inputs", recording_inputs)
        patch.setattr(preprocess, "rhythm_problem", recording_problem)
        patch.setattr(Monitor, "_run", zeros)
        patch.setattr(monitor_module, "ectopic_beats", no_ectopic_beats)
        monitor = holder["monitor"] = Monitor(model, fs=fs)
        band_pass = monitor._filter

        def recording_filter(y):
            out = band_pass(y)
            filtered.append(out[:, 0])
            return out

        monitor._filter = recording_filter
        for i in range(0, len(x), chunk):
            monitor.feed(x[i: i + chunk])
        monitor.finish()
    return log, np.concatenate(filtered).astype(np.float32)


def replay(log: list, filtered: np.ndarray, window: tuple[int, int]) -> dict:
    """The same steps on hs_channels, the filtered ECG in a ring holding what the Monitor kept: every amplitude and
    context equal, every window within TOLERANCE. Returns what was compared and the largest difference."""
    spans = [op[4] - op[3] if op[0] == "add" else op[-1] - op[-2] for op in log if op[0] in ("add", "beat", "rhythm")]
    capacity = max(spans) + 37  # not a round number: the ring wraps at odd places
    c = Channels(*window)
    seen = {"beats": 0, "beat_windows": 0, "rhythm_windows": 0, "problems": 0, "exact": 0, "max_difference": 0.0,
            "max_kept": 0}
    for op in log:
        if op[0] == "add":
            _, r, amplitude, start, end, context = op
            view = View(filtered, start, end, capacity)
            assert c.r_amplitude(view, r) == amplitude
            c.add_peak(view, r)
            assert c.beat(c.count() - 1) == context
            seen["beats"] += 1
            seen["max_kept"] = max(seen["max_kept"], c.count())
        elif op[0] == "forget":
            c.forget_before(op[1])
            assert c.count() == op[2]
        elif op[0] in ("beat", "rhythm"):
            _, where, windows, start, end = op
            view = View(filtered, start, end, capacity)
            for at, expected in zip(where, windows):
                built = c.beat_window(at, view) if op[0] == "beat" else c.rhythm_window(at, view)
                difference = assert_windows_equal(built, expected)
                seen["max_difference"] = max(seen["max_difference"], difference)
                seen["exact"] += int(np.array_equal(built, expected))
                seen[f"{op[0]}_windows"] += 1
        else:
            assert c.rhythm_problem(op[1]) == op[2]
            seen["problems"] += 1
    return seen


WINDOWS = (BEAT.window, RHYTHM.window)


@needs_mitdb
@pytest.mark.parametrize("model", ["ecg_beat_wcam", "ecg_af"])
@pytest.mark.parametrize("record", ["100", "208", "233"])
def test_equals_the_monitor_on_mit_bih(monkeypatch, model, record):
    """The first 5 minutes, fed in chunks of 250 samples at 360 Hz: every beat's amplitude and context, and every
    window the Monitor built (its beat windows; for ecg_af its rhythm windows, the beat windows of its ectopic-beat
    check, and its too-few-beats checks)."""
    card = load_model(model).card
    assert (card["window_samples"], tuple(card["input_channels"])) == \
        ((BEAT.window, BEAT.input_channels) if card["task"] == "beat" else (RHYTHM.window, RHYTHM.input_channels))
    recording = read_database_record("mitdb", record)
    x = recording.channel("MLII")[: int(300 * recording.fs)]
    log, filtered = monitor_log(monkeypatch, model, x, recording.fs, chunk=250)
    seen = replay(log, filtered, WINDOWS)
    print(model, record, seen)
    assert seen["beats"] > 300 and seen["beat_windows"] >= seen["beats"] - 1
    if model == "ecg_af":
        assert seen["rhythm_windows"] == 30 and seen["problems"] <= 30  # the gate's problems are asked first


@needs_mitdb
def test_equals_the_monitor_from_a_beat_at_the_first_sample_through_a_long_pause(monkeypatch):
    """A stream that starts on an R wave (the first beats have no history, their windows, bumps and R search reach
    before sample 0), holds a flat 9 s pause (the beat after it has rr_relative 2, no other beat in its window) and
    ends 2 s after a beat (zero-padded windows). Both models, the rhythm model in big irregular chunks."""
    recording = read_database_record("mitdb", "233")
    first_beat = int(read_annotations("mitdb", "233").sample[1])  # a V beat: its R extremum points down
    x = recording.channel("MLII")[first_beat: first_beat + int(60 * recording.fs)].copy()
    pause = slice(int(20 * recording.fs), int(29 * recording.fs))
    x[pause] = x[pause.start]
    for model, chunk in [("ecg_beat_wcam", 97), ("ecg_af", 1777)]:
        log, filtered = monitor_log(monkeypatch, model, x, recording.fs, chunk)
        seen = replay(log, filtered, WINDOWS)
        print(model, seen)
        added = [op for op in log if op[0] == "add"]
        assert added[0][1] <= 3 and added[0][5][1:3] == (0, 0)  # the first beat at the start of the stream
        assert any(op[5][1] == 2.0 for op in added)  # the pause: RR twice the mean or more
        assert seen["beat_windows"] + seen["rhythm_windows"] > 60


# --- the build for the device ----------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
def test_compiles_for_cortex_m4(tmp_path):
    command = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-std=c99",
               "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-c", str(RUNTIME_DIR / "hs_channels.c"),
               "-I", str(RUNTIME_DIR), "-o", str(tmp_path / "hs_channels.o")]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    disassembly = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "hs_channels.o")],
                                 capture_output=True, text=True).stdout
    assert not re.search(r"\bvfm[as]|\bvml[as]", disassembly)  # no fused multiply-add: numpy rounds each product
