"""The C alert policy (firmware_export/runtime/hs_policy.c) against sdk.device.alerts.AlertPolicy: the same findings
in the same order raise the same alerts (type, sample, label, confidence, details, excerpt source), on long random
sequences, synthetic edge cases and the findings the Monitor makes on MIT-BIH records."""

import ctypes
import math
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest

from conftest import needs_mitdb
from firmware_export.host import RUNTIME_DIR, STRICT_FLAGS, build_runtime_library
from firmware_export.monitor_host import Decision  # hs_policy_alert_t
from sdk.device.alerts import AlertPolicy, Excerpt, Finding

BEAT_CLASSES = ("N", "S", "V", "F")
RHYTHM_CLASSES = ("non-AF", "AF")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", *STRICT_FLAGS, "-O2", "-c"]

OK, ERR_NULL, ERR_CONFIG, ERR_NOT_INIT, ERR_LABEL, ERR_VALUE, ERR_SAMPLE, ERR_ORDER, ERR_CAPACITY = \
    0, -1, -2, -3, -4, -5, -6, -7, -8
UNCLASSIFIED = -1
MAX_SAMPLE = 1 << 40
PROBLEMS = ("nan", "flat_line", "clipping", "noise")  # HS_POLICY_PROBLEM_NAN = 1 ...
TYPES = ("ventricular_ectopic_beat", "ventricular_run", "supraventricular_ectopy", "high_ectopy_burden", "af_start",
         "af_end", "hr_out_of_range", "signal_quality")


# --- the ctypes binding ----------------------------------------------------------------------------------------------

class CFinding(ctypes.Structure):
    _fields_ = [("sample", ctypes.c_int64), ("end", ctypes.c_int64), ("label", ctypes.c_int),
                ("confidence", ctypes.c_double), ("hr_bpm", ctypes.c_double)]


class CConfig(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_double), ("classes", ctypes.c_int),
                ("class_names", ctypes.POINTER(ctypes.c_char_p))]


@pytest.fixture(scope="module")
def lib():
    library = build_runtime_library(["hs_policy.c"])
    library.hs_policy_state_size.restype = ctypes.c_size_t
    library.hs_policy_round.restype = ctypes.c_double
    library.hs_policy_round.argtypes = [ctypes.c_double, ctypes.c_int]
    library.hs_policy_alert_type_name.restype = ctypes.c_char_p
    library.hs_policy_label_name.restype = ctypes.c_char_p
    library.hs_policy_label_name.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    library.hs_policy_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    finding_call = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    for name in ("hs_policy_beat", "hs_policy_rhythm_window", "hs_policy_heart_rate_window"):
        getattr(library, name).argtypes = finding_call
    library.hs_policy_quality.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p,
                                          ctypes.c_int, ctypes.c_void_p]
    library.hs_policy_finish.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    return library


def c_config(fs: float, classes) -> CConfig:
    names = (ctypes.c_char_p * max(len(classes), 1))(*[None if n is None else n.encode() for n in classes])
    config = CConfig(fs, len(classes), ctypes.cast(names, ctypes.POINTER(ctypes.c_char_p)))
    config._names = names  # kept alive with the config
    return config


