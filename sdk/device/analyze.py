"""Analysis of a whole recording along the device path: resample, own R-peak detector, preprocessing, model."""

from __future__ import annotations

import numpy as np
import torch

from models.registry import ZooModel, load_model
from sdk.data import preprocess
from sdk.data.records import Recording, check_signal, resample, resampled_index
from sdk.device.rpeak import detect_r_peaks
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap
from sdk.training.train import predict

WRIST_CHANNELS = ("wrist_ppg", "wrist_accel_lownoise_x", "wrist_accel_lownoise_y", "wrist_accel_lownoise_z")


def analyze(recording: Recording, model: str | ZooModel = "ecg_beat", channel: int | None = None,
            explain: bool = False) -> dict:
    """One JSON-ready result: beats (beat models), windows (rhythm and heart-rate models), hr_bpm (heart-rate models).

    explain=True adds to every beat or window its `window_start` (sample index in the input) and `trace`,
    the class activation map of the predicted class (or of the heart-rate output) over the model's window,
    at the input's sampling rate.
    """
    zoo = load_model(model) if isinstance(model, str) else model
    spec = zoo.spec
    preprocess.check_input_rate(recording.fs, spec.task)
    signal = select_channels(recording, spec.task, channel)
    min_samples = int(np.ceil(spec.window / spec.fs * recording.fs))
    check_signal(signal, recording.name, min_samples)
    at_model_rate = resample(signal, recording.fs, spec.fs)
    result = {"fs": recording.fs, "model": spec.name, "beats": [], "windows": [], "hr_bpm": []}
    if spec.task == "hr":
        starts = np.arange(0, len(at_model_rate) - spec.window + 1, spec.hop)
        inputs = preprocess.ppg_windows(at_model_rate, starts, spec.window)
        hr = predict(zoo.model, inputs)[:, 0]
        result["windows"] = [_window(s, spec, {"hr_bpm": round(float(v), 1)}) for s, v in zip(starts, hr)]
        result["hr_bpm"] = [round(float(v), 1) for v in hr]
        if explain:
            _add_traces(result["windows"], zoo, inputs, starts, recording.fs, np.zeros(len(starts), dtype=np.int64))
        return result
    r_peaks = detect_r_peaks(at_model_rate, spec.fs)
    tracks = preprocess.ecg_tracks(at_model_rate, r_peaks, spec.fs)
    if spec.task == "beat":
        if len(r_peaks) == 0:
            return result
        inputs = preprocess.beat_windows(tracks, np.arange(len(r_peaks)), spec.window)
        probabilities = _softmax(predict(zoo.model, inputs))
        samples = np.clip(resampled_index(r_peaks, spec.fs, recording.fs), 0, recording.n_samples - 1)
        result["beats"] = [
            {"sample": int(s), "time_s": round(s / recording.fs, 3), "label": spec.outputs[int(p.argmax())],
             "p": round(float(p.max()), 4)}
            for s, p in zip(samples, probabilities)
        ]
        if explain:
            _add_traces(result["beats"], zoo, inputs, r_peaks - spec.window // 2, recording.fs, probabilities.argmax(1))
    else:
        starts = np.arange(0, len(at_model_rate) - spec.window + 1, spec.hop)
        inputs = preprocess.rhythm_windows(tracks, starts, spec.window)
        probabilities = _softmax(predict(zoo.model, inputs))
        result["windows"] = [
            _window(s, spec, {"label": spec.outputs[int(p.argmax())], "p": round(float(p.max()), 4)})
            for s, p in zip(starts, probabilities)
        ]
        if explain:
            _add_traces(result["windows"], zoo, inputs, starts, recording.fs, probabilities.argmax(1))
    return result


def _add_traces(items: list[dict], zoo: ZooModel, inputs: np.ndarray, starts_at_model_rate: np.ndarray,
                fs_input: float, targets: np.ndarray, batch_size: int = 512) -> None:
    """Attach window_start and the class activation map, resampled from the model's rate to the input's."""
    spec = zoo.spec
    explainer = ClassActivationMap(zoo.model)
    for first in range(0, len(items), batch_size):
        chunk = slice(first, first + batch_size)
        traces = explainer.attribute(torch.from_numpy(inputs[chunk]), torch.from_numpy(targets[chunk])).numpy()
        for item, start, trace in zip(items[chunk], starts_at_model_rate[chunk], traces):
            item["window_start"] = int(round(start * fs_input / spec.fs))
            item["trace"] = np.round(trace_at_input_rate(trace, spec, fs_input), 5).tolist()


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
