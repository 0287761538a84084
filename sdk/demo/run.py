"""`heartsight demo`: the whole product on one recording, from signal to the clinician's review page.

It reads a DS2 record of MIT-BIH when the data directory holds it (a patient the beat model never saw),
else generates a synthetic ECG with ectopic beats. With the best zoo model's int8 export (the WCAM-compressed
one when present; the integers of its C library, run by onnxruntime) it runs the device path, compares the beats with the reference, then streams the recording
through the device runtime faster than real time, publishes the explained alerts to an embedded broker
(Mosquitto on a free port when installed, else the in-process Python broker), stores them with a clinician
listener and writes the review pages.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from models.registry import ZOO_DIR
from sdk.data import mitdb
from sdk.data.records import Recording, data_dir
from sdk.data.rpeak import match_peaks
from sdk.data.synthetic import synthetic_ecg
from sdk.device.analyze import analyze
from sdk.device.backends import Runner, make_runner
from sdk.errors import HeartSightError
from sdk.training.metrics import classification_report
from sdk.training.tables import format_class_table

DEMO_MODELS = ("ecg_beat_wcam", "ecg_beat")  # the first one in the zoo is used
# The int8 export as the firmware runs it: the ONNX graph gives the C library's integers bit for bit and needs no
# compiler on the machine that runs the demo.
DEMO_BACKEND = "onnxruntime"
DEMO_DEVICE, DEMO_SITE = "demo-patch", "demo"
DEMO_RECORD = "233"  # DS2: many ventricular and some supraventricular ectopic beats
DEMO_SECONDS = 300
MATCH_TOLERANCE_S = 0.15


def demo_recording(data_root) -> tuple[Recording, np.ndarray, np.ndarray, str]:
    """The recording, its reference R peaks and AAMI labels (-1 unscored), and where it came from."""
    try:
        record = mitdb.load_record(DEMO_RECORD, data_root)
    except HeartSightError:  # no data directory: the synthetic default
        synthetic = synthetic_ecg(duration_s=DEMO_SECONDS, fs=360.0, heart_rate=72.0,
                                  ectopic={"S": 0.05, "V": 0.08}, seed=7)
        labels = np.array([mitdb.AAMI_CLASSES.index(label) for label in synthetic.labels])
        recording = Recording("synthetic", synthetic.fs, synthetic.signal[:, None], ("ecg",))
        return recording, synthetic.r_peaks, labels, "synthetic ECG (McSharry dynamical model) with ectopic beats"
    n = int(DEMO_SECONDS * record.fs)
    keep = record.beat_samples < n
    recording = Recording(f"mitdb-{DEMO_RECORD}", record.fs, record.ecg[:n, None], ("MLII",))
    source = f"MIT-BIH record {DEMO_RECORD} (DS2, unseen in training), first {DEMO_SECONDS} s, from {data_dir(data_root)}"
    return recording, record.beat_samples[keep], record.aami_labels[keep], source


EMBEDDED_BROKERS = ("auto", "mosquitto", "python")


def run_demo(data_root=None, out_dir="out/demo", broker_url: str | None = None, embedded_broker: str = "auto") -> dict:
    """The main job; alerts go through broker_url, else through the embedded broker chosen (auto: Mosquitto
    when it is installed, else the in-process Python broker)."""
    if embedded_broker not in EMBEDDED_BROKERS:
        raise HeartSightError(f"unknown embedded broker {embedded_broker!r}; choose {', '.join(EMBEDDED_BROKERS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recording, reference_peaks, reference_labels, source = demo_recording(data_root)
    runner = make_runner(next(name for name in DEMO_MODELS if (ZOO_DIR / name / "card.json").exists()), DEMO_BACKEND)
    started = time.perf_counter()
    result = analyze(recording, runner)
    seconds = time.perf_counter() - started
    detected = np.array([b["sample"] for b in result["beats"]], dtype=np.int64)
    tolerance = int(MATCH_TOLERANCE_S * recording.fs)
    tp, fn, fp = match_peaks(reference_peaks, detected, tolerance)
    pairs = _nearest_pairs(reference_peaks, detected, tolerance)
    scored = [(reference_labels[i], runner.spec.outputs.index(result["beats"][j]["label"]))
              for i, j in pairs if reference_labels[i] >= 0]
    truth, predicted = (np.array(v) for v in zip(*scored)) if scored else (np.zeros(0, int), np.zeros(0, int))
    report = {"model": runner.identity["name"], "backend": runner.backend, "split": "demo",
              **classification_report(truth, predicted, runner.spec.outputs)}
    summary = {
        "source": source,
        "duration_s": recording.n_samples / recording.fs,
        "analysis_s": round(seconds, 2),
        "speed_x_real_time": round(recording.n_samples / recording.fs / seconds, 1),
        "r_peaks": {"reference": int(len(reference_peaks)), "detected": int(len(detected)),
                    "se": round(tp / max(tp + fn, 1), 4), "ppv": round(tp / max(tp + fp, 1), 4)},
        "labels_detected": dict(Counter(b["label"] for b in result["beats"])),
        "beat_classification": report,
    }
    summary["streaming"] = _stream_to_clinician(recording, runner, out, broker_url, embedded_broker)
    (out / "analysis.json").write_text(json.dumps(result) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot_strip(recording, result, reference_peaks, reference_labels, out / "strip.png")
    print(f"source: {source}")
    print(f"analysed {summary['duration_s']:.0f} s of ECG in {seconds:.1f} s ({summary['speed_x_real_time']}x real time)")
    print(f"R peaks: {len(detected)} detected, {len(reference_peaks)} in the reference "
          f"(Se {summary['r_peaks']['se']:.4f}, +P {summary['r_peaks']['ppv']:.4f})")
    print(format_class_table(report))
    streaming = summary["streaming"]
    print(f"streamed through the device runtime: {streaming['beats']} beats, {streaming['alerts']} explained alerts "
          f"published via {streaming['broker']}, {streaming['stored']} stored by the clinician listener; "
          f"{streaming['awaiting_clinic'] + streaming['awaiting_broker']} still in the device's outbox awaiting "
          "acknowledgement")
    print(f"clinician review: {streaming['review']}")
    print(f"wrote {out / 'analysis.json'}, {out / 'summary.json'} and {out / 'strip.png'}")
    return summary


def _stream_to_clinician(recording: Recording, runner: Runner, out: Path, broker_url: str | None,
                         embedded_broker: str) -> dict:
    """Device runtime -> MQTT -> clinician store -> review pages, through broker_url or an embedded broker."""
    import tempfile

    from sdk.demo.broker import LocalBroker, mosquitto_binary
    from sdk.demo.python_broker import PythonBroker

    if broker_url is not None:
        return _deliver(recording, runner, out, broker_url, "given with --broker")
    if embedded_broker == "python" or (embedded_broker == "auto" and mosquitto_binary() is None):
        with PythonBroker() as broker:
            return _deliver(recording, runner, out, broker.url, "python broker (embedded, in-process)")
    with tempfile.TemporaryDirectory() as work, LocalBroker(Path(work)) as broker:
        return _deliver(recording, runner, out, broker.url, "mosquitto (embedded, free local port)")


def _deliver(recording: Recording, runner: Runner, out: Path, broker_url: str, broker_note: str) -> dict:
    from sdk.clinician.listener import Listener
    from sdk.clinician.review import write_review
    from sdk.clinician.store import Store
    from sdk.stream.mqtt import BrokerConfig
    from sdk.stream.publisher import Publisher
    from sdk.stream.replay import stream_recording

    for stale in ("alerts.sqlite", "outbox.sqlite"):
        (out / stale).unlink(missing_ok=True)
    broker = BrokerConfig(broker_url)
    store = Store(str(out / "alerts.sqlite"))
    listener = Listener(broker, store)
    listener.start()
    with Publisher(broker, DEMO_DEVICE, DEMO_SITE, out / "outbox.sqlite") as publisher:
        streamed = stream_recording(recording, publisher, runner)  # returns once the listener acknowledged every alert
    counts = listener.stop()
    pages = write_review(store, out / "review")
    store.close()
    return {"model": runner.identity["name"], "backend": runner.backend, "int8_sha256": runner.identity["sha256"],
            "broker": f"{broker_url} ({broker_note})", "beats": streamed["beats"],
            "alerts": streamed["alerts"], "awaiting_broker": streamed["awaiting_broker"],
            "awaiting_clinic": streamed["awaiting_clinic"], "stored": counts["stored"],
            "dead_letters": counts["dead_letters"], "review": str(pages[0])}


def _nearest_pairs(reference: np.ndarray, detected: np.ndarray, tolerance: int) -> list[tuple[int, int]]:
    """(reference index, detected index) for each reference beat whose nearest detection is within tolerance."""
    if len(detected) == 0:
        return []
    right = np.clip(np.searchsorted(detected, reference), 0, len(detected) - 1)
    left = np.clip(right - 1, 0, len(detected) - 1)
    nearest = np.where(np.abs(detected[left] - reference) <= np.abs(detected[right] - reference), left, right)
    return [(i, int(j)) for i, j in enumerate(nearest) if abs(int(detected[j]) - int(reference[i])) <= tolerance]


def _plot_strip(recording: Recording, result: dict, reference_peaks, reference_labels, path: Path) -> None:
    """20 s around the first detected ectopic beat, with model labels above and reference labels below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = recording.fs
    ectopic = [b for b in result["beats"] if b["label"] != "N"]
    centre = ectopic[0]["sample"] if ectopic else recording.n_samples // 2
    lo, hi = max(0, int(centre - 10 * fs)), min(recording.n_samples, int(centre + 10 * fs))
    signal = recording.signal[:, 0]
    fig, ax = plt.subplots(figsize=(14, 3.5))
    ax.plot(np.arange(lo, hi) / fs, signal[lo:hi], color="black", linewidth=0.8)
    top, bottom = signal[lo:hi].max(), signal[lo:hi].min()
    for beat in result["beats"]:
        if lo <= beat["sample"] < hi:
            color = "tab:red" if beat["label"] != "N" else "tab:green"
            ax.text(beat["sample"] / fs, top + 0.1, beat["label"], color=color, ha="center", fontsize=9)
    for sample, label in zip(reference_peaks, reference_labels):
        if lo <= sample < hi and label >= 0:
            ax.text(sample / fs, bottom - 0.25, mitdb.AAMI_CLASSES[label], color="tab:blue", ha="center", fontsize=9)
    ax.set_ylim(bottom - 0.4, top + 0.3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ECG (mV)")
    ax.set_title(f"{recording.name}: model labels (top) and reference labels (bottom, blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