class CPolicy:
    """hs_policy on Python findings: the state as an opaque buffer of hs_policy_state_size() bytes; each call returns
    (status, alerts as comparable dicts)."""

    def __init__(self, lib, fs: float, classes=BEAT_CLASSES):
        self.lib, self.classes = lib, tuple(classes)
        self.state = ctypes.create_string_buffer(lib.hs_policy_state_size())
        self.alerts = (Decision * 8)()
        self.raised = ctypes.c_int(-1)
        status = lib.hs_policy_init(self.state, ctypes.byref(c_config(fs, self.classes)))
        assert status == OK, status

    def finding(self, f: Finding) -> CFinding:
        if f.label is None:
            label = UNCLASSIFIED
        elif f.label == "hr":
            label = 0
        else:
            label = self.classes.index(f.label)
        return CFinding(f.sample, f.end, label, f.confidence, math.nan if f.hr_bpm is None else f.hr_bpm)

    def call(self, name: str, *args, capacity: int = 8) -> tuple[int, list[dict]]:
        self.raised.value = -1
        status = getattr(self.lib, name)(self.state, *args, self.alerts, capacity, ctypes.byref(self.raised))
        assert self.raised.value >= 0
        assert status == OK or self.raised.value == 0
        return status, [self.plain(self.alerts[i]) for i in range(self.raised.value)]

    def beat(self, f: Finding, **kw):
        return self.call("hs_policy_beat", ctypes.byref(self.finding(f)), **kw)

    def rhythm_window(self, f: Finding, **kw):
        return self.call("hs_policy_rhythm_window", ctypes.byref(self.finding(f)), **kw)

    def heart_rate_window(self, f: Finding, **kw):
        return self.call("hs_policy_heart_rate_window", ctypes.byref(self.finding(f)), **kw)

    def quality(self, kind: str, start: int, **kw):
        return self.call("hs_policy_quality", PROBLEMS.index(kind) + 1, start, **kw)

    def finish(self, **kw):
        return self.call("hs_policy_finish", **kw)

    def plain(self, a: Decision) -> dict:
        kind = self.lib.hs_policy_alert_type_name(a.type).decode()
        label = self.lib.hs_policy_label_name(self.state, ctypes.byref(a)).decode()
        if kind in ("ventricular_ectopic_beat", "supraventricular_ectopy"):
            details = {"suppressed_since_last": a.suppressed_since_last}
        elif kind == "ventricular_run":
            details = {"run_length": a.run_length, "duration_s": a.duration_s,
                       "rate_bpm": a.rate_bpm if a.has_rate_bpm else None, "sustained": bool(a.sustained)}
        elif kind == "high_ectopy_burden":
            details = {"ectopic_per_min": a.ectopic_per_min, "raise_at": a.raise_at, "clear_at": a.clear_at}
        elif kind in ("af_start", "af_end"):
            details = {"windows": a.windows, "duration_s": a.duration_s}
            if kind == "af_end":
                details["episode_duration_s"] = a.episode_duration_s
        elif kind == "hr_out_of_range":
            details = {"hr_bpm": list(a.hr_bpm), "low_bpm": a.low_bpm, "high_bpm": a.high_bpm}
        else:
            details = {"problem": PROBLEMS[a.problem - 1], "start_sample": a.start_sample}
        return {"type": kind, "sample": a.sample, "label": label, "confidence": a.confidence, "details": details,
                "excerpt": (a.excerpt_first, a.excerpt_last)}


# --- the Python side, and driving both -------------------------------------------------------------------------------

def dummy_excerpt(sample: int) -> Excerpt:
    """One sample at the finding's own sample: a union of them spans the first finding to the last."""
    return Excerpt(sample, np.zeros(1), np.zeros(1))


def finding(sample: int, label, confidence: float, end: int | None = None, hr_bpm=None) -> Finding:
    """A Finding as the Monitor makes it (Python ints and floats), with a dummy excerpt and, when classified, an
    embedding that names the finding, so that an alert's embedding says which finding it came from."""
    sample = int(sample)
    classified = label is not None
    return Finding(sample, int(sample if end is None else end), label, float(confidence),
                   dummy_excerpt(sample) if classified else None, None if hr_bpm is None else float(hr_bpm),
                   np.array([float(sample)]) if classified else None)


def python_plain(alert) -> dict:
    details = dict(alert.details)
    embedding = details.pop("embedding", None)
    excerpt = (alert.excerpt.start, alert.excerpt.start + len(alert.excerpt.signal) - 1)
    if embedding is not None:
        assert embedding == [float(excerpt[0])], "the embedding comes from the excerpt's first finding"
    return {"type": alert.type, "sample": alert.sample_index, "label": alert.label, "confidence": alert.confidence,
            "details": details, "excerpt": excerpt}


def assert_same(python: list[dict], c: list[dict], where) -> None:
    assert len(python) == len(c), (where, python, c)
    for p, q in zip(python, c):
        assert abs(p["confidence"] - q["confidence"]) <= 1e-6, (where, p, q)
        assert p["confidence"] == q["confidence"], (where, "not bit-equal", p, q)
        assert {**p, "confidence": 0} == {**q, "confidence": 0}, (where, p, q)


def replay(lib, calls: list[tuple], fs: float, classes=BEAT_CLASSES) -> list[dict]:
    """Feeds the calls to a Python AlertPolicy and to the C policy, asserting equal alerts call by call; returns them."""
    python = AlertPolicy(fs=fs, device="d", site="s", stream="s", start_time=START, model={"sha256": "0" * 64})
    c = CPolicy(lib, fs, classes)
    alerts = []
    for i, (kind, *args) in enumerate(calls):
        if kind == "quality":
            expected = python.quality(args[0], args[1], dummy_excerpt(args[1]))
        else:
            expected = getattr(python, kind)(*args)
        status, got = getattr(c, kind)(*args)
        assert status == OK, (i, kind, args, status)
        expected = [python_plain(a) for a in expected]
        assert_same(expected, got, (i, kind, args))
        alerts += got
    return alerts


