"""The C signal-quality gate (firmware_export/runtime/hs_quality.c) against sdk.device.quality.QualityGate: the same
events, the same known_until after every chunk and the same window_problem answers, for any chunking and any size
of the caller's event array, on MIT-BIH and on signals with dropouts, flat lines, clipping and noise."""

import ctypes
import math
import shutil
import subprocess

import numpy as np
import pytest

from conftest import needs_mitdb
from firmware_export.host import RUNTIME_DIR, STRICT_FLAGS, build_runtime_library
from sdk.data import synthetic
from sdk.data.records import read_database_record
from sdk.data.synthetic_ppg import synthetic_ppg
from sdk.device.quality import QualityEvent, QualityGate

# hs_quality.h
OK, ERR_NULL, ERR_UNSUPPORTED, ERR_SIGNAL, ERR_ARGUMENT, ERR_FINISHED, ERR_STATE, OUTPUT_FULL = 0, -1, -2, -3, -4, -5, -6, -7
SIGNALS = {"ecg": 0, "ppg": 1}
KINDS = (None, "nan", "flat_line", "clipping", "noise")
ONGOING = -1
MAX_STRETCHES = 128
MODEL_FS = 128.0  # the ECG models' rate; windows are asked about at it
WINDOWS = (64, 768, 1280)  # model-rate lengths: short, a beat window, a rhythm window

# the Python gate's second differences of infinite samples (inf - inf), which it then leaves out
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")


class Event(ctypes.Structure):
    _fields_ = [("start", ctypes.c_int64), ("end", ctypes.c_int64), ("kind", ctypes.c_int32)]


class Config(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_double), ("signal", ctypes.c_int)]


