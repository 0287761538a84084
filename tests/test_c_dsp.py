"""hs_dsp (firmware_export/runtime/hs_dsp.c), the C port of the device path's first stages, against the Python it
ports: sdk.device.monitor.StreamResampler (sensor rate -> model rate) and sdk.data.preprocess.CausalFilter
(ecg_bandpass at the model rate). Same number of outputs after every chunk, same values, for any chunking."""

import ctypes
import re
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import sosfilt_zi

from conftest import needs_mitdb
from firmware_export.host import RUNTIME_DIR, build_runtime_library
from sdk.data import preprocess
from sdk.data.records import MAX_RESAMPLING_FACTOR, read_database_record
from sdk.data.synthetic import synthetic_ecg
from sdk.device.monitor import StreamResampler

SOURCES = ["hs_dsp.c"]
HEADER = (RUNTIME_DIR / "hs_dsp.h").read_text()
CODE = {name: int(value) for name, value in re.findall(r"#define HS_DSP_(\w+) \(?(-?\d+)\)?", HEADER)}
MAX_HISTORY = int(re.search(r"#define HS_RESAMPLER_MAX_HISTORY (\d+)", HEADER).group(1))
MODEL_FS = preprocess.ECG_FS
SENSOR_RATES = (125, 128, 250, 256, 360, 500, 512, 1000)
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-std=c99", "-Wall", "-Wextra",
             "-Werror", "-pedantic", "-O2"]

FLOATS = ctypes.POINTER(ctypes.c_float)
DOUBLES = ctypes.POINTER(ctypes.c_double)


class ResamplerConfig(ctypes.Structure):
    _fields_ = [("up", ctypes.c_int), ("down", ctypes.c_int), ("n_taps", ctypes.c_int), ("taps", FLOATS)]


class FilterConfig(ctypes.Structure):
    _fields_ = [("sections", ctypes.c_int), ("sos", DOUBLES), ("zi", DOUBLES)]


@pytest.fixture(scope="module")
def lib():
    library = build_runtime_library(SOURCES)
    state, count, pointer = ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
    for name, argtypes in {
        "hs_resampler_init": [state, pointer],
        "hs_resampler_output_count": [state, count, pointer],
        "hs_resampler_process": [state, pointer, count, pointer, count, pointer],
        "hs_resampler_flush": [state, pointer, count, pointer],
        "hs_filter_init": [state, pointer],
        "hs_filter_process": [state, pointer, count, pointer],
    }.items():
        getattr(library, name).argtypes = argtypes
        getattr(library, name).restype = ctypes.c_int
    for name in ("hs_resampler_state_size", "hs_filter_state_size"):
        getattr(library, name).argtypes = []
        getattr(library, name).restype = ctypes.c_size_t
    return library


class CError(Exception):
    def __init__(self, status: int):
        names = {value: name for name, value in CODE.items()}
        super().__init__(f"HS_DSP_{names.get(status, status)}")
        self.status = status


def check(status: int) -> None:
    if status != CODE["OK"]:
        raise CError(status)


