"""Synthetic ECG generator: ectopic beats, morphology, annotations and input checks."""

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from sdk.data.synthetic import synthetic_ecg
from sdk.errors import HeartSightError


def rr_seconds(ecg):
    return np.diff(ecg.r_peaks) / ecg.fs


def median_normal_rr(ecg):
    """Median R-R between two consecutive N beats."""
    labels = np.array(ecg.labels)
    both_normal = (labels[1:] == "N") & (labels[:-1] == "N")
    return np.median(rr_seconds(ecg)[both_normal])


def qrs_widths(ecg, r_peaks):
    """Width (s) above half maximum of the |1-40 Hz band-passed| complex around each of r_peaks."""
    sos = butter(2, [1.0, 40.0], btype="band", fs=ecg.fs, output="sos")
    envelope = np.abs(sosfiltfilt(sos, ecg.signal))
    reach = round(0.15 * ecg.fs)
    widths = []
    for r in r_peaks:
        segment = envelope[r - reach : r + reach + 1]
        top = int(np.argmax(segment))
        below = segment < segment[top] / 2
        start = top - np.argmax(below[top::-1])
        stop = top + np.argmax(below[top:])
        widths.append((stop - start - 1) / ecg.fs)
    return np.array(widths)


def test_same_seed_gives_the_same_record_and_another_seed_does_not():
    first = synthetic_ecg(20, ectopic={"S": 0.1, "V": 0.1}, seed=7)
    again = synthetic_ecg(20, ectopic={"S": 0.1, "V": 0.1}, seed=7)
    other = synthetic_ecg(20, ectopic={"S": 0.1, "V": 0.1}, seed=8)
    np.testing.assert_array_equal(first.signal, again.signal)
    np.testing.assert_array_equal(first.r_peaks, again.r_peaks)
    assert first.labels == again.labels
    assert not np.array_equal(first.signal, other.signal)


@pytest.mark.parametrize("fs", [128, 250, 360])
def test_output_length_types_and_annotations_follow_fs(fs):
    ecg = synthetic_ecg(duration_s=10.5, fs=fs)
    assert ecg.signal.shape == (round(10.5 * fs),)
    assert ecg.signal.dtype == np.float32
    assert ecg.fs == fs
    assert ecg.r_peaks.dtype == np.int64
    assert len(ecg.labels) == len(ecg.r_peaks) >= 10
    assert ecg.r_peaks[0] >= 0 and ecg.r_peaks[-1] < ecg.signal.size
    assert np.all(np.diff(ecg.r_peaks) > 0)


@pytest.mark.parametrize("heart_rate", [45.0, 70.0, 130.0])
def test_mean_heart_rate_and_beat_count_match_the_request(heart_rate):
    ecg = synthetic_ecg(duration_s=120, fs=250, heart_rate=heart_rate, seed=1)
    assert abs(60 / rr_seconds(ecg).mean() - heart_rate) <= 0.03 * heart_rate
    assert abs(len(ecg.r_peaks) - 120 * heart_rate / 60) <= 2


def test_heart_rate_variability_follows_heart_rate_std():
    steady = synthetic_ecg(60, fs=360, heart_rate=75, heart_rate_std=0.0)
    assert np.ptp(np.diff(steady.r_peaks)) <= 1  # constant R-R up to sample rounding
    variable = synthetic_ecg(300, fs=360, heart_rate=75, heart_rate_std=4.0)
    assert 2.0 <= np.std(60 / rr_seconds(variable)) <= 6.0


def test_no_ectopic_beats_by_default():
    assert set(synthetic_ecg(60).labels) == {"N"}


def test_requested_ectopic_fractions_are_met():
    ecg = synthetic_ecg(300, fs=250, ectopic={"S": 0.1, "V": 0.2}, seed=2)
    labels = np.array(ecg.labels)
    for kind, fraction in [("S", 0.1), ("V", 0.2)]:
        assert abs(np.sum(labels == kind) - fraction * labels.size) <= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ectopic_beats_avoid_the_edges_and_each_other(seed):
    labels = np.array(synthetic_ecg(60, ectopic={"S": 0.25, "V": 0.25}, seed=seed).labels)
    assert list(labels[:2]) == ["N", "N"] and labels[-1] == "N"
    ectopic = labels != "N"
    assert not np.any(ectopic[1:] & ectopic[:-1])
    assert np.sum(ectopic) >= 0.4 * labels.size  # the cap of one in two is nearly reached


