"""The exporter's tables for the C device path: hs_monitor_config_for fills what the Python Monitor uses, and the C
monitor configured by them gives the Python-configured C monitor's events (itself equal to the Python Monitor's)."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from conftest import needs_mitdb
from firmware_export.host import build_runtime_library, cache_directory
from firmware_export.monitor_tables import monitor_tables_c, sensor_tables
from sdk.errors import HeartSightError
from test_c_monitor import MODEL_SOURCES, ON_EVENT, RUNTIME, CMonitor, Config, build, chunks_of, mitdb, monitor_config

RATES = [360.0, 250.0, 128.0]


@pytest.fixture(scope="module")
def tables_lib():
    tables = cache_directory("c") / "shims" / "hs_monitor_tables_test.c"
    text = monitor_tables_c(RATES)
    if not tables.exists() or tables.read_text() != text:
        tables.parent.mkdir(parents=True, exist_ok=True)
        partial = tables.with_name(f".{tables.name}.{os.getpid()}")
        partial.write_text(text)
        os.replace(partial, tables)
    library = build_runtime_library(RUNTIME, extra_sources=[*MODEL_SOURCES, tables])
    library.hs_monitor_config_for.restype = ctypes.c_int
    library.hs_monitor_config_for.argtypes = [ctypes.c_double, ctypes.c_void_p]
    for name, restype, argtypes in [("hs_monitor_state_size", ctypes.c_size_t, []),
                                    ("hs_monitor_init", ctypes.c_int, [ctypes.c_void_p] * 2),
                                    ("hs_monitor_feed", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                                                       ON_EVENT, ctypes.c_void_p]),
                                    ("hs_monitor_finish", ctypes.c_int, [ctypes.c_void_p, ON_EVENT, ctypes.c_void_p])]:
        function = getattr(library, name)
        function.restype, function.argtypes = restype, argtypes
    return library


def filled(lib, fs: float) -> Config:
    config = Config()
    assert lib.hs_monitor_config_for(fs, ctypes.byref(config)) == 0
    return config


def test_the_tables_are_the_python_monitors(tables_lib):
    reference = build()
    for fs in RATES:
        mine, theirs = filled(tables_lib, fs), monitor_config(reference, fs)
        assert (mine.fs, mine.excerpt_s) == (theirs.fs, theirs.excerpt_s)
        assert (mine.resampler.up, mine.resampler.down) == (theirs.resampler.up, theirs.resampler.down)
        n = mine.resampler.n_taps
        if n:
            taps = np.ctypeslib.as_array(ctypes.cast(mine.resampler.taps, ctypes.POINTER(ctypes.c_float)), (n,))
            assert np.array_equal(taps, sensor_tables(fs).taps)  # bit for bit: 9 digits read back to the float32
        sos = np.ctypeslib.as_array(ctypes.cast(mine.bandpass.sos, ctypes.POINTER(ctypes.c_double)), (6 * 2,))
        assert np.array_equal(sos, sensor_tables(fs).bandpass_sos.ravel())
        assert bytes(mine.rpeak) == bytes(theirs.rpeak)
    assert tables_lib.hs_monitor_config_for(500.0, ctypes.byref(Config())) == -3  # not built for 500 Hz
    with pytest.raises(HeartSightError, match="80-500 Hz"):
        sensor_tables(1000.0)


@needs_mitdb
def test_a_monitor_configured_by_the_tables_gives_the_same_events(tables_lib):
    x, fs = mitdb("233", 60.0)
    configured = object.__new__(CMonitor)  # CMonitor's binding, configured by the exporter's tables
    configured.lib, configured.events, configured.callback = tables_lib, [], ON_EVENT(configured._on_event)
    configured.state = (ctypes.c_uint64 * ((tables_lib.hs_monitor_state_size() + 7) // 8))()
    configured.config = filled(tables_lib, fs)
    assert tables_lib.hs_monitor_init(configured.state, ctypes.byref(configured.config)) == 0
    reference = CMonitor(build(), fs)
    events = [[], []]
    for chunk in chunks_of(x):
        events[0] += configured.feed(chunk)
        events[1] += reference.feed(chunk)
    events[0] += configured.finish()
    events[1] += reference.finish()
    beats = [[(e["sample"], e["label"], e["p"]) for kind, e in side if kind == "beat"] for side in events]
    assert len(beats[0]) > 60 and beats[0] == beats[1]
    alerts = [[(e["type"], e["sample"], e["confidence"]) for kind, e in side if kind == "alert"] for side in events]
    assert alerts[0] == alerts[1]