def address(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


class CResampler:
    """hs_resampler on numpy float32 arrays; its state an opaque buffer of hs_resampler_state_size() bytes."""

    def __init__(self, lib, up: int, down: int, taps: np.ndarray | None, n_taps: int | None = None):
        self.lib = lib
        self.taps = None if taps is None else np.ascontiguousarray(taps, np.float32)  # the C reads it: kept alive
        self.config = ResamplerConfig(up, down, len(self.taps) if n_taps is None else n_taps,
                                      None if self.taps is None else self.taps.ctypes.data_as(FLOATS))
        self.state = ctypes.create_string_buffer(lib.hs_resampler_state_size())
        self.status = lib.hs_resampler_init(self.state, ctypes.byref(self.config))

    @classmethod
    def like(cls, lib, python: StreamResampler) -> "CResampler":
        resampler = cls(lib, python.up, python.down, python._filter)
        check(resampler.status)
        return resampler

    def output_count(self, n: int) -> int:
        count = ctypes.c_int(-1)
        check(self.lib.hs_resampler_output_count(self.state, n, ctypes.byref(count)))
        return count.value

    def process(self, x: np.ndarray, capacity: int | None = None) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        capacity = 2 * len(x) + 2 if capacity is None else capacity  # up / down <= 1.6 from 80 Hz into 128 Hz
        y = np.full(max(capacity, 1), np.nan, np.float32)
        made = ctypes.c_int(-1)
        check(self.lib.hs_resampler_process(self.state, address(x), len(x), address(y), capacity, ctypes.byref(made)))
        return y[:made.value]

    def flush(self, capacity: int = 32) -> np.ndarray:
        y = np.full(max(capacity, 1), np.nan, np.float32)
        made = ctypes.c_int(-1)
        check(self.lib.hs_resampler_flush(self.state, address(y), capacity, ctypes.byref(made)))
        return y[:made.value]


class CFilter:
    """hs_filter on numpy float32 arrays."""

    def __init__(self, lib, sos: np.ndarray, zi: np.ndarray | None = None, sections: int | None = None):
        self.lib = lib
        self.sos = np.ascontiguousarray(sos, np.float64)
        self.zi = np.ascontiguousarray(sosfilt_zi(sos) if zi is None else zi, np.float64)
        self.config = FilterConfig(len(self.sos) if sections is None else sections, self.sos.ctypes.data_as(DOUBLES),
                                   self.zi.ctypes.data_as(DOUBLES))
        self.state = ctypes.create_string_buffer(lib.hs_filter_state_size())
        self.status = lib.hs_filter_init(self.state, ctypes.byref(self.config))

    @classmethod
    def like(cls, lib, python: preprocess.CausalFilter) -> "CFilter":
        causal = cls(lib, python.sos)
        check(causal.status)
        return causal

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        y = np.full(len(x), np.nan, np.float32)
        check(self.lib.hs_filter_process(self.state, address(x), len(x), address(y)))
        return y


def cut(x: np.ndarray, size: int | str, seed: int = 0) -> list[np.ndarray]:
    """x in chunks of `size` samples, or "random": 0 to 1500 samples, empty ones included."""
    if size == "random":
        rng = np.random.default_rng(seed)
        edges = np.cumsum(rng.choice([0, 0, 1, 2, 45, 46, 333, 1500], size=len(x)))
        edges = np.concatenate([[0], edges[edges < len(x)], [len(x)]])
    else:
        edges = np.arange(0, len(x) + size, size).clip(max=len(x))
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def resampled_both(lib, x: np.ndarray, fs: float, chunks: list[np.ndarray]
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Python's and C's outputs after each chunk, then after flush."""
    python = StreamResampler(fs, MODEL_FS, 1)
    c = CResampler.like(lib, python)
    by_python, by_c = [], []
    for chunk in chunks:
        by_python.append(python.process(chunk[:, None])[:, 0])
        by_c.append(c.process(chunk))
    by_python.append(python.flush()[:, 0])
    by_c.append(c.flush())
    return by_python, by_c


def assert_resampled_equal(lib, x: np.ndarray, fs: float, size: int | str) -> float:
    """Same count after every chunk, values within float32 rounding of the signal's range; the largest difference."""
    by_python, by_c = resampled_both(lib, x, fs, cut(x, size))
    assert [len(y) for y in by_c] == [len(y) for y in by_python]
    python, c = np.concatenate(by_python), np.concatenate(by_c)
    assert len(python) == -(-len(x) * int(MODEL_FS) // int(fs))  # all of resample_poly's outputs
    difference = float(np.abs(python - c).max()) if len(c) else 0.0
    assert difference < 1e-5 * float(np.ptp(x)), (fs, size, difference)
    return difference


def filtered_both(lib, y: np.ndarray, chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    python, c = preprocess.ecg_bandpass(MODEL_FS), CFilter.like(lib, preprocess.ecg_bandpass(MODEL_FS))
    by_python, by_c = [], []
    for chunk in chunks:
        by_python.append(python(chunk))
        by_c.append(c(chunk))
        assert len(by_c[-1]) == len(by_python[-1]) == len(chunk)
    return np.concatenate(by_python), np.concatenate(by_c)


def mitdb_mlii(record: str) -> tuple[np.ndarray, float]:
    recording = read_database_record("mitdb", record)
    return recording.channel("MLII")[: int(300 * recording.fs)].astype(np.float32), recording.fs


# --- MIT-BIH --------------------------------------------------------------------------------------------------------

@needs_mitdb
@pytest.mark.parametrize("record", ["100", "233"])
def test_resampler_and_filter_equal_python_on_mitdb(lib, record):
    x, fs = mitdb_mlii(record)
    differences = {size: assert_resampled_equal(lib, x, fs, size) for size in (1, 7, 360, len(x), "random")}
    assert max(differences.values()) < 1e-5 * float(np.ptp(x))

    y = StreamResampler(fs, MODEL_FS, 1).process(x[:, None])[:, 0]  # the filter's input: the model-rate signal
    for size in (1, 7, 360, len(y), "random"):
        python, c = filtered_both(lib, y, cut(y, size, seed=1))
        assert np.abs(python - c).max() < 1e-6, (record, size)


@needs_mitdb
def test_resampler_then_filter_chunk_by_chunk_as_the_monitor_runs_them(lib):
    """The Monitor's order: each sensor chunk resampled, what came out filtered, the rest at flush."""
    x, fs = mitdb_mlii("233")
    python_resampler, python_filter = StreamResampler(fs, MODEL_FS, 1), preprocess.ecg_bandpass(MODEL_FS)
    c_resampler = CResampler.like(lib, python_resampler)
    c_filter = CFilter.like(lib, preprocess.ecg_bandpass(MODEL_FS))
    by_python, by_c = [], []
    for chunk in [*cut(x, "random", seed=3), None]:
        y_python = python_resampler.flush()[:, 0] if chunk is None else python_resampler.process(chunk[:, None])[:, 0]
        y_c = c_resampler.flush() if chunk is None else c_resampler.process(chunk)
        assert len(y_c) == len(y_python)
        if len(y_python):
            by_python.append(python_filter(y_python))
            by_c.append(c_filter(y_c))
    python, c = np.concatenate(by_python), np.concatenate(by_c)
    assert len(c) == len(python) == 38400
    assert np.abs(python - c).max() < 1e-6


@needs_mitdb
def test_host_build_is_bit_exact_on_mitdb(lib):
    """Stronger than the contract above, and what the host build gives today: C sums in scipy's order with scipy's
    types, so every resampled and filtered sample is the same float32. (Should a scipy release reorder its sums,
    this fails while the tolerances hold.)"""
    x, fs = mitdb_mlii("100")
    by_python, by_c = resampled_both(lib, x, fs, cut(x, "random", seed=5))
    python, c = np.concatenate(by_python), np.concatenate(by_c)
    assert np.array_equal(python, c)
    assert np.array_equal(preprocess.ecg_bandpass(MODEL_FS)(python), CFilter.like(lib, preprocess.ecg_bandpass())(c))


# --- synthetic signals, every supported sensor rate -----------------------------------------------------------------

@pytest.mark.parametrize("fs", [fs for fs in SENSOR_RATES if fs != MODEL_FS])
def test_resampler_equals_python_at_every_sensor_rate(lib, fs):
    x = synthetic_ecg(duration_s=20.0, fs=fs, heart_rate=75.0, seed=fs).signal + np.float32(1.5)  # with a DC offset
    for size in (1, 7, 360, len(x), "random"):
        assert_resampled_equal(lib, x, fs, size)


def test_pass_through_at_the_model_rate(lib):
    """128 Hz in: StreamResampler's up == down branch (process returns the chunk, flush nothing). Compared with that
    branch's behaviour, not with a StreamResampler: its constructor designs the unused filter first, and firwin
    refuses the cutoff 1 / max(1, 1) = Nyquist, so StreamResampler(128, 128) raises ValueError."""
    x = synthetic_ecg(duration_s=5.0, fs=MODEL_FS, seed=1).signal
    c = CResampler(lib, 1, 1, None, n_taps=0)
    check(c.status)
    for chunk in cut(x, "random"):
        assert c.output_count(len(chunk)) == len(chunk)
        assert np.array_equal(c.process(chunk), chunk)
    assert len(c.flush()) == len(c.flush()) == 0


def test_short_streams_and_flush(lib):
    """Streams shorter than the look-ahead (nothing comes out before flush), flush with no input, flush twice."""
    x = synthetic_ecg(duration_s=2.0, fs=360.0, seed=2).signal
    for n in (0, 1, 2, 5, 27, 28, 29, 30, 100):
        python = StreamResampler(360.0, MODEL_FS, 1)
        c = CResampler.like(lib, python)
        processed_python, processed_c = python.process(x[:n, None])[:, 0], c.process(x[:n])
        flushed_python, flushed_c = python.flush()[:, 0], c.flush()
        assert len(processed_c) == len(processed_python) and len(flushed_c) == len(flushed_python)
        assert len(processed_c) + len(flushed_c) == -(-n * 16 // 45)  # resample_poly's length
        np.testing.assert_allclose(np.concatenate([processed_c, flushed_c]),
                                   np.concatenate([processed_python, flushed_python]), rtol=0, atol=1e-6)
        assert len(c.flush()) == len(python.flush()) == 0  # a second flush gives nothing, as Python's does
        with pytest.raises(CError) as refused:  # the stream has ended
            c.process(x[:3])
        assert refused.value.status == CODE["ERR_FINISHED"]


def test_zero_length_chunks_change_nothing(lib):
    x = synthetic_ecg(duration_s=10.0, fs=250.0, seed=3).signal
    chunks = [x[:0], x[:0], *[piece for chunk in cut(x, 500) for piece in (chunk, x[:0])]]
    by_python, by_c = resampled_both(lib, x, 250.0, chunks)
    assert [len(y) for y in by_c] == [len(y) for y in by_python]
    assert len(by_c[0]) == len(by_c[1]) == 0
    assert np.abs(np.concatenate(by_python) - np.concatenate(by_c)).max() < 1e-5 * float(np.ptp(x))

    y = StreamResampler(250.0, MODEL_FS, 1).process(x[:, None])[:, 0]
    python, c = filtered_both(lib, y, [y[:0], y[:0], *[piece for chunk in cut(y, 64) for piece in (chunk, y[:0])]])
    assert np.abs(python - c).max() < 1e-6  # the state starts at the first sample, not at the first (empty) chunk


def test_silence_and_a_constant_offset(lib):
    silence = np.zeros(3600, np.float32)
    by_python, by_c = resampled_both(lib, silence, 360.0, cut(silence, 7))
    assert [len(y) for y in by_c] == [len(y) for y in by_python]
    assert not np.concatenate(by_c).any()
    python, c = filtered_both(lib, silence[:1280], cut(silence[:1280], 1))
    assert not c.any() and not python.any()

    offset = np.full(1280, 2.75, np.float32)  # a DC offset: steady from the first sample, no ringing
    python, c = filtered_both(lib, offset, cut(offset, 7))
    assert np.abs(python - c).max() < 1e-6
    assert np.abs(c).max() < 1e-5


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_and_consume_nothing(lib, bad):
    x = synthetic_ecg(duration_s=4.0, fs=360.0, seed=4).signal
    python = StreamResampler(360.0, MODEL_FS, 1)
    c = CResampler.like(lib, python)
    expected = [python.process(chunk[:, None])[:, 0] for chunk in cut(x, 100)] + [python.flush()[:, 0]]
    got = []
    for chunk in cut(x, 100):
        poisoned = chunk.copy()
        poisoned[len(chunk) // 2] = bad
        with pytest.raises(CError) as refused:
            c.process(poisoned)
        assert refused.value.status == CODE["ERR_NOT_FINITE"]
        got.append(c.process(chunk))
    got.append(c.flush())
    assert [len(y) for y in got] == [len(y) for y in expected]
    assert np.array_equal(np.concatenate(got), np.concatenate(expected))

    y = np.concatenate(expected)
    causal = CFilter.like(lib, preprocess.ecg_bandpass())
    poisoned = y[:10].copy()
    poisoned[0] = bad
    with pytest.raises(CError) as refused:  # before the first sample: must not start the state on it
        causal(poisoned)
    assert refused.value.status == CODE["ERR_NOT_FINITE"]
    assert np.array_equal(causal(y), preprocess.ecg_bandpass()(y))


def test_output_count_and_a_too_small_buffer(lib):
    x = synthetic_ecg(duration_s=3.0, fs=125.0, seed=5).signal  # upsampling: some chunks give more than they take
    python = StreamResampler(125.0, MODEL_FS, 1)
    c = CResampler.like(lib, python)
    for chunk in cut(x, "random", seed=6):
        expected = python.process(chunk[:, None])[:, 0]
        count = c.output_count(len(chunk))
        assert count == len(expected) <= -(-len(chunk) * 128 // 125)
        if count:
            with pytest.raises(CError) as refused:
                c.process(chunk, capacity=count - 1)
            assert refused.value.status == CODE["ERR_CAPACITY"]
        np.testing.assert_allclose(c.process(chunk, capacity=count), expected, rtol=0, atol=1e-6)
    remaining = python.flush()[:, 0]
    assert 0 < len(remaining) <= 18
    with pytest.raises(CError) as refused:
        c.flush(capacity=len(remaining) - 1)
    assert refused.value.status == CODE["ERR_CAPACITY"]
    np.testing.assert_allclose(c.flush(capacity=len(remaining)), remaining, rtol=0, atol=1e-6)


def test_bad_calls_give_status_codes(lib):
    c = CResampler.like(lib, StreamResampler(360.0, MODEL_FS, 1))
    x = np.zeros(4, np.float32)
    y = np.zeros(4, np.float32)
    made = ctypes.c_int()
    assert lib.hs_resampler_process(c.state, address(x), -1, address(y), 4, ctypes.byref(made)) == CODE["ERR_LENGTH"]
    assert lib.hs_resampler_process(c.state, None, 4, address(y), 4, ctypes.byref(made)) == CODE["ERR_NULL"]
    assert lib.hs_resampler_process(None, address(x), 4, address(y), 4, ctypes.byref(made)) == CODE["ERR_NULL"]
    assert lib.hs_resampler_process(c.state, address(x), 4, address(y), 4, None) == CODE["ERR_NULL"]
    assert lib.hs_resampler_process(c.state, address(x), 4, address(y), -1, ctypes.byref(made)) == CODE["ERR_LENGTH"]
    assert lib.hs_resampler_output_count(c.state, -1, ctypes.byref(made)) == CODE["ERR_LENGTH"]
    assert lib.hs_resampler_flush(None, address(y), 4, ctypes.byref(made)) == CODE["ERR_NULL"]
    assert lib.hs_resampler_init(None, ctypes.byref(c.config)) == CODE["ERR_NULL"]
    assert lib.hs_resampler_init(c.state, None) == CODE["ERR_NULL"]
    never_initialised = ctypes.create_string_buffer(lib.hs_resampler_state_size())
    assert lib.hs_resampler_process(never_initialised, address(x), 4, address(y), 4,
                                    ctypes.byref(made)) == CODE["ERR_STATE"]
    assert lib.hs_resampler_flush(never_initialised, address(y), 4, ctypes.byref(made)) == CODE["ERR_STATE"]

    causal = CFilter.like(lib, preprocess.ecg_bandpass())
    assert lib.hs_filter_process(causal.state, address(x), -1, address(y)) == CODE["ERR_LENGTH"]
    assert lib.hs_filter_process(causal.state, address(x), 4, None) == CODE["ERR_NULL"]
    assert lib.hs_filter_process(None, address(x), 4, address(y)) == CODE["ERR_NULL"]
    assert lib.hs_filter_process(ctypes.create_string_buffer(lib.hs_filter_state_size()), address(x), 4,
                                 address(y)) == CODE["ERR_STATE"]
    assert lib.hs_filter_init(causal.state, None) == CODE["ERR_NULL"]


def test_filter_in_place(lib):
    y = synthetic_ecg(duration_s=5.0, fs=MODEL_FS, seed=7).signal
    causal = CFilter.like(lib, preprocess.ecg_bandpass())
    buffer = y.copy()
    check(lib.hs_filter_process(causal.state, address(buffer), len(buffer), address(buffer)))
    assert np.array_equal(buffer, preprocess.ecg_bandpass()(y))


# --- configuration --------------------------------------------------------------------------------------------------

def test_resampler_config_is_validated(lib):
    python = StreamResampler(360.0, MODEL_FS, 1)
    taps = python._filter
    assert CResampler(lib, 16, 45, taps).status == CODE["OK"]
    assert CResampler(lib, 32, 90, taps).status == CODE["ERR_CONFIG"]  # not reduced: not resample_factors'
    assert CResampler(lib, 0, 45, taps).status == CODE["ERR_CONFIG"]
    assert CResampler(lib, 16, -45, taps).status == CODE["ERR_CONFIG"]
    assert CResampler(lib, 2, 2, None, n_taps=0).status == CODE["ERR_CONFIG"]
    assert CResampler(lib, 16, MAX_RESAMPLING_FACTOR + 1, taps).status == CODE["ERR_CONFIG"]
    assert CResampler(lib, 16, 45, taps[:-1]).status == CODE["ERR_CONFIG"]  # not 20 * max(up, down) + 1 taps
    assert CResampler(lib, 16, 45, None, n_taps=len(taps)).status == CODE["ERR_NULL"]
    poisoned = taps.copy()
    poisoned[450] = np.nan
    assert CResampler(lib, 16, 45, poisoned).status == CODE["ERR_CONFIG"]
    # 2000 Hz into 128 Hz (8 / 125): a valid ratio, but its filter spans more input than this build keeps
    assert CResampler(lib, 8, 125, np.zeros(2501, np.float32)).status == CODE["ERR_UNSUPPORTED"]
    failed = CResampler(lib, 32, 90, taps)
    with pytest.raises(CError) as refused:  # a state whose init failed is not usable
        failed.process(np.zeros(3, np.float32))
    assert refused.value.status == CODE["ERR_STATE"]


def test_history_covers_every_input_rate_up_to_1000_hz(lib):
    """HS_RESAMPLER_MAX_HISTORY is what the worst rate needs: every integer rate from 80 Hz (the lowest ECG rate
    check_input_rate allows) to 1000 Hz is accepted into 128 Hz, and 158 is needed."""
    needed = []
    for fs in range(80, 1001):
        ratio = Fraction(int(MODEL_FS), fs)
        up, down = ratio.numerator, ratio.denominator
        if up == down:
            continue
        half = 10 * max(up, down)
        needed.append(2 * half // up + 2)
        resampler = CResampler(lib, up, down, np.zeros(2 * half + 1, np.float32))
        assert resampler.status == CODE["OK"], fs
    assert max(needed) == MAX_HISTORY


def test_filter_config_is_validated(lib):
    sos = preprocess.ecg_bandpass().sos
    assert CFilter(lib, sos).status == CODE["OK"]
    assert CFilter(lib, sos, sections=0).status == CODE["ERR_CONFIG"]
    assert CFilter(lib, np.concatenate([sos, sos, sos])).status == CODE["ERR_CONFIG"]  # 6 sections: more than 4
    not_normalised = sos.copy()
    not_normalised[1, 3] = 2.0
    assert CFilter(lib, not_normalised, zi=sosfilt_zi(sos)).status == CODE["ERR_CONFIG"]
    poisoned = sos.copy()
    poisoned[0, 1] = np.nan
    assert CFilter(lib, poisoned, zi=sosfilt_zi(sos)).status == CODE["ERR_CONFIG"]
    poisoned_zi = sosfilt_zi(sos)
    poisoned_zi[1, 1] = np.inf
    assert CFilter(lib, sos, zi=poisoned_zi).status == CODE["ERR_CONFIG"]


def test_ppg_bandpass_too(lib):
    """The same filter code runs ppg_bandpass (the PPG model's band at 32 Hz)."""
    t = np.arange(int(30 * preprocess.PPG_FS)) / preprocess.PPG_FS
    rng = np.random.default_rng(8)
    y = (400 + 30 * np.sin(2 * np.pi * 1.2 * t) + 5 * np.sin(2 * np.pi * 0.2 * t) + rng.normal(0, 1, len(t))
         ).astype(np.float32)  # a pulse at 72 bpm on a large DC level, breathing and noise, in sensor counts
    python, c = preprocess.ppg_bandpass(), CFilter.like(lib, preprocess.ppg_bandpass())
    got = np.concatenate([c(chunk) for chunk in cut(y, 7)])
    assert np.abs(got - np.concatenate([python(chunk) for chunk in cut(y, 7)])).max() < 1e-6


# --- sizes and the target -------------------------------------------------------------------------------------------

def test_state_sizes(lib):
    resampler, causal = lib.hs_resampler_state_size(), lib.hs_filter_state_size()
    assert 2 * MAX_HISTORY * 4 < resampler <= 2 * MAX_HISTORY * 4 + 64  # the ring, twice; the taps stay in flash
    assert causal <= 4 * 10 * 8 + 32  # 4 sections of 10 doubles at most


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                    reason="arm-none-eabi-gcc not installed (apt-get install -y --no-install-recommends "
                           "gcc-arm-none-eabi libnewlib-arm-none-eabi)")
def test_compiles_for_cortex_m4_without_static_state(tmp_path):
    for source in SOURCES:
        obj = tmp_path / source.replace(".c", ".o")
        run = subprocess.run(["arm-none-eabi-gcc", *ARM_FLAGS, "-I", str(RUNTIME_DIR), "-c", str(RUNTIME_DIR / source),
                              "-o", str(obj)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        sizes = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True)
        text, data, bss = map(int, sizes.stdout.splitlines()[1].split()[:3])
        assert text > 0 and data == 0 and bss == 0  # all state in the caller's structs
        symbols = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True, check=True)
        assert "malloc" not in symbols.stdout
