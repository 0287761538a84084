"""hs_rpeak (firmware_export/runtime/hs_rpeak.c), the C port of the streaming R-peak detector, against the Python it
ports: sdk.data.rpeak.RPeakDetector. Same peaks from the same calls and the same settled_until after every call, on
MIT-BIH leads at the device rate (128 Hz) and natively (360 Hz), and on synthetic edge cases, for any chunking."""

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest
from scipy.signal import butter, group_delay, sos2tf, sosfilt_zi

from conftest import needs_mitdb
from firmware_export.host import RUNTIME_DIR, build_runtime_library
from sdk.data.preprocess import ECG_FS
from sdk.data.records import read_database_record, resample
from sdk.data.rpeak import QRS_BAND_HZ, RPeakDetector
from sdk.data.synthetic import synthetic_ecg
from sdk.errors import HeartSightError

SOURCES = ["hs_rpeak.c"]
HEADER = (RUNTIME_DIR / "hs_rpeak.h").read_text()
CODE = {name: int(value) for name, value in re.findall(r"#define HS_RPEAK_(OK|ERR_\w+) \(?(-?\d+)\)?", HEADER)}
NATIVE_FLAGS = ["-DHS_RPEAK_MAX_FS=360"]  # MIT-BIH's own rate, for the offline use at the sensor rate
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-std=c99", "-Wall", "-Wextra",
             "-Werror", "-pedantic", "-O2"]


class RPeakConfig(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_double), ("b", ctypes.c_double * 3), ("a", ctypes.c_double * 2),
                ("zi", ctypes.c_double * 2), ("band_delay", ctypes.c_int)]


def rpeak_config(fs: float) -> RPeakConfig:
    """What the exporter writes for the detector at fs: RPeakDetector's band-pass, its steady state and delay."""
    sos = butter(1, QRS_BAND_HZ, btype="bandpass", fs=fs, output="sos")
    _, delay = group_delay(sos2tf(sos), w=[np.mean(QRS_BAND_HZ)], fs=fs)
    zi = sosfilt_zi(sos)[0]
    return RPeakConfig(float(fs), (ctypes.c_double * 3)(*sos[0, :3]), (ctypes.c_double * 2)(*sos[0, 4:]),
                       (ctypes.c_double * 2)(*zi), int(round(float(delay[0]))))


def load(extra_flags: list[str] = ()) -> ctypes.CDLL:
    library = build_runtime_library(SOURCES, list(extra_flags))
    state, count, pointer = ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
    for name, argtypes in {
        "hs_rpeak_init": [state, pointer],
        "hs_rpeak_process": [state, pointer, count, pointer, count, pointer],
        "hs_rpeak_flush": [state, pointer, count, pointer],
        "hs_rpeak_settled_until": [state, pointer],
        "hs_rpeak_forgotten": [state, pointer],
    }.items():
        getattr(library, name).argtypes = argtypes
        getattr(library, name).restype = ctypes.c_int
    library.hs_rpeak_state_size.argtypes = []
    library.hs_rpeak_state_size.restype = ctypes.c_size_t
    return library


@pytest.fixture(scope="module")
def lib():
    return load()


@pytest.fixture(scope="module")
def lib360():
    return load(NATIVE_FLAGS)


class CError(Exception):
    def __init__(self, status: int):
        names = {value: name for name, value in CODE.items()}
        super().__init__(f"HS_RPEAK_{names.get(status, status)}")
        self.status = status


def check(status: int) -> None:
    if status != CODE["OK"]:
        raise CError(status)


def header_value(name: str) -> int:
    """A size hs_rpeak.h derives with integer arithmetic, as the preprocessor expands it in the default build."""
    run = subprocess.run([shutil.which("gcc"), "-E", "-P", "-I", str(RUNTIME_DIR), "-x", "c", "-"],
                         input=f'#include "hs_rpeak.h"\n{name}\n', capture_output=True, text=True, check=True)
    return int(eval(run.stdout.strip().splitlines()[-1].replace("/", "//")))