@pytest.fixture(scope="module")
def lib():
    library = build_runtime_library(["hs_quality.c"])
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {
        "hs_quality_state_size": (ctypes.c_size_t, []),
        "hs_quality_init": (i32, [p, p]),
        "hs_quality_process": (i32, [p, p, i32, p, i32, p, p]),
        "hs_quality_flush": (i32, [p, p, i32, p]),
        "hs_quality_known_until": (i32, [p, p]),
        "hs_quality_problem": (i32, [p, i64, i64, p]),
        "hs_quality_window_problem": (i32, [p, i64, i64, ctypes.c_double, p]),
        "hs_quality_forget": (i32, [p, i64]),
        "hs_quality_block_samples": (i32, [p, p]),
        "hs_quality_overflows": (i32, [p, p]),
        "hs_quality_kind_name": (ctypes.c_char_p, [i32]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(library, name)
        function.restype, function.argtypes = restype, argtypes
    return library


class CGate:
    """QualityGate's interface on the C gate: the state is an opaque buffer of hs_quality_state_size() bytes.
    `capacity` is the size of the event array handed to each call (1 makes every block's events come one by one)."""

    def __init__(self, lib, fs: float, signal: str = "ecg", capacity: int = 16):
        self.lib, self.capacity = lib, capacity
        self.state = (ctypes.c_uint64 * ((lib.hs_quality_state_size() + 7) // 8))()  # 8-byte aligned
        status = lib.hs_quality_init(self.state, ctypes.byref(Config(fs, SIGNALS[signal])))
        assert status == OK, status
        self.events = (Event * capacity)()
        self.n_events, self.consumed = ctypes.c_int(), ctypes.c_int()

    def _taken(self) -> list[QualityEvent]:
        return [QualityEvent(KINDS[e.kind], e.start, None if e.end == ONGOING else e.end)
                for e in self.events[: self.n_events.value]]

    def process(self, chunk: np.ndarray) -> list[QualityEvent]:
        x = np.ascontiguousarray(chunk, np.float32)
        done, events = 0, []
        while True:
            status = self.lib.hs_quality_process(self.state, x[done:].ctypes.data, len(x) - done, self.events,
                                                 self.capacity, ctypes.byref(self.n_events),
                                                 ctypes.byref(self.consumed))
            assert status in (OK, OUTPUT_FULL), status
            assert self.n_events.value <= self.capacity
            events += self._taken()
            done += self.consumed.value
            if status == OK:
                assert done == len(x)
                return events

    def flush(self) -> list[QualityEvent]:
        events = []
        while True:
            status = self.lib.hs_quality_flush(self.state, self.events, self.capacity, ctypes.byref(self.n_events))
            assert status in (OK, OUTPUT_FULL), status
            events += self._taken()
            if status == OK:
                return events

    def _read(self, function, *args, value=ctypes.c_int):
        out = value()
        status = function(self.state, *args, ctypes.byref(out))
        assert status == OK, status
        return out.value

    @property
    def known_until(self) -> int:
        return self._read(self.lib.hs_quality_known_until, value=ctypes.c_int64)

    @property
    def block(self) -> int:
        return self._read(self.lib.hs_quality_block_samples)

    @property
    def overflows(self) -> int:
        return self._read(self.lib.hs_quality_overflows, value=ctypes.c_uint32)

    def problem(self, start: int, end: int) -> str | None:
        return KINDS[self._read(self.lib.hs_quality_problem, start, end)]

    def window_problem(self, start: int, length: int, model_fs: float) -> str | None:
        return KINDS[self._read(self.lib.hs_quality_window_problem, start, length, model_fs)]

    def forget(self, before: int) -> None:
        assert self.lib.hs_quality_forget(self.state, before) == OK


def cuts(n: int, sizes) -> list[int]:
    """Chunk boundaries over n samples: a fixed size, or random sizes in [1, sizes[1]] (seeded by sizes[0])."""
    if isinstance(sizes, int):
        return list(range(0, n, sizes)) + [n]
    rng, bounds = np.random.default_rng(sizes[0]), [0]
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + int(rng.integers(1, sizes[1] + 1))))
    return bounds


def assert_equal_gates(lib, x: np.ndarray, fs: float, signal: str = "ecg", chunks=(0, 4000), capacity: int = 16,
                       stride: int = 5, forget_s: float | None = 20.0, model_fs: float = MODEL_FS
                       ) -> list[QualityEvent]:
    """Streams x through both gates; after every chunk the events and known_until must be equal, and so must
    window_problem of every model window (every `stride` model samples, WINDOWS long) whose quality is known.
    Stretches more than forget_s before the oldest window still to ask about are forgotten by both, as the Monitor
    forgets. Returns Python's events."""
    x = np.asarray(x, np.float32)  # what the Monitor hands its gate
    python, c = QualityGate(fs, signal), CGate(lib, fs, signal, capacity)
    assert c.block == python.block
    all_events, asked, known = [], 0, -1
    bounds = cuts(len(x), chunks)

    def ask(until: int) -> int:
        start = asked
        while math.ceil((start + max(WINDOWS)) * fs / model_fs) <= until:
            for length in WINDOWS:
                assert c.window_problem(start, length, model_fs) == python.window_problem(start, length, model_fs), \
                    (start, length)
            start += stride
        return start

    for lo, hi in zip(bounds[:-1], bounds[1:]):
        expected, got = python.process(x[lo:hi]), c.process(x[lo:hi])
        assert got == expected, (lo, hi)
        assert c.known_until == python.known_until, (lo, hi)
        all_events += expected
        if python.known_until != known:
            known, asked = python.known_until, ask(python.known_until)
            if forget_s is not None:
                before = math.floor(asked * fs / model_fs) - int(forget_s * fs)
                python.forget(before)
                c.forget(before)
    expected, got = python.flush(), c.flush()
    assert got == expected
    assert c.known_until == python.known_until == len(x)
    assert c.flush() == python.flush() == []
    all_events += expected
    assert c.overflows == 0  # every bad stretch kept: the answers must be Python's
    ask(len(x))
    for start in range(0, len(x), max(1, len(x) // 200)):  # and what is kept of the signal, sensor sample by sample
        for length in (1, 7, python.block):
            assert c.problem(start, start + length) == python.problem(start, start + length)
    return all_events


def closed(events: list[QualityEvent]) -> list[str]:
    return [e.kind for e in events if e.end is not None]


# --- real recordings -------------------------------------------------------------------------------------------------

def mitdb_minutes(record: str, minutes: float = 10.0) -> tuple[np.ndarray, float]:
    recording = read_database_record("mitdb", record)
    lead = "MLII" if "MLII" in recording.channels else 0  # 104 has no MLII: its first lead, V5
    return recording.channel(lead)[: int(minutes * 60 * recording.fs)].astype(np.float32), recording.fs


@needs_mitdb
@pytest.mark.parametrize("record, chunks, capacity", [
    ("100", (1, 5000), 16), ("105", (2, 700), 1), ("203", 360, 16), ("203", (3, 50000), 2),
    ("104", (4, 3000), 1),  # 104 (V5) has a real noise burst at 5 min 13 s
])
def test_mitdb_first_ten_minutes(lib, record, chunks, capacity):
    x, fs = mitdb_minutes(record)
    events = assert_equal_gates(lib, x, fs, chunks=chunks, capacity=capacity)
    if record == "104":
        assert closed(events) == ["noise"]


@needs_mitdb
def test_mitdb_sample_by_sample_and_all_at_once(lib):
    x, fs = mitdb_minutes("203", 3.0)
    assert_equal_gates(lib, x, fs, chunks=1, capacity=1)
    assert_equal_gates(lib, x, fs, chunks=len(x), capacity=3)


def with_problems(x: np.ndarray, fs: float, seed: int) -> np.ndarray:
    """A real or synthetic ECG with what a wearable meets: packet losses, a long dropout, a lead off (constant and
    nearly constant), an amplifier saturating at both rails, muscle noise around the gate's threshold and far above
    it, and an infinite sample."""
    x = x.astype(np.float32).copy()
    rng = np.random.default_rng(seed)
    at = lambda a, b: slice(int(a * fs), int(b * fs))  # noqa: E731
    for start in rng.integers(int(5 * fs), int(25 * fs), 12):
        x[start: start + rng.integers(1, 12)] = np.nan  # lost packets
    x[at(30, 33.3)] = np.nan
    x[at(40, 43)] = np.float32(0.37)  # lead off
    x[at(47, 50.1)] = np.float32(-0.2) + rng.normal(0, 0.002, len(x[at(47, 50.1)])).astype(np.float32)  # near flat
    rails = np.percentile(x[at(55, 66)][np.isfinite(x[at(55, 66)])], [3, 97]).astype(np.float32)
    x[at(55, 66)] = np.clip(x[at(55, 66)], rails[0], rails[1])  # both rails clip every QRS
    x[at(70, 80)] += rng.normal(0, 1, len(x[at(70, 80)])).astype(np.float32) * np.float32(0.06) \
        * np.linspace(0.5, 2.5, len(x[at(70, 80)]), dtype=np.float32)  # noise rising through the threshold
    x[at(84, 86)] += rng.normal(0, 3.0, len(x[at(84, 86)])).astype(np.float32)  # far outside any ECG
    x[int(90 * fs)] = np.inf
    x[int(91 * fs): int(91 * fs) + 3] = -np.inf
    return x


@needs_mitdb
@pytest.mark.parametrize("record", ["100", "203"])
def test_mitdb_with_dropouts_flat_lines_clipping_and_noise(lib, record):
    x, fs = mitdb_minutes(record, 1.7)
    x = with_problems(x, fs, seed=int(record))
    events = assert_equal_gates(lib, x, fs, chunks=(7, 900), capacity=1)
    assert {"nan", "flat_line", "clipping", "noise"} <= set(closed(events))
    assert_equal_gates(lib, x, fs, chunks=1, capacity=4)


# --- synthetic signals -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fs", [360.0, 250.0, 125.0, 361.0, 1000.0, 128.0])
def test_synthetic_ecg_with_problems_at_several_rates(lib, fs):
    x = with_problems(synthetic.synthetic_ecg(100, fs, heart_rate=75, ectopic={"V": 0.15}, seed=1).signal, fs, seed=3)
    for chunks, capacity in [((int(fs), int(3 * fs)), 1), (int(fs * 0.37) + 1, 16)]:
        events = assert_equal_gates(lib, x, fs, chunks=chunks, capacity=capacity)
    assert {"nan", "flat_line", "clipping", "noise"} <= set(closed(events))


def test_chunks_of_one_to_many_samples_and_any_event_array(lib):
    fs = 360.0
    x = with_problems(synthetic.synthetic_ecg(100, fs, seed=2).signal, fs, seed=5)
    reference = assert_equal_gates(lib, x, fs, chunks=1, capacity=1, stride=17)
    for chunks, capacity in [(2, 2), (179, 3), (180, 1), (181, 8), ((11, 40), 5), (len(x), 1), (len(x), 64)]:
        assert assert_equal_gates(lib, x, fs, chunks=chunks, capacity=capacity, stride=41) == reference


def test_the_noise_median_between_its_two_middle_values(lib):
    """Blocks whose |second differences| are half just below the noise threshold and half just above: numpy's
    median is the mean of the middle two, and it alone decides. The C gate counts instead of sorting."""
    fs, threshold = 360.0, 0.1 * 0.6745 * math.sqrt(6.0)  # |second difference| whose noise estimate is 0.1 mV
    decisions = set()
    for quiet, loud in [(q, v) for q in (0.97, 0.9) for v in (1.02, 1.04, 1.06, 1.10, 1.2)]:
        for split in range(84, 96):
            x = (0.3 * np.sin(2 * np.pi * np.arange(int(4 * fs)) / fs)).astype(np.float32)  # clean, not flat
            block = np.arange(360, 540)  # the third block
            amplitude = np.where(block < 360 + split, quiet * threshold / 4, loud * threshold / 4)
            x[block] = (np.where(block % 2 == 0, amplitude, -amplitude) + 0.25).astype(np.float32)
            second = np.abs(np.diff(x[block].astype(np.float64), 2)) * (1.0 / (0.6745 * np.sqrt(6.0)))
            middle = np.sort(second)[len(second) // 2 - 1: len(second) // 2 + 1]
            if not middle[0] <= 0.1 < middle[1]:  # the two middle values do not straddle the threshold
                continue
            noise = "noise" in closed(assert_equal_gates(lib, x, fs, chunks=(split, 300), capacity=2))
            assert noise == (np.median(second) > 0.1)
            decisions.add(noise)
    assert decisions == {False, True}  # the mean of the two decided, both ways


def test_noise_is_judged_in_double_as_python_judges_it(lib):
    """A block alternating between two floats whose difference rounds up in float: in float64, as Python computes,
    the second differences are just under the noise threshold; in float they would be just over it."""
    fs, mad_to_sigma = 360.0, 1.0 / (0.6745 * np.sqrt(6.0))
    high, low = np.float32(0.032609038054943085), np.float32(-0.05)
    assert 2 * (np.float64(high) - np.float64(low)) * mad_to_sigma <= 0.1 < 2 * np.float64(high - low) * mad_to_sigma
    x = (0.3 * np.sin(2 * np.pi * np.arange(int(4 * fs)) / fs)).astype(np.float32)
    x[360: 540] = np.where(np.arange(180) % 2 == 0, high, low)
    assert "noise" not in closed(assert_equal_gates(lib, x, fs, chunks=(16, 300), capacity=2))


@pytest.mark.parametrize("noise", [0.090, 0.098, 0.1, 0.102, 0.11])
def test_noise_near_the_threshold_with_dropouts(lib, noise):
    """White noise whose estimate hovers at 0.1 mV, with NaN samples that change how many second differences count
    (odd and even): every block is a close call."""
    fs = 250.0  # blocks of 125 samples: 123 second differences, fewer around each NaN
    rng = np.random.default_rng(int(noise * 1000))
    x = (synthetic.synthetic_ecg(60, fs, noise_mv=0.0, seed=3).signal
         + rng.normal(0, noise, int(60 * fs))).astype(np.float32)
    x[rng.integers(0, len(x), 80)] = np.nan
    events = assert_equal_gates(lib, x, fs, chunks=(int(noise * 1e4), 2000), capacity=3)
    assert "nan" in closed(events)


def test_clipping_at_the_adc_rails_and_quantised_tops(lib):
    """An ADC of 12 bits whose rails cut every QRS, then one whose T waves are quantised flat without clipping."""
    fs = 500.0
    clean = synthetic.synthetic_ecg(40, fs, heart_rate=80, noise_mv=0.01, seed=4).signal
    adc = np.round(np.clip(clean, -0.35, 0.6) / (1.2 / 4096)) * np.float32(1.2 / 4096)
    quantised = np.round(clean / 0.05) * np.float32(0.05)  # coarse steps: flat tops entered one step at a time
    both = np.concatenate([adc, quantised]).astype(np.float32)
    events = assert_equal_gates(lib, both, fs, chunks=(8, 1500), capacity=2)
    assert "clipping" in closed(events)


def test_silence_nan_and_short_signals(lib):
    fs = 360.0
    zeros, nans = np.zeros(int(10 * fs), np.float32), np.full(int(5 * fs), np.nan, np.float32)
    assert closed(assert_equal_gates(lib, zeros, fs, chunks=(1, 500))) == ["flat_line"]
    assert closed(assert_equal_gates(lib, nans, fs, chunks=(2, 500), capacity=1)) == ["nan"]
    ecg = synthetic.synthetic_ecg(10, fs, seed=6).signal
    assert_equal_gates(lib, np.concatenate([ecg[:1000], zeros[:500], ecg[:200], nans[:700], ecg]), fs, chunks=(3, 99))
    for n in (0, 1, 2, 3, 5, 179, 180, 181, 359, 360, 361, 540, 541):  # flush judges the last, short blocks
        for signal in (zeros[:n], nans[:n], ecg[:n], np.where(np.arange(n) % 7 == 0, np.nan, ecg[:n])):
            assert_equal_gates(lib, signal, fs, chunks=(n, 7))
            assert_equal_gates(lib, signal, fs, "ppg", chunks=n + 1)


def test_a_flat_line_holds_known_until_back_until_confirmed(lib):
    fs = 360.0
    x = synthetic.synthetic_ecg(12, fs, seed=7).signal.copy()
    x[int(3 * fs): int(3.9 * fs)] = 0.1  # flat for less than a second: never a flat line, but undecided a while
    x[int(6 * fs): int(9 * fs)] = 0.1
    events = assert_equal_gates(lib, x, fs, chunks=1, capacity=1, stride=3)
    assert closed(events) == ["flat_line"]


@pytest.mark.parametrize("fs", [2.0, 7.3, 25.0, 32.0, 64.0, 100.0])
def test_ppg_flat_clipping_and_dropouts(lib, fs):
    x = synthetic_ppg(60, max(fs, 8.0), seed=int(fs)).signals[:, 0].copy()
    if fs < 8:  # synthetic_ppg's lowest rate; below it the gate still works, on a slow sine
        x = np.sin(np.arange(int(60 * fs)) * 0.7).astype(np.float32)
    at = lambda a, b: slice(int(a * fs), int(b * fs))  # noqa: E731
    x[at(10, 10.5)] = np.nan
    x[at(20, 23)] = x[int(20 * fs)]  # exactly constant: a PPG flat line
    x[at(30, 40)] = np.clip(x[at(30, 40)], -np.inf, np.percentile(x[at(30, 40)], 70))
    x[at(45, 47)] += np.random.default_rng(0).normal(0, 5, len(x[at(45, 47)])).astype(np.float32)  # no noise for PPG
    for chunks, capacity in [(1, 1), ((int(fs), 50), 2), (len(x), 16)]:
        events = assert_equal_gates(lib, x, fs, "ppg", chunks=chunks, capacity=capacity, stride=2)
    assert "noise" not in closed(events) and "nan" in closed(events)
    if fs >= 25:
        assert {"flat_line", "clipping"} <= set(closed(events))


def test_block_sizes_and_thresholds_round_as_python_at_any_rate(lib):
    """Python rounds half to even (0.5 * 125 Hz -> 62); a short signal with every problem, at rates across the range."""
    rng = np.random.default_rng(8)
    for fs in [2.0, 3.0, 5.0, 12.5, 125.0, 150.0, 175.0, 225.0, 361.0, 999.0, 1000.0, *rng.uniform(2, 1000, 12)]:
        n = int(30 * fs)
        t = np.arange(n) / fs
        x = (np.sin(2 * np.pi * 1.1 * t) ** 15).astype(np.float32)  # narrow peaks, like QRS
        x[int(3 * fs): int(5.2 * fs)] = 0.2
        x[int(8 * fs): int(14 * fs)] = np.clip(x[int(8 * fs): int(14 * fs)], -0.5, 0.4)
        x[int(16 * fs): int(16 * fs) + 1] = np.nan
        x[int(20 * fs): int(22 * fs)] += rng.normal(0, 0.4, len(x[int(20 * fs): int(22 * fs)])).astype(np.float32)
        assert_equal_gates(lib, x, float(fs), chunks=(int(fs), int(fs) + 3), capacity=1, stride=1 + int(fs) // 40)


def steep_plateaus(fs: float, polarity: float, seed: int) -> np.ndarray:
    """A zero baseline marked at -polarity * 0.5 every 0.25 s, with plateaus at polarity * 2.0 (the rail) entered and
    left in two steps: every length from one under the clipping minimum to one over a block, at every phase against the
    block boundaries, the samples two before and after a plateau placed within a few float steps of the clipping
    step (0.03 * 2.5 mV)."""
    python = QualityGate(fs)
    b, shortest = python.block, python._clip_min
    rng = np.random.default_rng(seed)
    rail, step = np.float32(2.0 * polarity), 0.03 * 2.5
    edge = np.float32(2.0 - step) * np.float32(polarity)
    near = [np.nextafter(edge, edge + np.float32(k), dtype=np.float32) if k else edge for k in (-1, 0, 1)]
    near += [np.float32(edge + np.float32(k) * np.spacing(edge)) for k in (-2, 2)]
    lengths = sorted({shortest - 1, shortest, shortest + 1, b - 1, b, b + 1})
    x, at = [np.zeros(b, np.float32)], b
    for length in lengths:
        for phase in range(b) if b <= 30 else rng.choice(b, 12, replace=False):
            gap = (phase - (at + 2)) % b + b  # the plateau starts `phase` samples into a block
            piece = np.zeros(gap + length + 4 + b, np.float32)
            piece[gap: gap + 2] = near[rng.integers(len(near))], rail / 2
            piece[gap + 2: gap + 2 + length] = rail
            piece[gap + 2 + length: gap + 4 + length] = rail / 2, near[rng.integers(len(near))]
            x.append(piece)
            at += len(piece)
    x = np.concatenate(x)
    marks = np.arange(len(x)) % max(1, int(fs / 4)) == 0
    x[marks & (x == 0)] = np.float32(-0.5 * polarity)  # on the baseline, not on the plateaus
    return x


@pytest.mark.parametrize("fs", [50.0, 12.25, 360.0])
def test_clipped_runs_of_every_length_at_every_phase(lib, fs):
    """The edges of _clipped_runs: runs one sample under or over the shortest and the longest, starting or ending
    two samples from the context's ends, cut to the block, steps within float rounding of the threshold."""
    for polarity in (1.0, -1.0):
        x = steep_plateaus(fs, polarity, seed=int(fs) + (polarity > 0))
        for signal in ("ecg", "ppg"):
            events = assert_equal_gates(lib, x, fs, signal, chunks=(int(fs), 3 * int(fs)), capacity=1, stride=3)
        assert "clipping" in closed(events)


def test_the_clipping_step_is_judged_in_double(lib):
    """A plateau at the rail entered from 2.0 - 1.9250000715 mV, a hair above 3 % of the context's range in float64 (as
    Python computes it) though not in float: clipping."""
    fs, top, bottom, before = 360.0, np.float32(2.0), np.float32(-0.4999975562095642), np.float32(1.9250000715255737)
    step = 0.03 * (np.float64(top) - np.float64(bottom))
    assert np.float64(top) - np.float64(before) > step and not np.float32(top - before) > np.float32(step)
    x = np.zeros(int(4 * fs), np.float32)
    x[::90] = bottom
    x[398: 412] = [before, 1.0, *[top] * 10, 1.0, before]
    assert closed(assert_equal_gates(lib, x, fs, chunks=(17, 300), capacity=2)) == ["clipping"]


@pytest.mark.parametrize("fs", [125.0, 225.0, 325.0, 250.25, 12.25, 361.0, 175.0])
@pytest.mark.parametrize("signal", ["ecg", "ppg"])
def test_gaps_runs_and_flat_stretches_one_sample_either_side_of_each_limit(lib, fs, signal):
    """At rates where Python's round() goes half to even: NaN pairs one sample either side of the merge gap, plateaus
    one sample either side of the shortest clipped run, flat stretches one sample short of or exactly the blocks a
    flat line needs."""
    python = QualityGate(fs, signal)
    b, shortest, flat_blocks, merge = python.block, python._clip_min, python._flat_blocks, python._merge
    t = np.arange(int(2 * merge + 8 * b))
    base = (0.5 * np.sin(2 * np.pi * t / (b * 1.7))).astype(np.float32)  # not flat in any block, not noise
    pieces = []
    for gap in (merge - 1, merge, merge + 1):
        piece = base.copy()
        piece[b: b + 2] = np.nan
        piece[b + 2 + gap: b + 4 + gap] = np.nan
        pieces.append(piece)
    for length in (shortest - 1, shortest, shortest + 1):
        piece = base.copy()
        piece[2 * b + 1] = 1.0
        piece[2 * b + 2: 2 * b + 2 + length] = 2.0
        piece[2 * b + 2 + length] = 1.0
        pieces.append(piece)
    for blocks, shift in ((flat_blocks - 1, 0), (flat_blocks, 0), (flat_blocks, 1), (flat_blocks + 1, 1)):
        piece = base.copy()
        piece[2 * b + shift: (2 + blocks) * b] = 0.3  # whole blocks from a block boundary (`shift` samples late)
        pieces.append(piece)
    x = np.concatenate([pieces[i][: len(pieces[i]) - len(pieces[i]) % b] for i in range(len(pieces))])
    events = assert_equal_gates(lib, x, fs, signal, chunks=(int(fs), int(fs) + 5), capacity=1, stride=1)
    assert "nan" in closed(events) and "clipping" in closed(events) and "flat_line" in closed(events)


def test_flat_blocks_within_float_steps_of_the_threshold(lib):
    """Blocks alternating between two values 0.02 mV apart, give or take a float step: flat or not as Python's float64
    peak-to-peak says (0.02f - -2e-10f is flat in double, not in float)."""
    fs = 360.0
    rng = np.random.default_rng(12)
    pairs = [(np.float32(0.02), np.float32(-2e-10)), (np.float32(2e-10), np.float32(-0.02))]
    for bottom in rng.uniform(-2, 2, 40).astype(np.float32):
        top = np.float32(bottom + np.float32(0.02))
        pairs += [(np.float32(top + np.float32(k) * np.spacing(top)), bottom) for k in (-1, 0, 1)]
    sine = (0.4 * np.sin(np.arange(360) / 9.0)).astype(np.float32)
    pieces = []
    for top, bottom in pairs:
        pieces += [np.where(np.arange(3 * 180) % 2 == 0, top, bottom).astype(np.float32), sine]
    events = assert_equal_gates(lib, np.concatenate(pieces), fs, chunks=(13, 1000), capacity=2, stride=7)
    assert "flat_line" in closed(events)


def test_noise_needs_eight_second_differences(lib):
    """A block lost but for 9, 10 or 11 samples of heavy alternation: 7 finite second differences are not judged, 8
    are."""
    fs = 360.0
    pieces = []
    for finite in (9, 10, 11):
        piece = (0.4 * np.sin(np.arange(8 * 180) / 9.0)).astype(np.float32)  # problems further apart than merged
        piece[180: 360] = np.nan
        piece[200: 200 + finite] = np.where(np.arange(finite) % 2 == 0, 1.0, -1.0)
        pieces.append(piece)
    events = assert_equal_gates(lib, np.concatenate(pieces), fs, chunks=(14, 500), capacity=1, stride=2)
    assert closed(events).count("noise") == 2


@pytest.mark.parametrize("fs, model_fs", [(360.0, 100.0), (360.0, 300.0), (250.25, 125.0), (500.0, 32.0),
                                          (1000.0, 128.0), (128.0, 128.0)])
def test_windows_at_other_model_rates(lib, fs, model_fs):
    """window_problem's floor and ceil of start * fs / model_fs computed in Python's order, where the product is not
    exact (3.6 sensor samples per model sample)."""
    x = with_problems(synthetic.synthetic_ecg(100, fs, seed=13).signal, fs, seed=14)
    assert_equal_gates(lib, x, fs, chunks=(15, 3000), stride=1, model_fs=model_fs)


def test_too_many_stretches_are_merged_never_lost(lib):
    """Every other sample lost for 4 s: more bad stretches than the C gate keeps. Events and known_until stay equal;
    every window Python calls bad the C gate calls bad. A packet lost every quarter second, forgotten as the Monitor
    forgets (all but the last rhythm window and 5 s more), stays within them: equal answers."""
    fs = 360.0
    x = synthetic.synthetic_ecg(20, fs, seed=9).signal.copy()
    x[int(5 * fs): int(9 * fs): 2] = np.nan
    python, c = QualityGate(fs), CGate(lib, fs, capacity=4)
    for lo in range(0, len(x), 250):
        assert c.process(x[lo: lo + 250]) == python.process(x[lo: lo + 250])
        assert c.known_until == python.known_until
    assert c.flush() == python.flush()
    assert len(python._bad) > MAX_STRETCHES and c.overflows > 0
    for start in range(0, int(20 * MODEL_FS)):
        expected, got = python.window_problem(start, 64, MODEL_FS), c.window_problem(start, 64, MODEL_FS)
        assert got is not None or expected is None  # never clean where Python is not

    x = synthetic.synthetic_ecg(60, fs, seed=10).signal.copy()
    for start in np.arange(2 * fs, 58 * fs, fs / 4).astype(int):
        x[start: start + 3] = np.nan
    assert_equal_gates(lib, x, fs, chunks=(12, 400), capacity=4, forget_s=5.0, stride=1)


# --- the API ---------------------------------------------------------------------------------------------------------

def test_configuration_is_checked(lib):
    state = (ctypes.c_uint64 * ((lib.hs_quality_state_size() + 7) // 8))()
    for fs in (math.nan, math.inf, -math.inf, 0.0, -360.0, 1.99, 1000.01, 1e9):
        assert lib.hs_quality_init(state, ctypes.byref(Config(fs, 0))) == ERR_UNSUPPORTED
    for signal in (-1, 2, 99):
        assert lib.hs_quality_init(state, ctypes.byref(Config(360.0, signal))) == ERR_SIGNAL
    assert lib.hs_quality_init(None, ctypes.byref(Config(360.0, 0))) == ERR_NULL
    assert lib.hs_quality_init(state, None) == ERR_NULL
    for fs in (2.0, 1000.0, 360.0):
        assert lib.hs_quality_init(state, ctypes.byref(Config(fs, 1))) == OK
    assert lib.hs_quality_state_size() < 10_000  # three blocks at 1000 Hz, 128 stretches
    before = bytes(state)
    assert lib.hs_quality_init(state, ctypes.byref(Config(math.nan, 0))) == ERR_UNSUPPORTED
    assert lib.hs_quality_init(state, ctypes.byref(Config(250.0, 7))) == ERR_SIGNAL
    block = ctypes.c_int()
    assert lib.hs_quality_block_samples(state, ctypes.byref(block)) == OK
    assert bytes(state) == before and block.value == 180  # a refused init changed nothing


def test_calls_on_a_state_no_init_accepted_are_refused(lib):
    state = (ctypes.c_uint64 * ((lib.hs_quality_state_size() + 7) // 8))()  # zeroed, never initialised
    events, n, used = (Event * 4)(), ctypes.c_int(), ctypes.c_int()
    x = np.zeros(1000, np.float32)
    assert lib.hs_quality_process(state, x.ctypes.data, len(x), events, 4, ctypes.byref(n), ctypes.byref(used)) \
        == ERR_STATE
    assert (n.value, used.value) == (0, 0)
    assert lib.hs_quality_flush(state, events, 4, ctypes.byref(n)) == ERR_STATE
    value, kind = ctypes.c_int64(), ctypes.c_int()
    assert lib.hs_quality_known_until(state, ctypes.byref(value)) == ERR_STATE
    assert lib.hs_quality_problem(state, 0, 10, ctypes.byref(kind)) == ERR_STATE
    assert lib.hs_quality_window_problem(state, 0, 10, MODEL_FS, ctypes.byref(kind)) == ERR_STATE
    assert lib.hs_quality_forget(state, 10) == ERR_STATE
    assert lib.hs_quality_block_samples(state, ctypes.byref(kind)) == ERR_STATE
    assert lib.hs_quality_overflows(state, ctypes.byref(ctypes.c_uint32())) == ERR_STATE
    assert lib.hs_quality_known_until(None, ctypes.byref(value)) == ERR_NULL
    assert lib.hs_quality_problem(None, 0, 1, ctypes.byref(kind)) == ERR_NULL
    assert lib.hs_quality_forget(None, 1) == ERR_NULL


def test_bad_calls_return_a_status_and_change_nothing(lib):
    fs = 360.0
    x = with_problems(synthetic.synthetic_ecg(100, fs, seed=10).signal, fs, seed=11)
    python, gate = QualityGate(fs), CGate(lib, fs, capacity=1)
    events, n, used = (Event * 4)(), ctypes.c_int(), ctypes.c_int()
    state, data = gate.state, x.ctypes.data
    by = ctypes.byref
    for lo in range(0, len(x), 3000):
        chunk = x[lo: lo + 3000]
        assert lib.hs_quality_process(state, data, -1, events, 4, by(n), by(used)) == ERR_ARGUMENT
        assert lib.hs_quality_process(state, data, 10, events, 0, by(n), by(used)) == ERR_ARGUMENT
        assert lib.hs_quality_process(state, data, 10, None, 4, by(n), by(used)) == ERR_NULL
        assert lib.hs_quality_process(state, None, 10, events, 4, by(n), by(used)) == ERR_NULL
        assert lib.hs_quality_process(state, data, 10, events, 4, None, by(used)) == ERR_NULL
        assert lib.hs_quality_process(state, data, 10, events, 4, by(n), None) == ERR_NULL
        assert lib.hs_quality_process(None, data, 10, events, 4, by(n), by(used)) == ERR_NULL
        assert lib.hs_quality_flush(state, events, 0, by(n)) == ERR_ARGUMENT
        for model_fs in (0.0, -128.0, math.nan, math.inf, 1e-300):
            assert lib.hs_quality_window_problem(state, 1000, 768, model_fs, by(n)) == ERR_ARGUMENT
        for start, length in ((2**60, 768), (0, 2**60), (-(2**60), 1)):
            assert lib.hs_quality_window_problem(state, start, length, MODEL_FS, by(n)) == ERR_ARGUMENT
        for function, args in ((lib.hs_quality_known_until, ()), (lib.hs_quality_problem, (0, 9)),
                               (lib.hs_quality_window_problem, (0, 9, MODEL_FS)), (lib.hs_quality_block_samples, ()),
                               (lib.hs_quality_overflows, ())):
            assert function(state, *args, None) == ERR_NULL
        assert lib.hs_quality_process(state, None, 0, events, 4, by(n), by(used)) == OK  # nothing to take
        assert gate.process(chunk) == python.process(chunk)
        assert gate.known_until == python.known_until
    assert gate.flush() == python.flush()
    assert lib.hs_quality_process(state, data, 10, events, 4, by(n), by(used)) == ERR_FINISHED
    assert (n.value, used.value) == (0, 0)
    assert gate.flush() == python.flush() == []
    for start in range(0, int(100 * MODEL_FS), 50):
        assert gate.window_problem(start, 768, MODEL_FS) == python.window_problem(start, 768, MODEL_FS)
    assert [lib.hs_quality_kind_name(k) for k in range(-1, 6)] == [b"", b"", b"nan", b"flat_line", b"clipping",
                                                                     b"noise", b""]


def test_compiles_for_cortex_m4(tmp_path):
    compiler = shutil.which("arm-none-eabi-gcc")
    if compiler is None:
        pytest.skip("arm-none-eabi-gcc not installed (apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    for defines in ([], ["-DHS_QUALITY_MAX_FS=360"]):
        run = subprocess.run([compiler, "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard",
                              *STRICT_FLAGS, "-O2", *defines, "-I", str(RUNTIME_DIR), "-c",
                              str(RUNTIME_DIR / "hs_quality.c"), "-o", str(tmp_path / "hs_quality.o")],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