def test_v_beats_are_premature_and_followed_by_a_compensatory_pause():
    ecg = synthetic_ecg(300, fs=360, ectopic={"V": 0.1}, seed=3)
    rr, normal = rr_seconds(ecg), median_normal_rr(ecg)
    v_beats = np.flatnonzero(np.array(ecg.labels) == "V")
    assert v_beats.size >= 25
    before, after = rr[v_beats - 1], rr[v_beats]
    assert np.all(before < 0.85 * normal)
    assert np.all(np.abs((before + after) / (2 * normal) - 1) < 0.1)


def test_s_beats_are_premature_and_the_pause_is_not_compensatory():
    ecg = synthetic_ecg(300, fs=360, ectopic={"S": 0.1}, seed=3)
    rr, normal = rr_seconds(ecg), median_normal_rr(ecg)
    s_beats = np.flatnonzero(np.array(ecg.labels) == "S")
    assert s_beats.size >= 25
    before, after = rr[s_beats - 1], rr[s_beats]
    assert np.all(before < 0.85 * normal)
    assert np.all((before + after) < 1.85 * normal)


@pytest.mark.parametrize("fs", [128, 360])
def test_v_complexes_are_wider_than_normal_ones(fs):
    ecg = synthetic_ecg(60, fs=fs, noise_mv=0.0, ectopic={"S": 0.1, "V": 0.15}, seed=4)
    inner = slice(1, -1)  # the first and last complex may lack the 150 ms either side
    widths, labels = qrs_widths(ecg, ecg.r_peaks[inner]), np.array(ecg.labels)[inner]
    assert labels.tolist().count("V") >= 5
    assert widths[labels == "V"].min() > 1.8 * widths[labels != "V"].max()


@pytest.mark.parametrize("fs", [128, 250, 360])
@pytest.mark.parametrize("seed", [0, 1])
def test_r_peaks_are_the_extremum_of_their_complex(fs, seed):
    ecg = synthetic_ecg(30, fs=fs, noise_mv=0.0, ectopic={"V": 0.2}, seed=seed)
    x, r_peaks, labels = ecg.signal, ecg.r_peaks, ecg.labels
    near, around = round(0.06 * ecg.fs), round(0.2 * ecg.fs)
    for i in range(1, len(r_peaks) - 1):
        r = r_peaks[i]
        deflection = x[r] - np.median(x[r - around : r + around + 1])
        assert (np.sign(deflection) * x[r - near : r + near + 1]).max() == np.sign(deflection) * x[r]
        if labels[i] == "V":
            assert abs(deflection) >= 1.2
        elif labels[i - 1] == "N":
            isoelectric = x[r - round(0.4 * (r - r_peaks[i - 1]))]  # T-P segment before the beat
            assert 1.0 <= x[r] - isoelectric <= 1.5


def test_v_polarity_is_drawn_per_record():
    polarities = set()
    for seed in range(6):
        ecg = synthetic_ecg(20, noise_mv=0.0, ectopic={"V": 0.2}, seed=seed)
        v_peaks = ecg.r_peaks[np.array(ecg.labels) == "V"]
        signs = set(np.sign(ecg.signal[v_peaks]))
        assert len(signs) == 1  # one ectopic focus per record
        polarities |= signs
    assert polarities == {-1.0, 1.0}


def test_noise_is_added_with_the_requested_std():
    clean = synthetic_ecg(60, noise_mv=0.0, seed=5).signal
    noisy = synthetic_ecg(60, noise_mv=0.05, seed=5).signal
    assert np.std(noisy - clean) == pytest.approx(0.05, rel=0.03)


