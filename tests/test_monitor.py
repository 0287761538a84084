"""Device runtime: the streaming Monitor, its signal-quality gate and the alert policy."""

import math
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from conftest import DATA, ecg_with_quality_problems, needs_mitdb
from models.registry import ZooModel, get_spec, load_model
from models.rr_af import RhythmEvidence
from sdk.data import rr_features, synthetic
from sdk.data.records import Recording, read_database_record
from sdk.device import alerts
from sdk.device.alerts import Alert, AlertPolicy, Excerpt, Finding
from sdk.device.analyze import analyze
from sdk.device.monitor import AlertEvent, BeatEvent, Event, Monitor, WindowEvent
from sdk.device.quality import QualityEvent
from sdk.errors import HeartSightError
from sdk.stream.payload import decode_array, encode_alert

FS = 360.0
START = datetime(2026, 1, 1, 8, 0, tzinfo=timezone.utc)
ARRHYTHMIA = {"ventricular_ectopic_beat", "ventricular_run", "supraventricular_ectopy", "high_ectopy_burden"}


pytestmark = pytest.mark.usefixtures("one_thread")


def stream(monitor: Monitor, signal: np.ndarray, chunk: int) -> list[Event]:
    events = []
    for start in range(0, len(signal), chunk):
        events += monitor.feed(signal[start: start + chunk])
    return events + monitor.finish()