class CRPeakDetector:
    """hs_rpeak as RPeakDetector: process(float32 chunk) and flush() give int64 peaks, settled_until a number. The
    state is an opaque buffer of hs_rpeak_state_size() bytes."""

    def __init__(self, library: ctypes.CDLL, fs: float):
        self.library = library
        self.state = ctypes.create_string_buffer(library.hs_rpeak_state_size())
        self.capacity = 1024  # at least HS_RPEAK_MAX_PEAKS of any build these tests make
        self.peaks = np.zeros(self.capacity, np.int64)
        check(library.hs_rpeak_init(self.state, ctypes.byref(rpeak_config(fs))))

    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(chunk, np.float32)
        n = ctypes.c_int(-1)
        check(self.library.hs_rpeak_process(self.state, x.ctypes.data if x.size else None, x.size,
                                            self.peaks.ctypes.data, self.capacity, ctypes.byref(n)))
        return self.peaks[: n.value].copy()

    def flush(self) -> np.ndarray:
        n = ctypes.c_int(-1)
        check(self.library.hs_rpeak_flush(self.state, self.peaks.ctypes.data, self.capacity, ctypes.byref(n)))
        return self.peaks[: n.value].copy()

    @property
    def settled_until(self) -> int:
        settled = ctypes.c_int64()
        check(self.library.hs_rpeak_settled_until(self.state, ctypes.byref(settled)))
        return settled.value

    @property
    def forgotten(self) -> int:
        forgotten = ctypes.c_uint32()
        check(self.library.hs_rpeak_forgotten(self.state, ctypes.byref(forgotten)))
        return forgotten.value


def chunks_of(signal: np.ndarray, sizes) -> list[np.ndarray]:
    """The signal cut into chunks whose lengths cycle through sizes."""
    sizes = [sizes] if np.isscalar(sizes) else list(sizes)
    out, begin, i = [], 0, 0
    while begin < signal.size:
        out.append(signal[begin: begin + sizes[i % len(sizes)]])
        begin += sizes[i % len(sizes)]
        i += 1
    return out


def compare(library: ctypes.CDLL, signal: np.ndarray, fs: float, sizes) -> dict:
    """Both detectors fed the same chunks: the first call whose peaks or settled_until differ (None when none does),
    and the peaks of each."""
    python, c = RPeakDetector(fs), CRPeakDetector(library, fs)
    python_peaks, c_peaks, first_difference = [], [], None
    for call, chunk in enumerate([*chunks_of(signal, sizes), None]):
        expected = python.process(chunk) if chunk is not None else python.flush()
        got = c.process(chunk) if chunk is not None else c.flush()
        python_peaks.append(expected)
        c_peaks.append(got)
        if first_difference is None and (not np.array_equal(expected, got)
                                         or python.settled_until != c.settled_until):
            first_difference = {"call": call, "python": expected.tolist(), "c": got.tolist(),
                                "python_settled": python.settled_until, "c_settled": c.settled_until}
    return {"python": np.concatenate(python_peaks), "c": np.concatenate(c_peaks),
            "first_difference": first_difference, "forgotten": c.forgotten}


def assert_equal(library: ctypes.CDLL, signal: np.ndarray, fs: float, sizes) -> np.ndarray:
    result = compare(library, np.asarray(signal, np.float32), fs, sizes)
    assert result["first_difference"] is None, result["first_difference"]
    assert result["forgotten"] == 0
    return result["python"]


def mlii(record: str) -> tuple[np.ndarray, float]:
    recording = read_database_record("mitdb", record)
    return recording.channel("MLII"), recording.fs


# --- MIT-BIH -------------------------------------------------------------------------------------------------------

@needs_mitdb
@pytest.mark.parametrize("record", ["100", "208", "233"])
def test_mitdb_at_the_device_rate(lib, record):
    """As the Monitor feeds it: MLII resampled to 128 Hz, in chunks of 1 s and of 37 samples."""
    lead, fs = mlii(record)
    at_device_rate = resample(lead, fs, ECG_FS)
    for sizes in (128, 37):
        peaks = assert_equal(lib, at_device_rate, ECG_FS, sizes)
        assert peaks.size > 1500  # every record has over 1500 beats: the detector ran, not just agreed on nothing


@needs_mitdb
def test_mitdb_at_the_native_rate(lib360):
    """Offline at the record's 360 Hz (a build for that rate), 5 minutes in chunks of varying length."""
    lead, fs = mlii("105")  # the noisiest DS2 record: search-back and the T-wave rule at work
    assert_equal(lib360, lead[: 5 * 60 * 360], fs, [360, 1, 97, 250, 13])


@needs_mitdb
def test_mitdb_chunks_of_every_size(lib):
    """One minute cut into chunks of 1 to 128 samples, sizes cycling: the integrator's rounding depends on how the
    signal is cut, and numpy sums short chunks another way than long ones."""
    lead, fs = mlii("203")
    at_device_rate = resample(lead[: 60 * 360], fs, ECG_FS)
    assert_equal(lib, at_device_rate, ECG_FS, range(1, 129))
    assert_equal(lib, at_device_rate[:1500], ECG_FS, 1)