def test_baseline_wanders_at_the_respiratory_frequency():
    ecg = synthetic_ecg(120, fs=250, heart_rate_std=0.0, noise_mv=0.0, seed=6)
    sos = butter(2, 0.5, fs=ecg.fs, output="sos")
    wander = sosfiltfilt(sos, ecg.signal)[ecg.signal.size // 10 : -ecg.signal.size // 10]
    assert 0.05 <= np.ptp(wander) / 2 <= 0.15
    spectrum = np.abs(np.fft.rfft(wander - wander.mean()))
    freqs = np.fft.rfftfreq(wander.size, 1 / ecg.fs)
    assert freqs[np.argmax(spectrum)] == pytest.approx(0.25, abs=0.02)


def test_atrial_fibrillation_episodes_have_irregular_rr_no_p_waves_and_fibrillatory_waves():
    ecg = synthetic_ecg(180, fs=360, heart_rate=75, noise_mv=0.0, seed=3, af_episodes=((60, 120),))
    beats = ecg.r_peaks / ecg.fs
    rr, in_af = np.diff(beats), ecg.af_at(beats[1:]) & ecg.af_at(beats[:-1])
    sinus = ~ecg.af_at(beats[1:]) & ~ecg.af_at(beats[:-1])
    assert np.std(rr[in_af]) / np.mean(rr[in_af]) > 0.12 > 0.04 > np.std(rr[sinus]) / np.mean(rr[sinus])
    assert set(ecg.labels) == {"N"}  # AF beats are conducted normally
    # the P wave (its peak about 0.15 s before R at 75 bpm) rises before sinus beats only; f waves put 5-7 Hz power
    # into the baseline of AF
    filtered = sosfiltfilt(butter(2, [0.5, 40.0], btype="band", fs=ecg.fs, output="sos"), ecg.signal)
    p_at = round(0.15 * ecg.fs)

    def p_height(r):
        return filtered[r - p_at - 5: r - p_at + 5].mean() - filtered[r - round(0.45 * ecg.fs)]
    af_beats = ecg.af_at(beats) & ecg.af_at(beats - 1.0)
    sinus_beats = ~ecg.af_at(beats) & (beats > 2) & (beats < beats[-1] - 1)
    assert np.median([p_height(r) for r in ecg.r_peaks[sinus_beats]]) > 0.15 > np.median(
        [p_height(r) for r in ecg.r_peaks[af_beats]])
    f_band = sosfiltfilt(butter(2, [5.0, 7.0], btype="band", fs=ecg.fs, output="sos"), ecg.signal)
    quiet = lambda r: f_band[r - round(0.45 * ecg.fs): r - round(0.3 * ecg.fs)].std()  # noqa: E731
    assert np.median([quiet(r) for r in ecg.r_peaks[af_beats]]) > 1.5 * np.median(
        [quiet(r) for r in ecg.r_peaks[sinus_beats]])


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"duration_s": 0}, ["duration_s", "positive", "0"]),
        ({"duration_s": -5.0}, ["duration_s", "positive", "-5.0"]),
        ({"fs": 0}, ["fs must be at least 50 Hz", "got 0"]),
        ({"fs": 40.0}, ["fs must be at least 50 Hz", "got 40.0"]),
        ({"fs": float("nan")}, ["fs must be at least 50 Hz", "nan"]),
        ({"heart_rate": 25.0}, ["heart_rate must be in [30, 220] bpm", "got 25.0"]),
        ({"heart_rate": 250.0}, ["heart_rate must be in [30, 220] bpm", "got 250.0"]),
        ({"heart_rate_std": -1.0}, ["heart_rate_std must be in [0, 7] bpm", "got -1.0"]),
        ({"heart_rate_std": 8.0}, ["heart_rate_std must be in [0, 7] bpm", "got 8.0"]),
        ({"noise_mv": -0.1}, ["noise_mv must be >= 0 mV", "got -0.1"]),
        ({"ectopic": {"A": 0.1}}, ["ectopic keys must be 'S' or 'V'", "'A'"]),
        ({"ectopic": {"V": 0.6}}, ["ectopic['V']", "[0, 0.5]", "got 0.6"]),
        ({"ectopic": {"S": -0.1}}, ["ectopic['S']", "[0, 0.5]", "got -0.1"]),
        ({"ectopic": {"S": 0.3, "V": 0.3}}, ["sum to at most 0.5", "got 0.6"]),
        ({"duration_s": 0.001, "fs": 100}, ["duration_s=0.001", "no sample", "1/fs = 0.01 s"]),
        ({"af_episodes": ((30, 20),)}, ["0 <= start < end <= duration_s (60 s)", "got (30, 20)"]),
        ({"af_episodes": ((10, 70),)}, ["0 <= start < end <= duration_s (60 s)", "got (10, 70)"]),
        ({"af_episodes": (5,)}, ["(start, end) pairs in seconds", "got 5"]),
    ],
)
def test_bad_inputs_raise_a_clear_error(kwargs, fragments):
    with pytest.raises(HeartSightError) as error:
        synthetic_ecg(**kwargs)
    for fragment in fragments:
        assert fragment in str(error.value)