# --- random sequences ------------------------------------------------------------------------------------------------

def confidence(rng) -> float:
    """Mostly float32 probabilities as the model's softmax gives them; some right at the 0.6 threshold."""
    pick = rng.random()
    if pick < 0.05:
        return float(rng.choice([0.6, float(np.float32(0.6)), math.nextafter(0.6, 0), 1.0, 0.0]))
    if pick < 0.25:
        return float(np.float32(rng.uniform(0.3, 0.6)))
    return float(np.float32(rng.uniform(0.6, 1.0)))


def random_beats(rng, fs: float, n: int) -> list[tuple]:
    """Beats at 40-200 bpm in episodes: sinus, isolated V, V couplets and runs (some past 30 s), S bursts, frequent
    ectopy, quality gaps (label None) and uncertain beats; quality problems now and then."""
    calls, sample = [], int(rng.integers(0, 5 * fs))
    while len(calls) < n:
        episode = rng.choice(["sinus", "v", "run", "long_run", "s", "ectopy", "gap", "quality"],
                             p=[0.3, 0.15, 0.1, 0.02, 0.1, 0.15, 0.1, 0.08])
        if episode == "quality":
            calls.append(("quality", str(rng.choice(PROBLEMS)), max(0, sample - int(rng.integers(0, 3 * fs)))))
            continue
        length = {"sinus": rng.integers(1, 80), "v": 1, "run": rng.integers(2, 12), "long_run": rng.integers(40, 120),
                  "s": rng.integers(1, 15), "ectopy": rng.integers(5, 60), "gap": rng.integers(1, 20)}[episode]
        rr = rng.uniform(0.3, 1.5)
        for _ in range(int(length)):
            sample += max(1, int(round(rr * fs * rng.uniform(0.9, 1.1))))
            if episode == "sinus":
                label = str(rng.choice(BEAT_CLASSES, p=[0.9, 0.03, 0.03, 0.04]))
            elif episode in ("v", "run", "long_run"):
                label = "V" if rng.random() < 0.97 else "N"
            elif episode == "s":
                label = "S"
            elif episode == "ectopy":
                label = str(rng.choice(BEAT_CLASSES, p=[0.5, 0.25, 0.25, 0.0]))
            else:
                label = None if rng.random() < 0.8 else "N"
            p = 0.0 if label is None else confidence(rng)
            if episode == "long_run":  # sustained: every beat a confident V
                label, p = "V", float(np.float32(rng.uniform(0.6, 1.0)))
            calls.append(("beat", finding(sample, label, p, sample + int(round(3 * fs)))))
    return calls + [("finish",)]


def random_rhythm(rng, fs: float, n: int, window_s: float = 10.0) -> list[tuple]:
    """Rhythm windows (10 s, hop 10 s or 5 s) in streaks of AF and non-AF from a few windows to many minutes, with
    skipped windows; the first window may start anywhere."""
    calls, start = [], int(rng.integers(0, 20 * fs))
    hop = int(round(window_s * fs * rng.choice([1.0, 0.5])))
    while len(calls) < n:
        label = [*RHYTHM_CLASSES, None][rng.choice(3, p=[0.45, 0.45, 0.1])]
        for _ in range(int(rng.choice([rng.integers(1, 4), rng.integers(3, 8), rng.integers(8, 60)]))):
            this = label if rng.random() < 0.93 else str(rng.choice(RHYTHM_CLASSES))
            p = 0.0 if label is None else float(np.float32(rng.uniform(0.5, 1.0)))
            calls.append(("rhythm_window", finding(start, label if label is None else this, p,
                                                   start + int(round(window_s * fs)))))
            start += hop
        if rng.random() < 0.05:
            calls.append(("quality", str(rng.choice(PROBLEMS)), start))
    return calls + [("finish",)]


