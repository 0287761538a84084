"""The C device path (runtime/hs_monitor.h) with an exported beat model, built for this computer and called through
ctypes: how `heartsight verify-firmware --monitor`, the benchmark and the tests compare it with the Python Monitor.

The host library is what a firmware links: the runtime's monitor sources, the export's C library and the tables
`monitor_tables_c` writes for the sensor rates (hs_model_api and hs_monitor_config_for), compiled with the strict
flags into the per-user cache (firmware_export.host.build_runtime_library). `CMonitor` feeds it chunks and returns
its events as plain Python values, in the order the Python Monitor returns them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from firmware_export.codegen import C_FILES, C_SOURCES
from firmware_export.host import RUNTIME_DIR, build_runtime_library, cache_directory
from firmware_export.monitor_tables import EXCERPT_S, MONITOR_RUNTIME_FILES, monitor_tables_c, sensor_tables
from sdk.data.preprocess import ECG_FS
from sdk.errors import HeartSightError

RUNTIME_SOURCES = [name for name in MONITOR_RUNTIME_FILES if name.endswith(".c")]
# hs_monitor.h's status codes, by name without HS_MONITOR_ (OK, HELD, ERR_NULL, ...)
CODE = {name: int(value) for name, value in re.findall(r"#define HS_MONITOR_((?:OK|HELD|ERR_\w+)) \(?(-?\d+)\)?",
                                                        (RUNTIME_DIR / "hs_monitor.h").read_text())}
CLASSES = ("N", "S", "V", "F")  # the beat models' classes, in hs_class_names' order
PROBLEMS = (None, "nan", "flat_line", "clipping", "noise", "backlog")  # HS_QUALITY_* and HS_MONITOR_PROBLEM_BACKLOG
TYPES = ("ventricular_ectopic_beat", "ventricular_run", "supraventricular_ectopy", "high_ectopy_burden", "af_start",
         "af_end", "hr_out_of_range", "signal_quality")  # hs_policy.h's HS_POLICY_* alert types


# --- the C structures (hs_dsp.h, hs_rpeak.h, hs_quality.h, hs_policy.h, hs_monitor.h) --------------------------------

class ResamplerConfig(ctypes.Structure):
    _fields_ = [("up", ctypes.c_int), ("down", ctypes.c_int), ("n_taps", ctypes.c_int), ("taps", ctypes.c_void_p)]


class FilterConfig(ctypes.Structure):
    _fields_ = [("sections", ctypes.c_int), ("sos", ctypes.c_void_p), ("zi", ctypes.c_void_p)]


class RPeakConfig(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_double), ("b", ctypes.c_double * 3), ("a", ctypes.c_double * 2),
                ("zi", ctypes.c_double * 2), ("band_delay", ctypes.c_int)]


class Config(ctypes.Structure):  # hs_monitor_config_t
    _fields_ = [("fs", ctypes.c_double), ("resampler", ResamplerConfig), ("bandpass", FilterConfig),
                ("rpeak", RPeakConfig), ("model", ctypes.c_void_p), ("model_context", ctypes.c_void_p),
                ("excerpt_s", ctypes.c_double)]


class ModelApi(ctypes.Structure):  # hs_model_api_t, up to the size of the model's context
    _fields_ = [("fs", ctypes.c_double), ("input_channels", ctypes.c_int), ("input_length", ctypes.c_int),
                ("classes", ctypes.c_int), ("class_names", ctypes.c_void_p), ("embedding_length", ctypes.c_int),
                ("last_length", ctypes.c_int), ("last_scale", ctypes.c_float), ("context_bytes", ctypes.c_size_t)]


class QualityEventC(ctypes.Structure):
    _fields_ = [("start", ctypes.c_int64), ("end", ctypes.c_int64), ("kind", ctypes.c_int32)]


class Decision(ctypes.Structure):  # hs_policy_alert_t
    _fields_ = [("type", ctypes.c_int), ("label", ctypes.c_int), ("sample", ctypes.c_int64),
                ("confidence", ctypes.c_double), ("excerpt_first", ctypes.c_int64), ("excerpt_last", ctypes.c_int64),
                ("suppressed_since_last", ctypes.c_int32), ("run_length", ctypes.c_int32),
                ("sustained", ctypes.c_int32), ("has_rate_bpm", ctypes.c_int32), ("rate_bpm", ctypes.c_double),
                ("duration_s", ctypes.c_double), ("ectopic_per_min", ctypes.c_int32), ("raise_at", ctypes.c_int32),
                ("clear_at", ctypes.c_int32), ("windows", ctypes.c_int32), ("episode_duration_s", ctypes.c_double),
                ("hr_bpm", ctypes.c_double * 3), ("low_bpm", ctypes.c_double), ("high_bpm", ctypes.c_double),
                ("problem", ctypes.c_int32), ("start_sample", ctypes.c_int64)]


class Mark(ctypes.Structure):
    _fields_ = [("sample", ctypes.c_int64), ("label", ctypes.c_int32)]


class BeatC(ctypes.Structure):
    _fields_ = [("sample", ctypes.c_int64), ("window_start", ctypes.c_int64), ("label", ctypes.c_int),
                ("problem", ctypes.c_int), ("p", ctypes.c_double), ("trace", ctypes.POINTER(ctypes.c_float)),
                ("trace_length", ctypes.c_int32)]


class AlertC(ctypes.Structure):
    _fields_ = [("decision", Decision), ("head_version", ctypes.c_uint32), ("excerpt_start", ctypes.c_int64),
                ("excerpt_length", ctypes.c_int32), ("truncated", ctypes.c_int32),
                ("signal", ctypes.POINTER(ctypes.c_float)), ("trace", ctypes.POINTER(ctypes.c_float)),
                ("embedding", ctypes.POINTER(ctypes.c_double)), ("embedding_length", ctypes.c_int32),
                ("marks", ctypes.POINTER(Mark)), ("n_marks", ctypes.c_int32)]


class EventC(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("beat", BeatC), ("quality", QualityEventC), ("alert", AlertC)]


ON_EVENT = ctypes.CFUNCTYPE(None, ctypes.POINTER(EventC), ctypes.c_void_p)
BEAT_EVENT, QUALITY_EVENT, ALERT_EVENT = 1, 2, 3


# --- the host library ------------------------------------------------------------------------------------------------

def build_monitor_library(export_dir: str | Path, rates: list[float], flags: list[str] = ()) -> ctypes.CDLL:
    """The runtime's monitor sources, the export's C library and its tables for the sensor rates in one host library
    (cached; each call loads a private copy), with hs_monitor's signatures. flags: -D flags for every file (e.g.
    -DHS_MONITOR_EXCERPT_S=8)."""
    export_dir = Path(export_dir)
    missing = [name for name in C_FILES if not (export_dir / name).exists()]
    if missing:
        raise HeartSightError(f"{export_dir} is not an exported C model (missing {', '.join(missing)}); run "
                              "`heartsight export --model NAME --out DIR` first")
    tables = tables_file(monitor_tables_c(list(rates)))
    library = build_runtime_library(RUNTIME_SOURCES, list(flags),
                                    extra_sources=[*(export_dir / name for name in C_SOURCES), tables])
    p, i = ctypes.c_void_p, ctypes.c_int
    for name, restype, argtypes in [
        ("hs_monitor_state_size", ctypes.c_size_t, []),
        ("hs_monitor_init", i, [p, p]),
        ("hs_monitor_max_chunk", i, [p, p]),
        ("hs_monitor_feed", i, [p, p, i, ON_EVENT, p]),
        ("hs_monitor_feed_int16", i, [p, p, i, ctypes.c_float, ON_EVENT, p]),
        ("hs_monitor_finish", i, [p, ON_EVENT, p]),
        ("hs_monitor_overflows", i, [p, p]),
        ("hs_monitor_config_for", i, [ctypes.c_double, p]),
    ]:
        function = getattr(library, name)
        function.restype, function.argtypes = restype, argtypes
    return library


def tables_file(text: str) -> Path:
    """The generated tables in the per-user cache of host builds, at a path named by their content: the cached
    library of the same tables is built once, and builds for other rates never overwrite each other's."""
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    path = cache_directory("c") / "monitor_tables" / key / "hs_monitor_tables.c"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")  # renamed into place: never half-written
        partial.write_text(text)
        os.replace(partial, path)
    return path


