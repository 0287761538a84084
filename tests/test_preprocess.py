import numpy as np
import torch

from models.architectures import GapCnn, parameter_count
from models.registry import REGISTRY, get_spec
from sdk.data import preprocess


def test_causal_filter_gives_the_same_output_whatever_the_chunking():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=3000).cumsum() + 5.0
    whole = preprocess.ecg_bandpass()(signal)
    streamed_filter = preprocess.ecg_bandpass()
    cuts = [0, 1, 38, 500, 1999, 3000]
    streamed = np.concatenate([streamed_filter(signal[a:b]) for a, b in zip(cuts, cuts[1:])])
    assert np.allclose(whole, streamed, atol=1e-5)


def test_bandpass_removes_dc_and_baseline_wander_but_keeps_qrs_band():
    fs = preprocess.ECG_FS
    t = np.arange(int(60 * fs)) / fs
    wander = 2.0 + np.sin(2 * np.pi * 0.05 * t)
    qrs_band = np.sin(2 * np.pi * 10 * t)
    out = preprocess.ecg_bandpass()(wander + qrs_band)[int(10 * fs):]
    assert abs(out.mean()) < 0.02
    assert 0.9 < out.std() / qrs_band.std() < 1.1


def test_rhythm_context_marks_a_premature_beat_and_its_pause():
    fs = preprocess.ECG_FS
    r_peaks = np.arange(20) * 100
    r_peaks[10] -= 40  # premature by 40 %, then a longer interval
    filtered = np.zeros(2200, dtype=np.float32)
    filtered[r_peaks] = 1.0
    context = preprocess.beat_context(filtered, r_peaks, fs)
    assert context.rr_relative[10] < -0.35
    assert context.rr_relative[11] > 0.3
    assert np.allclose(context.rr_relative[3:9], 0.0, atol=1e-6)
    assert np.allclose(context.amplitude_scale, 1.0)


def test_the_beat_context_built_beat_by_beat_while_forgetting_old_beats_equals_the_whole_recording():
    """The Monitor adds each beat as its R peak is confirmed and drops old ones; training runs beat_context over
    the recording. Forgetting must not change the context of the beats that follow."""
    rng = np.random.default_rng(0)
    r_peaks = np.cumsum(rng.integers(60, 160, 3 * preprocess.HISTORY_BEATS))  # the history window slides
    filtered = rng.normal(size=r_peaks[-1] + 50).astype(np.float32)
    whole = preprocess.beat_context(filtered, r_peaks)
    assert np.array_equal(whole.rr_change, np.abs(np.diff(whole.rr_relative, prepend=whole.rr_relative[:1])))
    builder, forgotten = preprocess.BeatContextBuilder(), 0
    for beat, (r, amplitude) in enumerate(zip(r_peaks, preprocess.r_amplitudes(filtered, r_peaks))):
        builder.add(int(r), amplitude)
        if beat % 50 == 49:
            builder.forget(40)
            forgotten += 40
    kept = builder.context()
    for name in ("r_peaks", "rr_relative", "rr_change", "amplitude_scale"):
        assert np.array_equal(getattr(kept, name), getattr(whole, name)[forgotten:]), name


def _beats(shapes: list[np.ndarray], rr: int, fs: float = preprocess.ECG_FS) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic ECG at the model rate: the given beat shapes, one every `rr` samples, and their R peaks."""
    r_peaks = rr * (np.arange(len(shapes)) + 1)
    ecg = np.zeros(r_peaks[-1] + 2 * rr)
    for r, shape in zip(r_peaks, shapes):
        ecg[r - len(shape) // 2: r - len(shape) // 2 + len(shape)] += shape
    return ecg, r_peaks


def test_the_template_difference_is_the_beat_minus_its_window_neighbours_of_normal_timing():
    t = np.linspace(-1, 1, 41)
    normal, ectopic = np.exp(-(t / 0.1) ** 2), -1.5 * np.exp(-(t / 0.3) ** 2)  # narrow QRS; wide, inverted
    ecg, r_peaks = _beats([normal] * 20 + [ectopic] + [normal] * 20, rr=110)
    windows = preprocess.beat_windows(preprocess.ecg_tracks(ecg, r_peaks), np.array([10, 20]), 768)
    before, after = (int(round(s * preprocess.ECG_FS)) for s in preprocess.TEMPLATE_SPAN_S)
    centre = slice(384 - before, 384 + after)
    normal_delta, ectopic_delta = windows[0, 3], windows[1, 3]
    assert np.all(windows[:, 3, :384 - before] == 0) and np.all(windows[:, 3, 384 + after:] == 0)
    assert np.abs(normal_delta).max() < 0.05 * np.abs(windows[0, 0, centre]).max()  # like its neighbours
    # the ectopic beat's difference is its own shape minus the normal template (the neighbours are all normal)
    neighbour = windows[1, 0, centre.start - 110: centre.stop - 110]
    assert np.allclose(ectopic_delta[centre], windows[1, 0, centre] - neighbour, atol=1e-5)


def test_premature_neighbours_are_left_out_of_the_template():
    """Ventricular bigeminy: every other beat is premature and ectopic. A normal beat's template must be made of
    the normal beats alone, or half the window's beats would pull it toward the ectopic shape."""
    t = np.linspace(-1, 1, 41)
    normal, ectopic = np.exp(-(t / 0.1) ** 2), -1.5 * np.exp(-(t / 0.3) ** 2)
    r_peaks = np.cumsum(np.tile([130, 70], 40))  # normal beats at even indices, premature ectopic at odd
    ecg = np.zeros(r_peaks[-1] + 200)
    for k, r in enumerate(r_peaks):
        ecg[r - 20: r + 21] += normal if k % 2 == 0 else ectopic
    tracks = preprocess.ecg_tracks(ecg, r_peaks)
    assert np.all(tracks.context.rr_relative[41::2] < preprocess.TEMPLATE_MIN_RR)
    normal_window, ectopic_window = preprocess.beat_windows(tracks, np.array([40, 41]), 768)
    before, after = (int(round(s * preprocess.ECG_FS)) for s in preprocess.TEMPLATE_SPAN_S)
    centre = slice(384 - before, 384 + after)
    assert np.abs(normal_window[3]).max() < 0.05 * np.abs(normal_window[0, centre]).max()
    assert np.abs(ectopic_window[3]).max() > 0.5 * np.abs(ectopic_window[0, centre]).max()


