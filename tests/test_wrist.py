import numpy as np

from conftest import DATA, needs_wrist
from sdk.data import wrist


def test_reference_heart_rate_is_the_mean_rate_of_the_intervals_inside_the_window():
    fs = 256.0
    r_peaks = np.array([0, 256, 512, 640, 768, 1024, 1280])  # 60, 60, 120, 120, 60, 60 bpm
    session = wrist.WristSession("x", "s0", fs, np.zeros((2000, 4)), r_peaks)
    rates = wrist.reference_heart_rate(session, np.array([0, 500, 1700]), 520)
    assert rates[0] == 60.0 * 2 / (512 / fs)  # beats 0, 256, 512
    assert np.isclose(rates[1], 120.0)  # beats 512, 640, 768 (1024 lies after the window)
    assert np.isnan(rates[2])  # no beats: no reference


@needs_wrist
def test_sessions_load_with_their_subjects_and_no_missing_samples():
    names = wrist.session_names(DATA)
    assert len(names) == 16
    session = wrist.load_session("s6_run", DATA)
    assert session.subject == "s6" and session.fs == 256.0
    assert np.isfinite(session.ppg_and_accel).all()
    assert session.r_peaks.max() < len(session.ppg_and_accel)
    rr = np.diff(session.r_peaks) / session.fs
    assert 0.25 < np.median(rr) < 1.5
