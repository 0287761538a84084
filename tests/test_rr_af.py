"""RR-irregularity features, the AF Database's beat lists, and the RR-only logistic AF detector."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import DATA
from models.architectures import predict
from models.registry import get_spec
from models.rr_af import RhythmEvidence, fit_rr_logistic, with_evidence
from sdk.data import afdb, rr_features
from sdk.data.datasets import Dataset
from sdk.errors import HeartSightError
from sdk.training.train import TrainConfig, fit

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


def test_rhythm_evidence_is_the_logistic_af_margin_and_survives_the_model_card():
    rng = np.random.default_rng(3)
    x = np.stack([rr_features.irregularity(maker(32, rng)) for maker in (sinus, fibrillation) for _ in range(40)])
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    model = fit_rr_logistic(x, y, np.r_[np.full(40, "a"), np.full(40, "b")])
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    evidence = RhythmEvidence.from_card(json.loads(json.dumps(RhythmEvidence.of(model).to_card())))
    usable = np.ones(len(x), bool)
    usable[0] = False
    margin = evidence(x, usable)
    assert np.allclose(margin[1:], logits[1:, 1] - logits[1:, 0], atol=1e-4)
    assert margin[0] == 0  # too few intervals: no say either way
    with_nan = x.copy()
    with_nan[0] = np.nan  # a dataset's way of marking such a window
    assert np.array_equal(evidence(with_nan), margin)
    fused = with_evidence(np.zeros((len(x), 2), np.float32), margin)
    assert (fused.argmax(1) == logits.argmax(1))[1:].all()


def test_a_card_whose_rhythm_evidence_reads_other_features_is_refused():
    card = {"features": ["nrmssd"], "mean": [0.0], "scale": [1.0], "weights": [1.0], "bias": 0.0}
    with pytest.raises(HeartSightError, match="train the model again"):
        RhythmEvidence.from_card(card)


def test_a_network_trained_on_top_of_offsets_learns_what_they_leave():
    """The class is told half by the offset and half by the window (its level): trained with the offsets on the AF
    column, as with_evidence adds them at inference, network plus offset is right; a network trained without them
    learns the offset's share again, counts it twice at inference and is wrong far more often."""
    spec = replace(get_spec("ecg_af"), window=64, widths=(4, 4))
    rng = np.random.default_rng(4)
    level, margin = rng.standard_normal(1024), 4 * rng.standard_normal(1024).astype(np.float32)
    x = 0.3 * rng.standard_normal((1024, len(spec.input_channels), spec.window)).astype(np.float32)
    x[:, 0] += level[:, None].astype(np.float32)
    y = (margin + 4 * level > 0).astype(np.int64)
    train, test = Dataset(x[:768], y[:768], np.zeros(768, str)), slice(768, None)

    def fused_accuracy(offsets):
        model, _ = fit(spec, train, TrainConfig(epochs=10, batch_size=32, seed=0), progress=False, offsets=offsets)
        fused = with_evidence(predict(model, x[test]), margin[test])
        return (fused.argmax(1) == y[test]).mean()
    on_top = fused_accuracy(with_evidence(np.zeros((768, 2), np.float32), margin[:768]))
    alone = fused_accuracy(None)
    assert on_top > 0.9 and on_top > alone + 0.05, (on_top, alone)


def test_ectopic_beats_in_a_steady_rhythm_read_apart_from_fibrillation():
    """Sinus rhythm with a premature beat and its pause every fifth beat is as irregular beat to beat as AF, but
    most of its intervals sit at the median, the irregular ones come in premature-pause pairs, and the rest is
    steady."""
    rng = np.random.default_rng(5)
    ectopy = np.tile([0.8, 0.8, 0.8, 0.5, 1.1], 7) + 0.005 * rng.standard_normal(35)
    irregular = fibrillation(35, rng)
    for name, ectopy_is in (("near_median_share", "higher"), ("premature_pause_share", "higher"),
                            ("core_rmssd", "lower")):
        a, b = feature(ectopy, name), feature(irregular, name)
        assert (a > b) if ectopy_is == "higher" else (a < b), name
    assert feature(ectopy, "premature_pause_share") == pytest.approx(7 / 34)
    drifting = 0.8 + 0.05 * np.sin(2 * np.pi * np.arange(35) / 20) + 0.002 * rng.standard_normal(35)
    assert feature(drifting, "poincare_ratio") < 0.3 < 0.7 < feature(irregular, "poincare_ratio")