def random_heart_rate(rng, fs: float, n: int) -> list[tuple]:
    """Heart-rate windows every 2 s: a random walk that crosses 40 and 150 bpm, with skipped windows and values at the
    limits and at exact rounding ties."""
    calls, start, hr = [], 0, 90.0
    specials = [40.0, 150.0, 45.0, 145.0, 39.95, 150.05, 39.75, 150.25, 35.25, 160.75, 44.999999999999, 0.0, 1000.0]
    for _ in range(n):
        pick = rng.random()
        if pick < 0.05:
            calls.append(("heart_rate_window", finding(start, None, 0.0, start + int(8 * fs))))
        else:
            hr = float(np.clip(hr + rng.normal(0, 12), 20, 220))
            value = float(rng.choice(specials)) if pick < 0.15 else hr
            calls.append(("heart_rate_window", finding(start, "hr", 1.0, start + int(8 * fs), hr_bpm=value)))
        if rng.random() < 0.02:
            calls.append(("quality", str(rng.choice(PROBLEMS)), start))
        start += int(round(2 * fs))
    return calls


FS_CHOICES = [360.0, 128.0, 250.0, 256.0, 500.0, 1000.0, 100.3, 32.0]


@pytest.mark.parametrize("seed", range(4))
def test_random_beats_equal(lib, seed):
    rng = np.random.default_rng(seed)
    fs = FS_CHOICES[seed % len(FS_CHOICES)]
    alerts = replay(lib, random_beats(rng, fs, 15000), fs)
    kinds = {a["type"] for a in alerts}
    assert {"ventricular_ectopic_beat", "ventricular_run", "supraventricular_ectopy", "high_ectopy_burden",
            "signal_quality"} <= kinds, kinds
    assert any(a["details"].get("sustained") for a in alerts), "a sustained run"


@pytest.mark.parametrize("seed", range(4))
def test_random_rhythm_windows_equal(lib, seed):
    rng = np.random.default_rng(100 + seed)
    fs = FS_CHOICES[(seed + 3) % len(FS_CHOICES)]
    alerts = replay(lib, random_rhythm(rng, fs, 4000), fs, RHYTHM_CLASSES)
    assert {"af_start", "af_end"} <= {a["type"] for a in alerts}


@pytest.mark.parametrize("seed", range(3))
def test_random_heart_rate_windows_equal(lib, seed):
    rng = np.random.default_rng(200 + seed)
    fs = FS_CHOICES[(seed + 5) % len(FS_CHOICES)]
    alerts = replay(lib, random_heart_rate(rng, fs, 6000), fs, ())
    assert {"low_hr", "high_hr"} <= {a["label"] for a in alerts if a["type"] == "hr_out_of_range"}


def test_mixed_streams_equal(lib):
    """One policy fed beats, rhythm windows, heart-rate windows and quality problems interleaved in time: each kind
    keeps its own state, in C as in Python."""
    rng = np.random.default_rng(7)
    fs = 250.0
    streams = [random_beats(rng, fs, 6000)[:-1], random_rhythm(rng, fs, 600)[:-1], random_heart_rate(rng, fs, 1500)]
    at = lambda call: call[2] if call[0] == "quality" else call[1].sample  # noqa: E731
    calls = sorted((c for s in streams for c in s), key=at)  # stable: each stream keeps its order
    alerts = replay(lib, calls + [("finish",)], fs, BEAT_CLASSES + RHYTHM_CLASSES)
    assert len({a["type"] for a in alerts}) >= 7


# --- synthetic edge cases -------------------------------------------------------------------------------------------

def beats(fs, spec) -> list[tuple]:
    """Beats one second apart from a string of labels (n N, s S, v V, f F, ? unclassified, u an uncertain V)."""
    labels = {"n": "N", "s": "S", "v": "V", "f": "F", "?": None, "u": "V"}
    return [("beat", finding(i * int(fs), labels[c], 0.0 if c == "?" else (0.59 if c == "u" else 0.9)))
            for i, c in enumerate(spec)]


@pytest.mark.parametrize("spec", [
    "nvn", "vn", "nv", "?vn", "nv?", "nvv n", "nvvvn", "nvvvvvvvv", "uvn", "nuvn", "nvun", "nvfn", "fvn",
    "nvnnnvnnnnnnnnnnnnnnnnnnnnnnnnnnnnnvnvn", "ssssssssssssssssss", "svsvsvsvsvnnnnnnnnnsvsvsvsvs",
    "n" + "v" * 45 + "n" + "v" * 40, "n" + "v" * 31 + "?vvvn", "nnvvv",
])
def test_beat_edge_cases_equal(lib, spec):
    fs = 360.0
    replay(lib, beats(fs, spec.replace(" ", "")) + [("finish",)], fs)