def model_api(library: ctypes.CDLL) -> int:
    """The address of the library's hs_model_api (the exported model's functions, from the tables)."""
    return ctypes.addressof(ctypes.c_byte.in_dll(library, "hs_model_api"))


def monitor_config(library: ctypes.CDLL, fs: float, excerpt_s: float = EXCERPT_S) -> Config:
    """An hs_monitor_config_t made in Python from the exporter's tables for fs (sensor_tables), any rate in the C
    device path's range, whether or not the library's hs_monitor_config_for has it; fields may then be changed."""
    t = sensor_tables(fs)
    taps = np.ascontiguousarray(t.taps, np.float32)
    sos = np.ascontiguousarray(t.bandpass_sos, np.float64)
    zi = np.ascontiguousarray(t.bandpass_zi, np.float64)
    rpeak = RPeakConfig(float(ECG_FS), (ctypes.c_double * 3)(*t.qrs_b), (ctypes.c_double * 2)(*t.qrs_a),
                        (ctypes.c_double * 2)(*t.qrs_zi), t.qrs_delay)
    context = model_context(library)
    config = Config(float(fs), ResamplerConfig(t.up, t.down, len(taps) if t.up != t.down else 0, taps.ctypes.data),
                    FilterConfig(len(sos), sos.ctypes.data, zi.ctypes.data), rpeak, model_api(library),
                    ctypes.addressof(context), float(excerpt_s))
    config._keep = (taps, sos, zi, context)  # the C reads them: they live as long as the config
    return config


