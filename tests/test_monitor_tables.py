"""The exporter's tables for the C device path: hs_monitor_config_for fills what the Python Monitor uses, and the C
monitor configured by them gives the Python-configured C monitor's events (itself equal to the Python Monitor's)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from scipy.signal import butter, group_delay, sos2tf, sosfilt_zi

from conftest import needs_mitdb
from firmware_export.monitor_host import CMonitor, Config, build_monitor_library, config_for
from firmware_export.monitor_tables import monitor_tables_c, sensor_tables
from sdk.data import preprocess
from sdk.data.rpeak import QRS_BAND_HZ
from sdk.device.monitor import StreamResampler
from sdk.errors import HeartSightError
from test_c_monitor import EXPORT, build, chunks_of, mitdb

RATES = [360.0, 250.0, 128.0]


@pytest.fixture(scope="module")
def tables_lib():
    return build_monitor_library(EXPORT, RATES)


def python_monitors(fs: float) -> dict:
    """What the Python Monitor itself runs at fs, derived here from its own parts (not from the exporter's
    sensor_tables): StreamResampler's factors and taps, ecg_bandpass and the R-peak detector's QRS band-pass."""
    resampler = StreamResampler(fs, preprocess.ECG_FS, 1)
    qrs = butter(1, QRS_BAND_HZ, btype="bandpass", fs=preprocess.ECG_FS, output="sos")
    _, delay = group_delay(sos2tf(qrs), w=[np.mean(QRS_BAND_HZ)], fs=preprocess.ECG_FS)
    return {"up": resampler.up, "down": resampler.down, "taps": getattr(resampler, "_filter", None),
            "sos": np.asarray(preprocess.ecg_bandpass(preprocess.ECG_FS).sos, np.float64),
            "rpeak": (preprocess.ECG_FS, *qrs[0, :3], *qrs[0, 4:], *sosfilt_zi(qrs)[0], int(round(float(delay[0]))))}


def test_the_tables_are_the_python_monitors(tables_lib):
    for fs in RATES:
        mine, theirs = config_for(tables_lib, fs), python_monitors(fs)
        assert (mine.fs, mine.excerpt_s) == (fs, 3.0)
        assert (mine.resampler.up, mine.resampler.down) == (theirs["up"], theirs["down"])
        n = mine.resampler.n_taps
        assert (n == 0) == (theirs["taps"] is None)  # the model's own rate passes through
        if n:
            taps = np.ctypeslib.as_array(ctypes.cast(mine.resampler.taps, ctypes.POINTER(ctypes.c_float)), (n,))
            assert np.array_equal(taps, sensor_tables(fs).taps)  # bit for bit: 9 digits read back to the float32
            assert np.array_equal(taps, theirs["taps"])
        sos = np.ctypeslib.as_array(ctypes.cast(mine.bandpass.sos, ctypes.POINTER(ctypes.c_double)), (6 * 2,))
        assert np.array_equal(sos, sensor_tables(fs).bandpass_sos.ravel())
        assert np.array_equal(sos, theirs["sos"].ravel())
        r = mine.rpeak
        assert (r.fs, *r.b, *r.a, *r.zi, r.band_delay) == theirs["rpeak"]
    assert tables_lib.hs_monitor_config_for(500.0, ctypes.byref(Config())) == -3  # not built for 500 Hz
    with pytest.raises(HeartSightError, match="no sensor rate 500 Hz"):
        config_for(tables_lib, 500.0)
    with pytest.raises(HeartSightError, match="80-500 Hz"):
        sensor_tables(1000.0)
    assert "hs_model_api" in monitor_tables_c([360.0])


@needs_mitdb
def test_a_monitor_configured_by_the_tables_gives_the_same_events(tables_lib):
    x, fs = mitdb("233", 60.0)
    configured = CMonitor(tables_lib, fs, config=config_for(tables_lib, fs))  # as a firmware configures it
    reference = CMonitor(build(), fs)  # configured in Python
    assert configured.status == reference.status == 0
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