def test_beat_windows_centre_the_beat_and_carry_rhythm_bumps():
    fs = preprocess.ECG_FS
    ecg = np.zeros(4000)
    r_peaks = np.arange(100, 3900, 110)
    tracks = preprocess.ecg_tracks(ecg, r_peaks, fs)
    windows = preprocess.beat_windows(tracks, np.array([0, 10]), 768)
    assert windows.shape == (2, 4, 768)
    assert windows[0, 1].argmax() == 384  # centre marker
    assert np.all(windows[0, 0, :384 - 100 - 20] == 0)  # before the record: zero padding
    starts = np.array([0, 1280])
    rhythm = preprocess.rhythm_windows(tracks, starts, 1280)
    assert rhythm.shape == (2, 3, 1280)
    assert np.allclose(rhythm[:, 2], 0, atol=1e-6)  # a perfectly regular rhythm: no RR change anywhere


def _bpm_of_peak(spectrum: np.ndarray) -> float:
    return float(preprocess.HR_GRID_BPM[spectrum.argmax()])


def test_ppg_windows_are_spectra_over_the_heart_rate_grid_with_harmonics():
    fs = preprocess.PPG_FS
    t = np.arange(int(30 * fs)) / fs
    signals = np.stack([3 * np.sin(2 * np.pi * 1.5 * t), np.sin(2 * np.pi * 2 * t), np.zeros_like(t), np.zeros_like(t)], 1)
    spectra = preprocess.ppg_windows(signals, np.array([128, 256]), 256)
    assert spectra.shape == (2, len(preprocess.PPG_SPECTRUM_CHANNELS), len(preprocess.HR_GRID_BPM))
    channel = {name: spectra[0, i] for i, name in enumerate(preprocess.PPG_SPECTRUM_CHANNELS)}
    assert abs(_bpm_of_peak(channel["ppg_power"]) - 90) <= 1  # 1.5 Hz
    assert abs(_bpm_of_peak(channel["accel_x_power"]) - 120) <= 1 and abs(_bpm_of_peak(channel["accel_power"]) - 120) <= 1
    assert abs(_bpm_of_peak(channel["ppg_power_at_2f"]) - 45) <= 1  # the pulse seen from half its rate
    assert abs(_bpm_of_peak(channel["ppg_power_at_half_f"]) - 180) <= 1  # ... and from twice it
    assert np.allclose(np.exp(channel["ppg_power"]).mean(), 1 + preprocess.SPECTRUM_FLOOR, rtol=0.05)  # mean 1
    louder = preprocess.ppg_windows(signals * [10.0, 1, 1, 1], np.array([128, 256]), 256)
    assert np.allclose(louder, spectra, atol=1e-4)  # contact pressure (PPG gain) changes nothing


def test_zoo_architectures_are_small_gap_linear_cnns():
    for spec in REGISTRY.values():
        model = spec.build()
        assert parameter_count(model) < 50_000, spec.name
        assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == len(spec.outputs)
        x = torch.randn(2, len(spec.input_channels), spec.input_length)
        features = model.features(x)
        assert torch.allclose(model(x), model.head(features.mean(-1)))


def test_gap_head_is_the_mean_of_the_class_activation_map():
    """With GAP + linear, the logit is the time-average of head weights applied to the last feature maps."""
    model = GapCnn(2, (4, 8), 5, 3).eval()
    x = torch.randn(1, 2, 64)
    features = model.features(x)[0]
    cam = model.head.weight @ features  # (classes, time)
    assert torch.allclose(cam.mean(-1) + model.head.bias, model(x)[0], atol=1e-6)


def test_unknown_model_lists_the_known_ones():
    import pytest

    from sdk.errors import HeartSightError

    with pytest.raises(HeartSightError, match="ecg_beat, ecg_af, ppg_hr"):
        get_spec("resnet")