# --- synthetic edge cases ------------------------------------------------------------------------------------------

def synthetic(seconds: float, fs: float, seed: int = 0) -> np.ndarray:
    """A synthetic lead at fs (made at twice the rate and resampled below the generator's 50 Hz)."""
    if fs < 50:
        return resample(synthetic(seconds, 2 * fs, seed), 2 * fs, fs)
    return synthetic_ecg(seconds, fs, seed=seed).signal.astype(np.float32)


@pytest.mark.parametrize("fs", [40.0, 50.0, 128.0, 250.0, 360.0])
def test_synthetic_at_several_rates(lib360, fs):
    """Short integration windows (under 12 samples below 77 Hz) take numpy's other summation path."""
    x = synthetic(40, fs, seed=int(fs))
    peaks = assert_equal(lib360, x, fs, [int(fs), 7, 1, 30])
    assert peaks.size > 20


@pytest.mark.parametrize("sizes", [1, 2, 5, 11, 12, 18, 19, 20, 64, 128, [3, 128, 1, 40]])
def test_chunk_sizes(lib, sizes):
    x = synthetic(20, ECG_FS, seed=3)
    assert_equal(lib, x, ECG_FS, sizes)


def test_nan_and_inf_count_as_zero(lib):
    """Dropouts: a NaN run, single NaNs and infinities; the first sample NaN too (it sets the filter state)."""
    x = synthetic(60, ECG_FS, seed=4)
    x[0] = np.nan
    x[1000:1400] = np.nan
    x[2000] = np.inf
    x[2500] = -np.inf
    x[3000:3003] = np.nan
    for sizes in (128, 37):
        assert_equal(lib, x, ECG_FS, sizes)


def test_silence_and_flat_lines(lib):
    """All zero (no candidate ever), a constant offset, and ECG after a long flat stretch (search-backs that find
    nothing and halve the signal level, then a very long RR)."""
    assert_equal(lib, np.zeros(30 * 128, np.float32), ECG_FS, 128)
    assert_equal(lib, np.full(30 * 128, 1.7, np.float32), ECG_FS, 37)
    x = np.concatenate([synthetic(10, ECG_FS, 5), np.zeros(90 * 128, np.float32), synthetic(30, ECG_FS, 6)])
    peaks = assert_equal(lib, x, ECG_FS, 128)
    assert peaks.size > 30


def test_short_signals_and_flush(lib):
    """Signals that end before the learning period does (the levels come from what there was), an empty chunk,
    and flush twice."""
    x = synthetic(10, ECG_FS, seed=7)
    for n in (1, 2, 30, 200, 255, 256, 257, 400):
        assert_equal(lib, x[:n], ECG_FS, 37)
    detector = CRPeakDetector(lib, ECG_FS)
    assert detector.process(np.zeros(0, np.float32)).size == 0
    assert detector.flush().size == 0 and detector.flush().size == 0


def test_noise_and_large_values(lib):
    """Noise only (search-back at work the whole time) and values near float32's limits."""
    rng = np.random.default_rng(8)
    assert_equal(lib, rng.normal(0, 1, 60 * 128).astype(np.float32), ECG_FS, 37)
    big = synthetic(20, ECG_FS, 9) * np.float32(1e37)
    assert_equal(lib, big, ECG_FS, 128)
    assert_equal(lib, synthetic(20, ECG_FS, 10) * np.float32(1e-30), ECG_FS, 128)


# --- the C API's own checks ----------------------------------------------------------------------------------------

def test_bad_configurations_are_refused(lib):
    size = lib.hs_rpeak_state_size()
    state = ctypes.create_string_buffer(size)
    assert lib.hs_rpeak_init(None, ctypes.byref(rpeak_config(ECG_FS))) == CODE["ERR_NULL"]
    assert lib.hs_rpeak_init(state, None) == CODE["ERR_NULL"]
    for fs in (39.0, 129.0, float("nan"), float("inf"), -128.0):  # this build goes up to 128 Hz
        config = rpeak_config(ECG_FS)
        config.fs = fs
        assert lib.hs_rpeak_init(state, ctypes.byref(config)) == CODE["ERR_UNSUPPORTED"], fs
    for field, index, value in [("b", 0, float("nan")), ("a", 1, 1.5), ("a", 0, -3.0), ("zi", 0, float("inf"))]:
        config = rpeak_config(ECG_FS)
        getattr(config, field)[index] = value
        assert lib.hs_rpeak_init(state, ctypes.byref(config)) == CODE["ERR_CONFIG"], (field, value)
    for delay in (-1, 100):
        config = rpeak_config(ECG_FS)
        config.band_delay = delay
        assert lib.hs_rpeak_init(state, ctypes.byref(config)) == CODE["ERR_CONFIG"], delay
    assert lib.hs_rpeak_init(state, ctypes.byref(rpeak_config(40.0))) == CODE["OK"]