def test_burden_window_boundary_equal(lib):
    """A beat exactly 60 s older than the current one has left the burden window: with S beats at 0-9 s the burden
    alert clears at 64 s (5 left), so five more S beats raise it again."""
    fs = 360.0
    calls = [("beat", finding(i * 360, "S", 0.9)) for i in range(10)] + [("beat", finding(64 * 360, "N", 0.9))]
    calls += [("beat", finding(64 * 360 + 36 * k, "S", 0.9)) for k in range(1, 6)]
    alerts = replay(lib, calls, fs)
    assert [a["sample"] for a in alerts if a["type"] == "high_ectopy_burden"] == [9 * 360, 64 * 360 + 180]


def test_run_at_one_sample_has_no_rate(lib):
    """A run whose beats share a sample (duration 0): rate_bpm None, as in Python."""
    fs = 360.0
    calls = [("beat", finding(1000, "N", 0.9))] + [("beat", finding(2000, "V", 0.8)) for _ in range(4)] + \
            [("beat", finding(3000, "N", 0.9)), ("finish",)]
    alerts = replay(lib, calls, fs)
    assert alerts and alerts[0]["details"]["rate_bpm"] is None


def test_af_before_and_after_gaps_equal(lib):
    fs = 128.0
    window = int(10 * fs)
    labels = ["AF"] * 2 + [None] + ["AF"] * 3 + ["non-AF"] * 2 + [None] * 2 + ["non-AF"] * 4 + ["AF"] * 3
    calls = [("rhythm_window", finding(i * window, label, 0.0 if label is None else 0.7 + 0.01 * i,
                                       (i + 1) * window)) for i, label in enumerate(labels)]
    alerts = replay(lib, calls, fs, RHYTHM_CLASSES)
    assert [a["type"] for a in alerts] == ["af_start", "af_end", "af_start"]
    assert alerts[1]["details"]["episode_duration_s"] == 70.0  # windows 3 to 10


def test_quality_alerts_rate_limited_equal(lib):
    fs = 500.0
    starts = [0, 100, int(59.9 * fs), int(60 * fs), int(60 * fs) + 1, int(200 * fs), int(150 * fs), int(261 * fs)]
    calls = [("quality", PROBLEMS[i % 4], s) for i, s in enumerate(starts)]
    alerts = replay(lib, calls, fs)
    assert [a["sample"] for a in alerts] == [0, int(60 * fs), int(200 * fs), int(261 * fs)]


def test_round_is_pythons(lib):
    """hs_policy_round(x, n) == round(x, n) for Python floats: random values, the durations a policy rounds (n / fs)
    and exact binary ties, which go to even."""
    rng = np.random.default_rng(3)
    values = list(rng.uniform(0, 300, 20000)) + list(rng.uniform(0, 1e6, 5000)) + list(rng.uniform(0, 1, 5000))
    values += [k / 8 for k in range(2000)] + [k / 400 for k in range(4000)] + [k / 1000 + 5e-4 for k in range(2000)]
    values += [n / fs for fs in FS_CHOICES for n in rng.integers(0, 10 ** 7, 2000)]
    values += [2.675, 0.125, 0.375, 1.005, 0.285, 1e-300, 5e-324, 0.0]
    for decimals in range(5):
        for v in values:
            for x in (float(v), -float(v)):
                got = lib.hs_policy_round(x, decimals)
                assert got == round(x, decimals) and math.copysign(1, got) == math.copysign(1, round(x, decimals)), \
                    (x, decimals, got, round(x, decimals))
    assert math.isnan(lib.hs_policy_round(math.nan, 1)) and lib.hs_policy_round(math.inf, 1) == math.inf


# --- status codes -----------------------------------------------------------------------------------------------------

def test_init_refuses_bad_configurations(lib):
    state = ctypes.create_string_buffer(lib.hs_policy_state_size())
    assert lib.hs_policy_init(None, ctypes.byref(c_config(360.0, BEAT_CLASSES))) == ERR_NULL
    assert lib.hs_policy_init(state, None) == ERR_NULL
    for fs in (0.0, -360.0, 0.5, 1000.5, math.nan, math.inf):
        assert lib.hs_policy_init(state, ctypes.byref(c_config(fs, BEAT_CLASSES))) == ERR_CONFIG, fs
    for classes in (("N", "N"), ("N", ""), ("N", None), ("x" * 16,), tuple("abcdefghi")):
        assert lib.hs_policy_init(state, ctypes.byref(c_config(360.0, classes))) == ERR_CONFIG, classes
    assert state.raw == bytes(len(state.raw)), "a refused configuration writes nothing"
    assert lib.hs_policy_init(state, ctypes.byref(c_config(1000.0, ("x" * 15,) + tuple("abcdefg")))) == OK
    assert lib.hs_policy_init(state, ctypes.byref(c_config(1.0, ()))) == OK


