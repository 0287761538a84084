"""Analysis of a whole recording along the device path: resample, own R-peak detector, preprocessing, model."""

from __future__ import annotations

import numpy as np
import torch

from sdk.data import preprocess
from sdk.data.records import Recording, check_signal, resample, resampled_index
from sdk.data.rpeak import detect_r_peaks
from sdk.device.backends import ModelRef, Runner, make_runner
from sdk.errors import HeartSightError

WRIST_CHANNELS = ("wrist_ppg", "wrist_accel_lownoise_x", "wrist_accel_lownoise_y", "wrist_accel_lownoise_z")


def analyze(recording: Recording, model: ModelRef | Runner = "ecg_beat", channel: int | None = None,
            explain: bool = False, backend: str | None = None) -> dict:
    """One JSON-ready result: beats (beat models), windows (rhythm and heart-rate models), hr_bpm (heart-rate models).

    model runs on backend as sdk.device.backends describes (or pass a Runner). explain=True adds to every beat or
    window its `window_start` (sample index in the input) and `trace`, the class activation map of the predicted
    class (or of the heart-rate output) over the model's window, at the input's sampling rate.
    """
    runner = model if isinstance(model, Runner) else make_runner(model, backend)
    spec = runner.spec
    preprocess.check_input_rate(recording.fs, spec.task)
    signal = select_channels(recording, spec.task, channel)
    min_samples = int(np.ceil(spec.window / spec.fs * recording.fs))
    check_signal(signal, recording.name, min_samples)
    at_model_rate = resample(signal, recording.fs, spec.fs)
    result = {"fs": recording.fs, "model": spec.name, "backend": runner.backend, "beats": [], "windows": [], "hr_bpm": []}
    if spec.task == "beat":
        r_peaks = detect_r_peaks(at_model_rate, spec.fs)
        if len(r_peaks) == 0:
            return result
        inputs = preprocess.beat_windows(preprocess.ecg_tracks(at_model_rate, r_peaks, spec.fs), np.arange(len(r_peaks)),
                                         spec.window)
        starts = r_peaks - spec.window // 2
    else:
        starts = np.arange(0, len(at_model_rate) - spec.window + 1, spec.hop)
        if spec.task == "hr":
            inputs = preprocess.ppg_windows(at_model_rate, starts, spec.window)
        else:
            tracks = preprocess.ecg_tracks(at_model_rate, detect_r_peaks(at_model_rate, spec.fs), spec.fs)
            inputs = preprocess.rhythm_windows(tracks, starts, spec.window)
    outputs, traces = runner.explain(inputs) if explain else (runner(inputs), None)
    if spec.task == "hr":
        result["hr_bpm"] = [round(float(v), 1) for v in outputs[:, 0]]
        items = result["windows"] = [_window(s, spec, {"hr_bpm": hr}) for s, hr in zip(starts, result["hr_bpm"])]
    else:
        probabilities = _softmax(outputs)
        labels = [spec.outputs[int(k)] for k in probabilities.argmax(1)]
        confidence = [round(float(p), 4) for p in probabilities.max(1)]
        if spec.task == "beat":
            samples = np.clip(resampled_index(r_peaks, spec.fs, recording.fs), 0, recording.n_samples - 1)
            items = result["beats"] = [{"sample": int(s), "time_s": round(s / recording.fs, 3), "label": label, "p": p}
                                       for s, label, p in zip(samples, labels, confidence)]
        else:
            items = result["windows"] = [_window(s, spec, {"label": label, "p": p})
                                         for s, label, p in zip(starts, labels, confidence)]
    if explain:
        for item, start, trace in zip(items, starts, traces):
            item["window_start"] = int(round(start * recording.fs / spec.fs))
            item["trace"] = np.round(trace_at_input_rate(trace, spec, recording.fs), 5).tolist()
    return result


def trace_at_input_rate(trace: np.ndarray, spec, fs_input: float) -> np.ndarray:
    """A model-rate trace over the model's window, linearly resampled to the input's rate (same time span)."""
    length = int(round(spec.window * fs_input / spec.fs))
    positions = np.arange(length) * spec.fs / fs_input  # input samples on the model's time axis
    return np.interp(positions, np.arange(spec.window), trace)


def _window(start: int, spec, fields: dict) -> dict:
    return {"start_s": round(start / spec.fs, 3), "end_s": round((start + spec.window) / spec.fs, 3), **fields}


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def select_channels(recording: Recording, task: str, channel: int | None) -> np.ndarray:
    """ECG models read one lead (MLII when the header names it); PPG models read PPG + accelerometer x, y, z.

    A PPG-only input is accepted: its accelerometer channels are taken as zero (a still wrist).
    """
    if task != "hr":
        if channel is None:
            channel = recording.channels.index("MLII") if "MLII" in recording.channels else 0
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