def test_bad_calls_change_nothing(lib):
    """Each refused call returns its code and leaves the detector as it was: the same peaks as Python's after."""
    max_chunk = header_value("HS_RPEAK_MAX_CHUNK")
    max_peaks = header_value("HS_RPEAK_MAX_PEAKS")
    x = synthetic(20, ECG_FS, seed=11)
    python, c = RPeakDetector(ECG_FS), CRPeakDetector(lib, ECG_FS)
    n = ctypes.c_int()
    peaks = np.zeros(max_peaks, np.int64)
    uninitialised = ctypes.create_string_buffer(lib.hs_rpeak_state_size())
    assert lib.hs_rpeak_process(uninitialised, x.ctypes.data, 10, peaks.ctypes.data, max_peaks,
                                ctypes.byref(n)) == CODE["ERR_STATE"]
    assert lib.hs_rpeak_settled_until(uninitialised, ctypes.byref(ctypes.c_int64())) == CODE["ERR_STATE"]
    for chunk in chunks_of(x, 100):
        big = np.zeros(max_chunk + 1, np.float32)
        assert lib.hs_rpeak_process(c.state, big.ctypes.data, big.size, peaks.ctypes.data, max_peaks,
                                    ctypes.byref(n)) == CODE["ERR_LENGTH"]
        assert lib.hs_rpeak_process(c.state, chunk.ctypes.data, -1, peaks.ctypes.data, max_peaks,
                                    ctypes.byref(n)) == CODE["ERR_LENGTH"]
        assert lib.hs_rpeak_process(c.state, chunk.ctypes.data, chunk.size, peaks.ctypes.data, max_peaks - 1,
                                    ctypes.byref(n)) == CODE["ERR_CAPACITY"]
        assert lib.hs_rpeak_process(c.state, None, chunk.size, peaks.ctypes.data, max_peaks,
                                    ctypes.byref(n)) == CODE["ERR_NULL"]
        assert lib.hs_rpeak_process(c.state, chunk.ctypes.data, chunk.size, None, max_peaks,
                                    ctypes.byref(n)) == CODE["ERR_NULL"]
        assert np.array_equal(c.process(chunk), python.process(chunk))
        assert c.settled_until == python.settled_until
    assert np.array_equal(c.flush(), python.flush())
    assert c.settled_until == python.settled_until
    assert lib.hs_rpeak_process(c.state, x.ctypes.data, 10, peaks.ctypes.data, max_peaks,
                                ctypes.byref(n)) == CODE["ERR_FINISHED"]
    with pytest.raises(HeartSightError):
        python.process(x[:10])


def test_a_full_noise_list_forgets_its_oldest():
    """A build that keeps 2 noise candidates, fed a slow noisy rhythm (P and T waves and noise judged noise between
    beats): it forgets, says so, and stays well defined (increasing peaks, every call accepted). The default build
    has room for them all and equals Python on the same signal."""
    x = synthetic_ecg(60, ECG_FS, heart_rate=30, noise_mv=0.05, seed=1).signal
    small = CRPeakDetector(load(["-DHS_RPEAK_MAX_NOISE=2"]), ECG_FS)
    peaks = np.concatenate([*(small.process(chunk) for chunk in chunks_of(x, 37)), small.flush()])
    assert small.forgotten > 0
    assert np.all(np.diff(peaks) > 0)
    assert_equal(load(), x, ECG_FS, 37)


def test_state_size_and_sizes_of_a_device_build(lib):
    """The default build is for the 128 Hz models; its state stays small enough for a microcontroller."""
    assert header_value("HS_RPEAK_MAX_FS") == 128
    assert lib.hs_rpeak_state_size() < 16 * 1024


def test_compiles_for_cortex_m4():
    compiler = shutil.which("arm-none-eabi-gcc")
    if compiler is None:
        pytest.skip("arm-none-eabi-gcc not installed (apt-get install -y --no-install-recommends gcc-arm-none-eabi "
                    "libnewlib-arm-none-eabi)")
    for extra in ([], NATIVE_FLAGS, ["-DHS_RPEAK_UNFUSED_FMA"]):
        run = subprocess.run([compiler, *ARM_FLAGS, *extra, "-I", str(RUNTIME_DIR), "-c",
                              str(RUNTIME_DIR / "hs_rpeak.c"), "-o", "/dev/null"], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