def test_calls_refuse_bad_input_and_change_nothing(lib):
    policy = CPolicy(lib, 360.0)
    for call in [("beat", finding(0, "N", 0.9)), ("beat", finding(360, "V", 0.9))]:
        assert policy.beat(call[1])[0] == OK
    raw = policy.state.raw

    def refused(expected, name, *args, capacity=8):
        status, alerts = policy.call(name, *args, capacity=capacity)
        assert status == expected and alerts == [] and policy.state.raw == raw, (name, args, status)

    good = CFinding(720, 720, 0, 0.9, 0.0)
    bad = [(ERR_LABEL, dict(label=4)), (ERR_LABEL, dict(label=-2)), (ERR_VALUE, dict(confidence=math.nan)),
           (ERR_VALUE, dict(confidence=-0.1)), (ERR_VALUE, dict(confidence=1.0000001)),
           (ERR_SAMPLE, dict(sample=-1)), (ERR_SAMPLE, dict(sample=MAX_SAMPLE + 1, end=MAX_SAMPLE + 1)),
           (ERR_SAMPLE, dict(end=700)), (ERR_ORDER, dict(sample=359, end=800))]
    for expected, fields in bad:
        f = CFinding(*(fields.get(name, getattr(good, name)) for name, _ in CFinding._fields_))
        refused(expected, "hs_policy_beat", ctypes.byref(f))
        refused(expected, "hs_policy_rhythm_window", ctypes.byref(f)) if expected != ERR_ORDER else None
    refused(ERR_NULL, "hs_policy_beat", None)
    refused(ERR_CAPACITY, "hs_policy_beat", ctypes.byref(good), capacity=2)
    refused(ERR_CAPACITY, "hs_policy_finish", capacity=0)
    refused(ERR_LABEL, "hs_policy_quality", 5, 0)
    refused(ERR_LABEL, "hs_policy_quality", 0, 0)
    refused(ERR_SAMPLE, "hs_policy_quality", 1, -5)
    for fields in (dict(hr_bpm=math.nan), dict(hr_bpm=-1.0), dict(hr_bpm=1000.5), dict(hr_bpm=math.inf)):
        f = CFinding(*(fields.get(name, getattr(good, name)) for name, _ in CFinding._fields_))
        refused(ERR_VALUE, "hs_policy_heart_rate_window", ctypes.byref(f))
    refused(ERR_LABEL, "hs_policy_heart_rate_window", ctypes.byref(CFinding(0, 0, 1, 1.0, 80.0)))
    assert lib.hs_policy_beat(policy.state, ctypes.byref(good), policy.alerts, 8, None) == ERR_NULL
    assert lib.hs_policy_beat(policy.state, ctypes.byref(good), None, 8, ctypes.byref(policy.raised)) == ERR_NULL
    assert policy.state.raw == raw
    # an unclassified beat's confidence is not read; equal samples are in order
    assert policy.beat(finding(360, None, 0.0))[0] == OK
    assert lib.hs_policy_beat(policy.state, ctypes.byref(CFinding(400, 400, -1, math.nan, math.nan)), policy.alerts,
                              3, ctypes.byref(policy.raised)) == OK


def test_uninitialised_policy_is_refused(lib):
    state = ctypes.create_string_buffer(lib.hs_policy_state_size())
    alerts, raised = (Decision * 3)(), ctypes.c_int(7)
    assert lib.hs_policy_beat(state, ctypes.byref(CFinding(0, 0, 0, 0.9, 0.0)), alerts, 3,
                              ctypes.byref(raised)) == ERR_NOT_INIT
    assert raised.value == 0
    assert lib.hs_policy_finish(state, alerts, 3, ctypes.byref(raised)) == ERR_NOT_INIT
    assert lib.hs_policy_label_name(state, ctypes.byref(alerts[0])) is None


