"""Analysis of a whole recording along the device path: resample, own R-peak detector, preprocessing, model."""

from __future__ import annotations

import numpy as np
import torch

from models.heart_rate import rate_evidence, tracked_heart_rates
from models.rr_af import ectopic_beats, with_evidence
from sdk.data import preprocess
from sdk.data.records import Recording, check_signal, resample, resample_factors, resampled_index
from sdk.data.rpeak import detect_r_peaks
from sdk.device.backends import ModelRef, Runner, make_runner
from sdk.device.quality import QualityGate
from sdk.errors import HeartSightError

WRIST_CHANNELS = ("wrist_ppg", "wrist_accel_lownoise_x", "wrist_accel_lownoise_y", "wrist_accel_lownoise_z")


def analyze(recording: Recording, model: ModelRef | Runner = "ecg_beat", channel: int | None = None,
            explain: bool = False, backend: str | None = None) -> dict:
    """One JSON-ready result: beats (beat models), windows (rhythm and heart-rate models), hr_bpm (heart-rate models).

    A rhythm window of a model with RR evidence also gives `rhythm_evidence`: what the irregularity of the last
    beats added to its AF logit (models.rr_af.RhythmEvidence; positive is towards AF, 0 when too few beats).

    A heart-rate window's rate is the one models.heart_rate.HeartRateTracker follows from the model's scores through
    the recording's windows, as the device reports it.

    model runs on backend as sdk.device.backends describes (or pass a Runner). explain=True adds to every beat or
    window its `window_start` (sample index in the input) and `trace` over the model's window, at the input's
    sampling rate: the class activation map of the predicted class (of AF for rhythm models); for heart-rate models,
    where the PPG beats at the rate read (models.heart_rate.rate_evidence; the model's own map is over heart rates).
    """
    runner = model if isinstance(model, Runner) else make_runner(model, backend)
    spec = runner.spec
    preprocess.check_input_rate(recording.fs, spec.task)
    resample_factors(recording.fs, spec.fs)  # a rate that cannot be resampled exactly is refused before any work
    signal = select_channels(recording, spec.task, channel)
    shortest_s = preprocess.MIN_RHYTHM_DECISION_S if spec.task == "rhythm" else spec.window / spec.fs
    min_samples = int(np.ceil(shortest_s * recording.fs))
    check_signal(signal, recording.name, min_samples)
    at_model_rate = resample(signal, recording.fs, spec.fs)
    problems = _gate(signal, recording.fs, spec.task)
    result = {"fs": recording.fs, "model": spec.name, "backend": runner.backend, "beats": [], "windows": [], "hr_bpm": [],
              "quality": problems["events"]}
    if spec.task == "beat":
        r_peaks = detect_r_peaks(at_model_rate, spec.fs)
        if len(r_peaks) == 0:
            return result
        inputs = preprocess.beat_windows(preprocess.ecg_tracks(at_model_rate, r_peaks, spec.fs), np.arange(len(r_peaks)),
                                         spec.window)
        starts = r_peaks - spec.window // 2
    else:
        starts = preprocess.window_starts(len(at_model_rate), spec.window, spec.hop, spec.task, spec.fs)
        if spec.task == "hr":
            band_passed = preprocess.band_passed_ppg_windows(at_model_rate, starts, spec.window)
            inputs = preprocess.ppg_spectra(band_passed)
        else:
            r_peaks = detect_r_peaks(at_model_rate, spec.fs)
            tracks = preprocess.ecg_tracks(at_model_rate, r_peaks, spec.fs)
            inputs = preprocess.rhythm_windows(tracks, starts, spec.window)
    gated = [problems["gate"].window_problem(int(s), spec.window, spec.fs)
             or (preprocess.rhythm_problem(r_peaks, int(s), spec.window) if spec.task == "rhythm" else None)
             for s in starts]
    good = np.array([p is None for p in gated], bool)
    outputs, traces = (runner.explain(inputs[good]) if explain or spec.task == "hr" else (runner(inputs[good]), None)) \
        if good.any() else (np.zeros((0, len(spec.outputs)), np.float32), np.zeros((0, spec.input_length), np.float32))
    if spec.task == "hr":
        scores = np.zeros((len(starts), spec.input_length), np.float32)
        scores[good] = traces
        rates = tracked_heart_rates(scores, good)
        traces = [rate_evidence(ppg, rate, spec.fs) for ppg, rate in zip(band_passed[good, 0], rates[good])]
    evidence = None
    if spec.task == "rhythm" and runner.rhythm_evidence is not None:  # from every beat up to each window's end
        beat_runner = runner.beat_runner
        ectopic = None if beat_runner is None else ectopic_beats(beat_runner, tracks, beat_runner.spec)
        evidence = runner.rhythm_evidence.of_windows(r_peaks / spec.fs, (starts[good] + spec.window) / spec.fs, ectopic)
        outputs = with_evidence(outputs, evidence)
    rows = np.cumsum(good) - 1  # item i's row in outputs when good[i]
    items = []
    for i, start in enumerate(starts):
        if spec.task == "beat":
            sample = int(np.clip(resampled_index(start + spec.window // 2, spec.fs, recording.fs), 0,
                                 recording.n_samples - 1))
            item = {"sample": sample, "time_s": round(sample / recording.fs, 3)}
        else:
            item = _window(start, spec, {})
            padding = start + spec.window - len(at_model_rate)
            if padding > 0:  # the recording's last, shorter stretch: zeros after its end
                item["padded_s"] = round(padding / spec.fs, 3)
        if not good[i]:  # the signal under this window is unreadable: no diagnosis, say why
            item.update({"hr_bpm": None} if spec.task == "hr" else {"label": None, "p": None})
            item["quality"] = gated[i]
        elif spec.task == "hr":
            item["hr_bpm"] = round(float(rates[i]), 1)
        else:
            p = _softmax(outputs[rows[i]: rows[i] + 1])[0]
            item.update({"label": spec.outputs[int(p.argmax())], "p": round(float(p.max()), 4)})
            if evidence is not None:
                item["rhythm_evidence"] = round(float(evidence[rows[i]]), 3)
        if explain:
            item["window_start"] = int(round(start * recording.fs / spec.fs))
            item["trace"] = (None if not good[i] else
                             np.round(trace_at_input_rate(traces[rows[i]], spec, recording.fs), 5).tolist())
        items.append(item)
    result["beats" if spec.task == "beat" else "windows"] = items
    if spec.task == "hr":
        result["hr_bpm"] = [item["hr_bpm"] for item in items]
    return result


def trace_at_input_rate(trace: np.ndarray, spec, fs_input: float) -> np.ndarray:
    """A model-rate trace over the model's window, linearly interpolated to the input's rate (same time span).

    Computed in float32 with each input sample's position on the model's axis as an exact fraction (step j, remainder
    r of the resampling factors), so that a single-precision FPU gives the same bits (hs_monitor.c does this in C):
    value = (trace[j + 1] - trace[j]) * (r / down) + trace[j], every operation rounded to float32."""
    up, down = resample_factors(fs_input, spec.fs)
    length = int(round(spec.window * fs_input / spec.fs))
    steps = np.arange(length, dtype=np.int64) * up
    inside = steps // down < spec.window - 1  # past the last model sample, the trace holds its last value
    left = np.where(inside, steps // down, spec.window - 1)
    fraction = np.where(inside, steps % down, 0).astype(np.float32) / np.float32(down)
    y = np.asarray(trace, np.float32)
    start = y[left]
    return (y[np.where(inside, left + 1, left)] - start) * fraction + start


def _gate(signal: np.ndarray, fs: float, task: str) -> dict:
    """The device's signal-quality gate over the whole recording: every problem, once, with its end."""
    gate = QualityGate(fs, "ppg" if task == "hr" else "ecg")
    first = signal if signal.ndim == 1 else signal[:, 0]  # the ECG lead, or the PPG of PPG + accelerometer
    closed = [e for e in gate.process(first) + gate.flush() if e.end is not None]
    return {"gate": gate, "events": [{"problem": e.kind, "start_s": round(e.start / fs, 3), "end_s": round(e.end / fs, 3)}
                                     for e in closed]}


def _window(start: int, spec, fields: dict) -> dict:
    return {"start_s": round(start / spec.fs, 3), "end_s": round((start + spec.window) / spec.fs, 3), **fields}


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def select_channels(recording: Recording, task: str, channel: int | None) -> np.ndarray:
    """ECG models read one lead (MLII when the header names it, else lead II, else the first channel); PPG models
    read PPG + accelerometer x, y, z.

    A PPG-only input is accepted: its accelerometer channels are taken as zero (a still wrist).
    """
    if task != "hr":
        if channel is None:
            named = [lead for lead in ("MLII", "II") if lead in recording.channels]
            channel = recording.channels.index(named[0]) if named else 0
        return recording.channel(channel)
    if channel is None and all(name in recording.channels for name in WRIST_CHANNELS):
        return np.stack([recording.channel(name) for name in WRIST_CHANNELS], axis=1)
    first = 0 if channel is None else channel
    recording.channel(first)  # range check with a clear message
    available = recording.signal.shape[1] - first
    if available >= 4:
        return recording.signal[:, first: first + 4]
    if available == 1:
        return np.concatenate([recording.signal[:, first: first + 1], np.zeros((recording.n_samples, 3), np.float32)], 1)
    raise HeartSightError(
        f"{recording.name}: ppg_hr reads PPG and accelerometer x, y, z as 4 consecutive channels from --channel "
        f"{first} (or PPG alone); {available} channel(s) are available from there"
    )