def of_kind(events: list[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def alert_list(events: list[Event]) -> list[Alert]:
    return [e.alert for e in of_kind(events, AlertEvent)]


def comparable(events: list[Event]) -> dict:
    """Everything the events say, per kind, with arrays as lists and without the random alert ids."""
    plain = lambda e: {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(e).items()}  # noqa: E731
    return {
        "beats": [plain(e) for e in of_kind(events, BeatEvent)],
        "quality": [plain(e) for e in of_kind(events, QualityEvent)],
        "alerts": sorted(({k: v for k, v in encode_alert(a).items() if k != "id"} for a in alert_list(events)),
                         key=lambda a: (a["sample_index"], a["type"])),
    }


def ecg_from_schedule(labels: list[str], times: list[float], duration_s: float, seed: int = 0):
    """ECG at FS with beats placed by hand, drawn by the ECGSYN model of sdk.data.synthetic.

    Returns the signal (mV), the R-peak samples and labels of the beats inside it.
    """
    n, up, pad = round(duration_s * FS), math.ceil(synthetic.MIN_INTERNAL_FS / FS), round(synthetic.PAD_SECONDS * FS)
    t = np.arange(-pad * up, (n + pad) * up) / (up * FS)
    waves = {"N": synthetic.SINUS_WAVES, "V": synthetic.VENTRICULAR_WAVES}
    shapes = np.stack([synthetic._scaled(waves[label], 0.8) for label in labels])
    clean = resample_poly(synthetic._integrate(t, np.array(times), shapes, np.zeros_like(t)), 1, up)[pad: pad + n]
    inside = (np.array(times) >= 0) & (np.array(times) <= (n - 1) / FS)
    r_peaks = synthetic._locate_extrema(clean, np.array(times)[inside] * FS, np.sign(shapes[inside, synthetic.R, 2]), FS)
    noise = np.random.default_rng(seed).normal(0.0, 0.02, n)
    return (clean + noise).astype(np.float32), r_peaks, [label for label, keep in zip(labels, inside) if keep]


def sinus_with_ectopy(duration_s: float, ventricular: dict[int, int], rr: float = 0.8):
    """Beat labels and times at 75 bpm; ventricular maps a sinus beat number to the number of V beats
    (at 133 bpm) that come early, 0.65 RR after the beat before it (1: an isolated V with a full
    compensatory pause; 3 or more: a run followed by a 1 s pause)."""
    labels, times, t, k = [], [], -8.0, 0  # beats cover the generator's 5 s padding and two more
    while t < duration_s + 8:
        if k in ventricular:
            first = t - 0.35 * rr
            labels += ["V"] * ventricular[k]
            times += [first + 0.45 * j for j in range(ventricular[k])]
            t = t + rr if ventricular[k] == 1 else times[-1] + 1.0
        labels.append("N")
        times.append(t)
        t += rr
        k += 1
    return labels, times


def test_chunk_size_does_not_change_the_result():
    ecg = synthetic.synthetic_ecg(30, FS, heart_rate=75, ectopic={"V": 0.15}, seed=0).signal.copy()
    ecg[int(14 * FS): int(15 * FS)] = np.nan  # a dropout: quality events and gated beats must not depend on chunking
    results = [comparable(stream(Monitor(fs=FS, start_time=START), ecg, chunk)) for chunk in (1, 360, len(ecg))]
    assert results[0] == results[1] == results[2]
    beats = results[0]["beats"]
    assert len(beats) > 30 and any(b["label"] == "V" for b in beats) and any(b["label"] is None for b in beats)
    assert [q["kind"] for q in results[0]["quality"]] == ["nan", "nan"]


def test_streaming_equals_the_offline_device_path_on_a_synthetic_recording():
    ecg = synthetic.synthetic_ecg(40, FS, heart_rate=70, ectopic={"V": 0.1}, seed=1)
    offline = analyze(Recording("synthetic", FS, ecg.signal[:, None], ("MLII",)), explain=True)
    streamed = of_kind(stream(Monitor(fs=FS), ecg.signal, 500), BeatEvent)
    assert [(b.sample, b.label, b.p, b.window_start) for b in streamed] == \
           [(b["sample"], b["label"], b["p"], b["window_start"]) for b in offline["beats"]]
    assert np.allclose(streamed[5].trace, offline["beats"][5]["trace"], atol=1e-4)


@needs_mitdb
def test_streaming_beat_labels_agree_with_analyze_on_mitdb():
    recording = read_database_record("mitdb", "233", DATA)
    offline = analyze(recording)["beats"]
    streamed = of_kind(stream(Monitor(fs=recording.fs), recording.channel("MLII"), 3600), BeatEvent)
    offline_labels = {b["sample"]: b["label"] for b in offline}
    agree = sum(offline_labels.get(b.sample) == b.label for b in streamed)
    assert abs(len(streamed) - len(offline)) <= len(offline) // 100
    assert agree >= 0.99 * len(offline)


def test_isolated_ventricular_beats_and_a_run_raise_their_alerts_at_their_beats():
    labels, times = sinus_with_ectopy(90, {20: 1, 70: 1, 95: 4})  # isolated V beats 40 s apart
    signal, r_peaks, truth = ecg_from_schedule(labels, times, 90)
    v_peaks = r_peaks[np.array(truth) == "V"]  # two isolated, then a run of four
    events = stream(Monitor(fs=FS, device="patch-7", site="ward-3", start_time=START), signal, 360)
    raised = alert_list(events)
    assert [a.type for a in raised] == ["ventricular_ectopic_beat"] * 2 + ["ventricular_run"]
    tolerance = 0.03 * FS
    for alert, expected in zip(raised, v_peaks[[0, 1, 2]]):
        wire = encode_alert(alert)  # what the clinician receives
        assert abs(wire["sample_index"] - expected) <= tolerance
        assert wire["time"] == (START + timedelta(seconds=wire["sample_index"] / FS)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        assert (wire["device"], wire["site"], wire["label"]) == ("patch-7", "ward-3", "V")
        assert wire["confidence"] >= alerts.MIN_BEAT_CONFIDENCE
        assert wire["model"] == {"name": "ecg_beat", "version": "1.0.0", "backend": "torch", "head_version": 0,
                                 "sha256": load_model("ecg_beat").card["sha256"]}
        # what the head read, so the clinic can refit this patient's head from the verdict on the alert
        assert len(wire["details"]["embedding"]) == load_model("ecg_beat").model.head.in_features
        signal_mv, trace = decode_array(wire["signal"]), decode_array(wire["trace"])
        start = wire["signal"]["start_sample"]
        assert wire["signal"]["fs"] == FS and len(signal_mv) == len(trace)
        assert np.allclose(signal_mv, signal[start: start + len(signal_mv)], atol=2 * wire["signal"]["scale"])
        assert trace.max() > 0
        # beat marks for the clinician's view: every R peak of the excerpt, the alert's own beat with its class
        marks = dict((sample, label) for sample, label in wire["details"]["beats"])
        inside = r_peaks[(r_peaks >= start) & (r_peaks < start + len(signal_mv))]
        assert len(marks) == len(inside) and all(np.abs(inside - m).min() <= tolerance for m in marks)
        assert marks[wire["sample_index"]] == "V"
        assert all(label in ("N", "V") for m, label in marks.items() if m < wire["sample_index"])
    run = raised[2]
    assert run.details["run_length"] == 4 and not run.details["sustained"]
    start = run.excerpt.start
    end = start + len(run.excerpt.signal)  # 3 s before the first beat of the run to 3 s after its last
    assert abs(start - (v_peaks[2] - 3 * FS)) <= tolerance and abs(end - (v_peaks[5] + 3 * FS)) <= tolerance


def test_signal_quality_problems_gate_classification_and_are_alerted_at_most_once_a_minute():
    signal = ecg_with_quality_problems(FS)
    events = stream(Monitor(fs=FS, start_time=START), signal, 1000)
    closed = [(q.kind, q.start / FS, q.end / FS) for q in of_kind(events, QualityEvent) if q.end is not None]
    assert [c[0] for c in closed] == ["nan", "flat_line", "clipping", "noise"]
    for (_, start, end), (a, b) in zip(closed, [(20, 22), (40, 43), (60, 66), (80, 84)]):
        assert a - 0.01 <= start and end <= b + 0.01 and end - start > 0.5 * (b - a)
    bad = [(start * FS, end * FS) for _, start, end in closed]
    for beat in of_kind(events, BeatEvent):  # the window of a beat spans 3 s either side; 3 samples for rounding
        lo, hi = beat.window_start, beat.window_start + 6 * FS
        if any(lo + 3 < b_hi and hi - 3 > b_lo for b_lo, b_hi in bad):
            assert beat.label is None and beat.quality is not None
        elif not any(lo - 3 < b_hi and hi + 3 > b_lo for b_lo, b_hi in bad):
            assert beat.label is not None
    raised = alert_list(events)
    for alert in raised:
        encode_alert(alert)  # valid on the wire
        if alert.type in ARRHYTHMIA:
            assert not any(lo - 3 * FS <= alert.sample_index <= hi + 3 * FS for lo, hi in bad)
    quality = [(a.label, a.sample_index / FS) for a in raised if a.type == "signal_quality"]
    assert [label for label, _ in quality] == ["nan", "noise"]  # flat line and clipping came within the minute
    assert any(a.type == "ventricular_ectopic_beat" for a in raised)


def finding(second: float, label: str | None, confidence: float = 0.95, hr_bpm: float | None = None,
            length_s: float = 0.0) -> Finding:
    sample = int(second * FS)
    excerpt = Excerpt(sample, np.zeros(4), np.zeros(4))
    return Finding(sample, sample + int(length_s * FS), label, confidence, excerpt, hr_bpm)


def policy() -> AlertPolicy:
    return AlertPolicy(fs=FS, device="d", site="s", stream="test", start_time=START,
                       model={"name": "m", "version": "1", "sha256": "0" * 64, "backend": "torch"})


def test_ectopy_burden_alert_has_hysteresis_and_s_alerts_are_rate_limited():
    # two beats a second; an S beat every 5th (24/min: high), 16th (7.5/min: still high, no new alert),
    # 30th (4/min: clears) and 5th beat again (a second alert)
    phases = ((0, 120, 5), (120, 360, 16), (360, 600, 30), (600, 720, 5))
    labels = ["S" if beat % every == 0 else "N" for first, last, every in phases for beat in range(first, last)]
    rules, raised = policy(), []
    for beat, label in enumerate(labels):
        raised += rules.beat(finding(beat * 0.5, label))
    burden = [a.sample_index / FS for a in raised if a.type == "high_ectopy_burden"]
    assert len(burden) == 2 and burden[0] < 60 and 300 <= burden[1] < 360
    s_alerts = [a for a in raised if a.type == "supraventricular_ectopy"]
    times = np.array([a.sample_index / FS for a in s_alerts])
    assert np.diff(times).min() >= alerts.ECTOPIC_ALERT_INTERVAL_S
    s_times = np.array([beat * 0.5 for beat, label in enumerate(labels) if label == "S"])
    not_yet_counted = np.sum(s_times > times[-1])
    assert len(s_alerts) + sum(a.details["suppressed_since_last"] for a in s_alerts) + not_yet_counted == len(s_times)


def test_low_confidence_and_unclassified_beats_never_alert():
    rules = policy()
    raised = []
    for beat in range(40):
        label, confidence = ("V", 0.5) if beat % 3 == 0 else ("N", 0.9)
        raised += rules.beat(finding(beat * 0.8, label, confidence))
    raised += rules.beat(finding(33, None))
    assert raised == []


def test_af_episodes_start_and_end_after_thirty_seconds_and_a_skipped_window_breaks_the_streak():
    rules, raised = policy(), []
    labels = ["non-AF"] * 3 + ["AF"] * 2 + [None] + ["AF"] * 4 + ["non-AF"] * 2 + ["AF"] + ["non-AF"] * 3
    for k, label in enumerate(labels):
        raised += rules.rhythm_window(finding(10 * k, label, 0.9, length_s=10))
    assert [(a.type, a.sample_index / FS) for a in raised] == [("af_start", 60.0), ("af_end", 130.0)]
    assert raised[1].details["episode_duration_s"] == 70.0


def test_heart_rate_alert_needs_three_windows_and_clears_only_well_inside_the_range():
    rules, raised = policy(), []
    rates = [39, 39, 60, 35, 35, 35, 42, 42, 42, 35, 35, 35, 60, 60, 60, 160, 161, 162]
    for k, rate in enumerate(rates):
        raised += rules.heart_rate_window(finding(2 * k, "hr", 1.0, hr_bpm=rate, length_s=8))
    assert [(a.label, a.sample_index / FS) for a in raised] == [("low_hr", 6.0), ("high_hr", 30.0)]
    assert raised[0].details["hr_bpm"] == [35, 35, 35]


def test_rhythm_and_heart_rate_windows_stream_exactly_as_analyze(tmp_path):
    """The rhythm path is checked with an untrained network and made-up RR evidence: it only has to see the same
    inputs and beats, and the beat model's V calls on the same beats. 155 s with an AF episode and 10% V beats: the
    stream forgets old signal, but keeps the beats the RR evidence of its next windows reads."""
    torch.manual_seed(0)
    spec = get_spec("ecg_af")
    n = len(rr_features.FEATURES)
    evidence = RhythmEvidence(np.full(n, 0.1), np.full(n, 0.2), np.linspace(-1, 2, n), -1.0, beat_model="ecg_beat")
    card = {"name": "ecg_af", "version": "test", "sha256": "0" * 64, "rhythm_evidence": evidence.to_card()}
    untrained = ZooModel(spec, spec.build().eval(), card, tmp_path)
    ecg = synthetic.synthetic_ecg(155, FS, ectopic={"V": 0.1}, seed=2, af_episodes=((50, 110),)).signal
    offline = analyze(Recording("synthetic", FS, ecg[:, None], ("MLII",)), untrained)["windows"]
    monitor = Monitor(untrained, fs=FS)
    streamed, kept = [], []
    for start in range(0, len(ecg), 700):
        streamed += of_kind(monitor.feed(ecg[start: start + 700]), WindowEvent)
        kept.append(len(monitor._task.rhythm_beats))
    streamed += of_kind(monitor.finish(), WindowEvent)
    assert [(w.start_s, w.end_s, w.label, w.p, w.padded_s, w.rhythm_evidence) for w in streamed] == \
           [(w["start_s"], w["end_s"], w["label"], w["p"], w.get("padded_s", 0.0), w["rhythm_evidence"])
            for w in offline]
    assert len(offline) == 16 and offline[-1]["padded_s"] == 5.0  # 150 s of whole windows, then 5 s padded to 10
    assert len({w["rhythm_evidence"] for w in offline}) > 8  # the evidence follows the rhythm window by window
    assert max(kept) < rr_features.CONTEXT_SPAN + 40  # beats kept: the evidence's reach and a window's worth
    flagged = np.array(monitor._task.rhythm_ectopic)
    assert 0.05 < flagged.mean() < 0.15  # the beat model found the V beats, whose intervals the evidence leaves out

    fs = 256.0
    t = np.arange(int(40 * fs)) / fs
    rng = np.random.default_rng(0)
    wrist = np.stack([np.sin(2 * np.pi * 1.4 * t) + 0.1 * rng.normal(size=t.size)]
                     + [0.2 * rng.normal(size=t.size) for _ in range(3)], axis=1).astype(np.float32)
    offline = analyze(Recording("wrist", fs, wrist, ("ppg", "x", "y", "z")), "ppg_hr")["windows"]
    streamed = of_kind(stream(Monitor("ppg_hr", fs=fs), wrist, 333), WindowEvent)
    assert [(w.start_s, w.hr_bpm) for w in streamed] == [(w["start_s"], w["hr_bpm"]) for w in offline]
    assert len(streamed) == len(offline) == 17  # 8 s windows every 2 s in 40 s
    assert all(abs(w.hr_bpm - 84) < 6 for w in streamed)  # a clean 1.4-Hz pulse on a still wrist
    assert all(w.trace.shape == (int(8 * fs),) and w.trace.max() > 0 for w in streamed)  # aligned with the signal


def test_a_rhythm_window_with_too_few_beats_gets_no_diagnosis_offline_or_streaming():
    """A 9-s pause with a little noise (not flat, not noisy enough for the quality gate) leaves a 10-s window with
    one or two beats: no rhythm to judge, so no AF decision either way."""
    ecg = synthetic.synthetic_ecg(40, FS, heart_rate=60, seed=1).signal.copy()
    pause = slice(int(10.5 * FS), int(19.5 * FS))
    ecg[pause] = np.random.default_rng(0).normal(0, 0.03, pause.stop - pause.start)
    offline = analyze(Recording("pause", FS, ecg[:, None], ("MLII",)), "ecg_af")["windows"]
    streamed = of_kind(stream(Monitor("ecg_af", fs=FS), ecg, 500), WindowEvent)
    assert [(w["label"], w.get("quality")) for w in offline] == [(w.label, w.quality) for w in streamed]
    assert [w.get("quality") for w in offline] == [None, "too_few_beats", None, None]


@needs_mitdb
def test_af_episodes_of_record_201_raise_af_start_and_af_end_near_the_annotations():
    """Record 201's two long AF episodes (0-378 s and 1597-1787 s) start within a minute of where the annotations
    put them, and the first ends so (the second ends 18 s before the recording does: less than the RR evidence's
    32-interval context). Its sinus stretches also hold ventricular trigeminy and aberrated atrial beats: at most
    one false episode is raised there."""
    from sdk.data import mitdb

    record = mitdb.load_record("201", DATA)
    raised = alert_list(stream(Monitor("ecg_af", fs=record.fs), record.ecg, 3600))
    edges = np.flatnonzero(np.diff(record.af.astype(np.int8))) + 1
    starts = [0] * bool(record.af[0]) + [s for s in edges if record.af[s]]
    ends = [s for s in edges if not record.af[s]]
    tolerance = 60 * record.fs
    found = {kind: [a.sample_index for a in raised if a.type == kind] for kind in ("af_start", "af_end")}
    for kind, annotated in (("af_start", (starts[0], starts[-1])), ("af_end", (ends[0],))):
        for sample in annotated:
            assert min(abs(np.array(found[kind]) - sample)) <= tolerance, (kind, sample / record.fs)
    false_starts = [s for s in found["af_start"] if min(abs(np.array(starts) - s)) > 1.5 * tolerance]
    assert len(false_starts) <= 1, np.array(false_starts) / record.fs


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the c backend needs gcc")
def test_the_int8_backends_stream_the_shipped_export_identically_and_explain_with_its_integer_map():
    from firmware_export.artifact import artifact_of

    ecg = synthetic.synthetic_ecg(120, FS, heart_rate=75, ectopic={"S": 0.08, "V": 0.1}, seed=11).signal
    artifact = artifact_of(load_model("ecg_beat_wcam"))
    events = {backend: stream(Monitor("ecg_beat_wcam", fs=FS, backend=backend, start_time=START), ecg, 3600)
              for backend in ("c", "onnxruntime")}
    for backend, streamed in events.items():
        assert all(a.model["backend"] == backend and a.model["sha256"] == artifact.sha256
                   for a in alert_list(streamed))
    assert comparable(events["c"])["beats"] == comparable(events["onnxruntime"])["beats"]
    # integer backends run each window as if alone: how many windows a chunk completes cannot change a bit
    in_small_chunks = stream(Monitor("ecg_beat_wcam", fs=FS, backend="c", start_time=START), ecg, 97)
    assert comparable(in_small_chunks)["beats"] == comparable(events["c"])["beats"]
    beats = of_kind(events["c"], BeatEvent)
    offline = analyze(Recording("synthetic", FS, ecg[:, None], ("MLII",)), "ecg_beat_wcam", backend="c")["beats"]
    assert [(b.sample, b.label) for b in beats] == [(b["sample"], b["label"]) for b in offline]
    assert all(b.trace.min() >= 0 and b.trace.max() > 0 for b in beats)
    # the traces are the C library's: whole int16 steps of hs_trace_scale (before resampling to the sensor rate)
    monitor = Monitor("ecg_beat_wcam", fs=FS, backend="c")
    x = np.random.default_rng(0).standard_normal((8, 3, artifact.spec.window)).astype(np.float32)
    outputs, traces = monitor.runner.explain(x)
    steps = traces / np.array([artifact.quantized.trace_scale(c) for c in outputs.argmax(1)])[:, None]
    assert np.allclose(steps, np.round(steps), atol=1e-3) and steps.max() <= 32767


def test_memory_stays_bounded_on_a_long_stream():
    ecg = synthetic.synthetic_ecg(180, FS, heart_rate=80, ectopic={"V": 0.1}, seed=3).signal
    monitor = Monitor(fs=FS)
    sizes = []
    for start in range(0, len(ecg), 360):
        monitor.feed(ecg[start: start + 360])
        sizes.append((len(monitor._raw.data) / FS, len(monitor._filtered.data) / 128, len(monitor._task.beats.r_peaks)))
    raw_s, filtered_s, beats = np.max(sizes, axis=0)
    assert raw_s < 15 and filtered_s < 12 and beats < 20  # seconds of signal, beats kept: not growing with time


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(HeartSightError, match="sampling rate"):
        Monitor(fs=0)
    with pytest.raises(HeartSightError, match="sampling rate"):
        Monitor(fs=-360.0)
    with pytest.raises(HeartSightError, match="50 Hz is too low for ECG.*at least 80 Hz"):
        Monitor(fs=50)
    with pytest.raises(HeartSightError, match="4 Hz is too low for PPG"):
        Monitor("ppg_hr", fs=4)
    with pytest.raises(HeartSightError, match="unknown backend 'tflite'"):
        Monitor(backend="tflite")
    with pytest.raises(HeartSightError, match="no int8 export"):
        Monitor(ZooModel(get_spec("ecg_beat"), get_spec("ecg_beat").build(), {"name": "untrained"}, None), backend="c")
    with pytest.raises(HeartSightError, match="device 'my device'"):
        Monitor(device="my device")
    with pytest.raises(HeartSightError, match="time zone"):
        Monitor(start_time=datetime(2026, 1, 1))
    with pytest.raises(HeartSightError, match="unknown model"):
        Monitor(model="ecg_nope")
    monitor = Monitor(fs=FS)
    with pytest.raises(HeartSightError, match=r"1-D \(samples,\), got shape \(10, 2\)"):
        monitor.feed(np.zeros((10, 2)))
    with pytest.raises(HeartSightError, match="numbers"):
        monitor.feed(np.array(["a", "b"]))
    with pytest.raises(HeartSightError, match=r"\(samples, 4\)"):
        Monitor("ppg_hr", fs=256).feed(np.zeros((10, 3)))
    monitor.finish()
    with pytest.raises(HeartSightError, match="finished"):
        monitor.feed(np.zeros(10))
    with pytest.raises(HeartSightError, match="aligned sample by sample"):
        Excerpt(0, np.zeros(3), np.zeros(4))


def test_alert_ids_depend_on_the_stream_and_the_event_never_on_chance():
    labels, times = sinus_with_ectopy(40, {20: 1})
    signal = ecg_from_schedule(labels, times, 40)[0]
    ids = lambda monitor: [a.id for a in alert_list(stream(monitor, signal, 360))]  # noqa: E731
    replayed = [ids(Monitor(fs=FS, stream_id="patch-7 session 12")) for _ in range(2)]
    assert len(replayed[0]) == 1 and replayed[0] == replayed[1]  # analysed again later: the same alert, the same id
    assert ids(Monitor(fs=FS, stream_id="patch-7 session 13")) != replayed[0]  # another recording of the device
    assert ids(Monitor(fs=FS, start_time=START)) == ids(Monitor(fs=FS, start_time=START)) != \
        ids(Monitor(fs=FS, start_time=START + timedelta(hours=1)))  # by default the start time names the stream
    for bad in ("", 12):
        with pytest.raises(HeartSightError, match="stream_id must be a non-empty string"):
            Monitor(fs=FS, stream_id=bad)


def test_isolated_ventricular_alerts_are_rate_limited_and_count_what_they_suppressed():
    # an isolated V beat every 10 s for two minutes: one alert per 30 s, the rest counted
    labels = ["V" if beat % 10 == 5 else "N" for beat in range(120)]
    rules, raised = policy(), []
    for beat, label in enumerate(labels):
        raised += rules.beat(finding(beat * 1.0, label))
    isolated = [a for a in raised if a.type == "ventricular_ectopic_beat"]
    times = np.array([a.sample_index / FS for a in isolated])
    assert len(isolated) == 4 and np.diff(times).min() >= alerts.ECTOPIC_ALERT_INTERVAL_S
    assert [a.details["suppressed_since_last"] for a in isolated] == [0, 2, 2, 2]


def test_a_sensor_at_the_model_rate_streams_without_resampling():
    """128 Hz in: samples pass through the resampler (there was no filter to design at a cutoff of Nyquist)."""
    ecg = synthetic.synthetic_ecg(30, 128.0, heart_rate=75, seed=3)
    offline = analyze(Recording("synthetic", 128.0, ecg.signal[:, None], ("MLII",)))
    streamed = of_kind(stream(Monitor(fs=128.0), ecg.signal, 100), BeatEvent)
    assert len(streamed) > 30
    assert [(b.sample, b.label) for b in streamed] == [(b["sample"], b["label"]) for b in offline["beats"]]