def test_names(lib):
    assert [lib.hs_policy_alert_type_name(t).decode() for t in range(8)] == list(TYPES)
    assert lib.hs_policy_alert_type_name(8) is None and lib.hs_policy_alert_type_name(-1) is None
    policy = CPolicy(lib, 360.0)
    for type_, label, name in [(1, 2, b"V"), (6, 0, b"low_hr"), (6, 1, b"high_hr"), (7, 1, b"nan"), (7, 4, b"noise"),
                               (0, 4, None), (6, 2, None), (7, 0, None), (7, 5, None), (9, 0, None)]:
        alert = Decision(type=type_, label=label)
        assert lib.hs_policy_label_name(policy.state, ctypes.byref(alert)) == name


def test_builds_for_cortex_m4(tmp_path):
    compiler = shutil.which("arm-none-eabi-gcc")
    if compiler is None:
        pytest.skip("arm-none-eabi-gcc not installed (apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    run = subprocess.run([compiler, *ARM_FLAGS, "-I", str(RUNTIME_DIR), str(RUNTIME_DIR / "hs_policy.c"), "-o",
                          str(tmp_path / "hs_policy.o")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


# --- MIT-BIH: the findings the Monitor makes ----------------------------------------------------------------------

class RecordingPolicy(AlertPolicy):
    """The Monitor's policy, recording every call it gets."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: list[tuple] = []

    def beat(self, finding):
        self.calls.append(("beat", finding))
        return super().beat(finding)

    def rhythm_window(self, finding):
        self.calls.append(("rhythm_window", finding))
        return super().rhythm_window(finding)

    def heart_rate_window(self, finding):
        self.calls.append(("heart_rate_window", finding))
        return super().heart_rate_window(finding)

    def quality(self, kind, start, excerpt):
        self.calls.append(("quality", kind, start))
        return super().quality(kind, start, excerpt)

    def finish(self):
        self.calls.append(("finish",))
        return super().finish()


def monitor_calls(record: str, model: str):
    """The policy calls of a Monitor over the record's MLII lead in 100 s chunks, and the alerts it raised."""
    from sdk.data.records import read_database_record
    from sdk.device.monitor import AlertEvent, Monitor

    recording = read_database_record("mitdb", record)
    x = recording.channel("MLII")
    monitor = Monitor(model, fs=recording.fs, start_time=START, stream_id=record)
    monitor.policy = RecordingPolicy(fs=monitor.fs, device="d", site="s", stream=record, start_time=START,
                                     model=monitor.model_info)
    events = []
    chunk = int(100 * recording.fs)
    for start in range(0, len(x), chunk):
        events += monitor.feed(x[start: start + chunk])
    events += monitor.finish()
    return monitor.fs, monitor.policy.calls, [e.alert for e in events if isinstance(e, AlertEvent)]


def with_dummy_excerpts(call: tuple) -> tuple:
    if call[0] in ("quality", "finish"):
        return call
    f = call[1]
    classified = f.label is not None
    return (call[0], replace(f, excerpt=dummy_excerpt(f.sample) if classified else None,
                             embedding=np.array([float(f.sample)]) if classified else None))


@needs_mitdb
@pytest.mark.parametrize("record, model", [("208", "ecg_beat"), ("201", "ecg_beat"), ("203", "ecg_beat"),
                                           ("201", "ecg_af"), ("208", "ecg_af")])
def test_mitdb_findings_equal(lib, one_thread, record, model):
    fs, calls, monitor_alerts = monitor_calls(record, model)
    classes = BEAT_CLASSES if model == "ecg_beat" else RHYTHM_CLASSES
    alerts = replay(lib, [with_dummy_excerpts(c) for c in calls], fs, classes)
    # the replay is the Monitor's own policy run: same alerts as it raised
    assert [(a["type"], a["sample"], a["label"], a["confidence"]) for a in alerts] == \
           [(a.type, a.sample_index, a.label, a.confidence) for a in monitor_alerts]
    expected = {("208", "ecg_beat"): {"ventricular_ectopic_beat", "high_ectopy_burden"},
                ("201", "ecg_beat"): {"supraventricular_ectopy", "ventricular_ectopic_beat"},
                ("203", "ecg_beat"): {"ventricular_run", "ventricular_ectopic_beat"},
                ("201", "ecg_af"): {"af_start", "af_end"}, ("208", "ecg_af"): set()}[(record, model)]
    assert expected <= {a["type"] for a in alerts}