def model_context(library: ctypes.CDLL) -> ctypes.Array:
    """Zeroed memory for one stream's model context (hs_model_api.context_bytes), 8-byte aligned."""
    size = ModelApi.from_address(model_api(library)).context_bytes
    return (ctypes.c_uint64 * ((size + 7) // 8))()


def config_for(library: ctypes.CDLL, fs: float) -> Config:
    """The configuration the library's own tables give for fs (hs_monitor_config_for), with a model context of its
    own, as a firmware sets it up."""
    config = Config()
    status = library.hs_monitor_config_for(float(fs), ctypes.byref(config))
    if status != CODE["OK"]:
        raise HeartSightError(f"the device path's tables have no sensor rate {fs:g} Hz (hs_monitor_config_for returned "
                              f"{status}); export with --sensor-fs {fs:g}")
    context = model_context(library)  # the firmware's own hs_context_t
    config.model_context = ctypes.addressof(context)
    config._keep = (context,)
    return config


# --- the monitor -----------------------------------------------------------------------------------------------------

class CMonitor:
    """hs_monitor with the Python Monitor's interface: feed(chunk) and finish() return the events as plain tuples,
    ("beat", dict), ("quality", dict) and ("alert", dict), in the order the Python Monitor returns its events;
    status is the last call's hs_monitor status (CODE). config: by default made in Python for fs (monitor_config);
    config_for(library, fs) gives the library's own tables."""

    def __init__(self, library: ctypes.CDLL, fs: float, excerpt_s: float = EXCERPT_S, config: Config | None = None):
        self.lib = library
        self.state = (ctypes.c_uint64 * ((library.hs_monitor_state_size() + 7) // 8))()  # 8-byte aligned
        self.config = monitor_config(library, fs, excerpt_s) if config is None else config
        self.status = library.hs_monitor_init(self.state, ctypes.byref(self.config))
        self.events: list = []
        self.callback = ON_EVENT(self._on_event)

    def _on_event(self, pointer, _user):
        event = pointer.contents
        if event.kind == BEAT_EVENT:
            b = event.beat
            self.events.append(("beat", {
                "sample": b.sample, "window_start": b.window_start,
                "label": None if b.label < 0 else CLASSES[b.label], "quality": PROBLEMS[b.problem],
                "p": b.p if b.label >= 0 else None,
                "trace": np.ctypeslib.as_array(b.trace, (b.trace_length,)).copy() if b.trace else None}))
        elif event.kind == QUALITY_EVENT:
            q = event.quality
            self.events.append(("quality", {"kind": PROBLEMS[q.kind], "start": q.start,
                                            "end": None if q.end < 0 else q.end}))
        else:
            self.events.append(("alert", plain_alert(event.alert)))

    def _taken(self) -> list:
        events, self.events = self.events, []
        return events

    def feed(self, chunk: np.ndarray) -> list:
        x = np.ascontiguousarray(chunk, np.float32)
        self.status = self.lib.hs_monitor_feed(self.state, x.ctypes.data, len(x), self.callback, None)
        return self._taken()

    def feed_int16(self, counts: np.ndarray, gain: float) -> list:
        x = np.ascontiguousarray(counts, np.int16)
        self.status = self.lib.hs_monitor_feed_int16(self.state, x.ctypes.data, len(x), gain, self.callback, None)
        return self._taken()

    def finish(self) -> list:
        self.status = self.lib.hs_monitor_finish(self.state, self.callback, None)
        return self._taken()

    @property
    def overflows(self) -> int:
        """What the build's fixed sizes could not hold so far; 0: every event is the Python Monitor's."""
        value = ctypes.c_uint32()
        status = self.lib.hs_monitor_overflows(self.state, ctypes.byref(value))
        if status != CODE["OK"]:
            raise HeartSightError(f"hs_monitor_overflows returned {status}: the monitor was never initialised")
        return value.value

    @property
    def max_chunk(self) -> int:
        """The most samples one feed takes (one second of signal)."""
        value = ctypes.c_int()
        status = self.lib.hs_monitor_max_chunk(self.state, ctypes.byref(value))
        if status != CODE["OK"]:
            raise HeartSightError(f"hs_monitor_max_chunk returned {status}: the monitor was never initialised")
        return value.value


def plain_alert(a: AlertC) -> dict:
    """An AlertEvent from C as the Python Alert says it: details as Python's dict, the excerpt as arrays."""
    d = a.decision
    kind = TYPES[d.type]
    if kind in ("ventricular_ectopic_beat", "supraventricular_ectopy"):
        details = {"suppressed_since_last": d.suppressed_since_last}
    elif kind == "ventricular_run":
        details = {"run_length": d.run_length, "duration_s": d.duration_s,
                   "rate_bpm": d.rate_bpm if d.has_rate_bpm else None, "sustained": bool(d.sustained)}
    elif kind == "high_ectopy_burden":
        details = {"ectopic_per_min": d.ectopic_per_min, "raise_at": d.raise_at, "clear_at": d.clear_at}
    else:
        details = {"problem": PROBLEMS[d.problem], "start_sample": d.start_sample}
    if a.embedding:
        details["embedding"] = a.embedding[: a.embedding_length]
    if a.n_marks:
        details["beats"] = [[m.sample, None if m.label < 0 else CLASSES[m.label]] for m in a.marks[: a.n_marks]]
    n = a.excerpt_length
    label = PROBLEMS[d.label] if kind == "signal_quality" else CLASSES[d.label]
    return {"type": kind, "sample": d.sample, "label": label,
            "confidence": d.confidence, "details": details, "start": a.excerpt_start, "truncated": a.truncated,
            "head_version": a.head_version,
            "signal": np.ctypeslib.as_array(a.signal, (n,)).copy() if n else np.zeros(0, np.float32),
            "trace": np.ctypeslib.as_array(a.trace, (n,)).copy() if n else np.zeros(0, np.float32)}
