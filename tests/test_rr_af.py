"""RR-irregularity features, the AF Database's beat lists, and the RR-only logistic AF detector."""

import numpy as np
import pytest
import torch

from conftest import DATA
from models.rr_af import fit_rr_logistic
from sdk.data import afdb, rr_features
from sdk.errors import HeartSightError

HAS_AFDB = DATA is not None and (DATA / "afdb_rr" / "qrs04015.txt").exists()


def sinus(n: int, rng) -> np.ndarray:
    return 0.8 + 0.01 * rng.standard_normal(n)


def fibrillation(n: int, rng) -> np.ndarray:
    return rng.uniform(0.35, 1.1, n)


def feature(rr, name: str) -> float:
    return float(rr_features.irregularity(rr)[rr_features.FEATURES.index(name)])


def test_features_tell_fibrillation_from_sinus_rhythm_and_bigeminy_from_fibrillation():
    rng = np.random.default_rng(0)
    regular, irregular = sinus(32, rng), fibrillation(32, rng)
    bigeminy = np.tile([0.55, 1.05], 16)
    for name in ("nrmssd", "shannon_entropy", "successive_difference", "best_lag_difference", "cosen"):
        assert feature(irregular, name) > feature(regular, name), name
    assert 0.5 < feature(irregular, "turning_point_ratio") < 0.85  # a random series turns 2/3 of the time
    # bigeminy is as irregular beat to beat as fibrillation, but it repeats every second beat
    assert feature(bigeminy, "nrmssd") > feature(irregular, "nrmssd")
    assert feature(bigeminy, "best_lag_difference") < 0.01 < feature(irregular, "best_lag_difference")


def test_too_few_intervals_are_refused_and_such_windows_marked_unusable():
    with pytest.raises(ValueError, match=f"at least {rr_features.MIN_INTERVALS}"):
        rr_features.irregularity(np.full(rr_features.MIN_INTERVALS - 1, 0.8))
    beats = np.cumsum(np.full(40, 0.8))  # 0.8 s .. 32 s
    features, usable = rr_features.window_features(beats, np.array([4.0, 10.0, 30.0]))
    assert usable.tolist() == [False, True, True]
    assert not features[0].any()


def test_window_features_use_only_beats_before_the_window_end():
    """What follows a window's end must not change it: a device decides with the beats it has."""
    rng = np.random.default_rng(1)
    rr = np.concatenate([sinus(30, rng), fibrillation(30, rng)])
    beats = np.cumsum(rr)
    end = float(beats[29]) + 0.01
    before, _ = rr_features.window_features(beats[:30], np.array([end]))
    with_later, _ = rr_features.window_features(beats, np.array([end]))
    assert np.array_equal(before, with_later)
    later, _ = rr_features.window_features(beats, np.array([beats[-1]]))
    assert not np.allclose(later, with_later)


def test_logistic_detector_learns_fibrillation_and_weighs_every_record_the_same():
    rng = np.random.default_rng(2)

    def windows(maker, n):
        return np.stack([rr_features.irregularity(maker(32, rng)) for _ in range(n)])
    # one long record of sinus rhythm, one short of AF: record weighting keeps the short one from being ignored
    x = np.concatenate([windows(sinus, 400), windows(fibrillation, 20)])
    y = np.r_[np.zeros(400, int), np.ones(20, int)]
    model = fit_rr_logistic(x, y, np.r_[np.full(400, "long"), np.full(20, "short")])
    test_x = np.concatenate([windows(sinus, 50), windows(fibrillation, 50)]).astype(np.float32)
    with torch.no_grad():
        predicted = model(torch.from_numpy(test_x)).argmax(1).numpy()
    assert (predicted == np.r_[np.zeros(50), np.ones(50)]).mean() > 0.95


@pytest.mark.skipif(not HAS_AFDB, reason="MIT-BIH AF Database beat lists not found: set HEARTSIGHT_DATA")
def test_afdb_beat_lists_and_rhythm_episodes():
    record = afdb.load_record("04015", DATA)
    assert len(record.beat_times_s) > 30_000 and np.all(np.diff(record.beat_times_s) > 0)
    grid = np.arange(0, record.beat_times_s[-1], 1.0)
    af_hours = record.af_at(grid).sum() / 3600
    assert 0 < af_hours < 2  # 04015 holds short paroxysms of AF
    # the first AF episode of 04015 starts at 6 min 50.336 s (atr04015.txt)
    assert not record.af_at(np.array([410.0]))[0] and record.af_at(np.array([411.0]))[0]


def test_a_missing_afdb_record_names_the_files_needed(tmp_path):
    with pytest.raises(HeartSightError, match="qrs04015.txt and atr04015.txt"):
        afdb.load_record("04015", tmp_path)


def test_intervals_at_ectopic_beats_are_left_out_when_the_beats_are_named():
    """Sinus rhythm with a premature ventricular beat every fourth beat is irregular; without the intervals that
    touch those beats it is the steady rhythm it is."""
    rr = np.tile([0.8, 0.8, 0.5, 1.1], 20)  # the 0.5-s interval ends at a V beat, the 1.1-s pause starts at it
    beats = np.cumsum(np.r_[0.0, rr])
    ectopic = np.zeros(len(beats), bool)
    ectopic[np.flatnonzero(np.r_[False, rr == 0.5])] = True
    nrmssd = rr_features.FEATURES.index("nrmssd")
    raw, _ = rr_features.window_features(beats, np.array([beats[-1]]))
    filtered, usable = rr_features.window_features(beats, np.array([beats[-1]]), ectopic)
    assert usable[0] and raw[0, nrmssd] > 0.3 and filtered[0, nrmssd] < 1e-6
