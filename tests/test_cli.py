"""The command line on real files and real zoo models: the installed console script once, then sdk.cli.main in
this process (a subprocess would add only its start-up time)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, needs_mitdb
from sdk.data.synthetic import synthetic_ecg


@pytest.fixture(scope="module")
def synthetic_npy(tmp_path_factory):
    ecg = synthetic_ecg(duration_s=60, fs=250, heart_rate=75, ectopic={"V": 0.1}, seed=3)
    path = tmp_path_factory.mktemp("inputs") / "synthetic.npy"
    np.save(path, ecg.signal)
    return path, ecg


def test_analyze_json_reports_every_beat_with_a_label(synthetic_npy):
    """Through the console script pyproject.toml installs, as a user types it."""
    path, ecg = synthetic_npy
    script = Path(sys.executable).with_name("heartsight")
    env = {k: v for k, v in os.environ.items() if k != "HEARTSIGHT_DATA"}
    run = subprocess.run([str(script), "analyze", str(path), "--fs", "250", "--json"], capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["input"] == str(path) and result["fs"] == 250
    assert result["windows"] == [] and result["hr_bpm"] == []
    samples = np.array([b["sample"] for b in result["beats"]])
    assert abs(len(samples) - len(ecg.r_peaks)) <= 2
    nearest = np.abs(samples[:, None] - ecg.r_peaks[None, :]).min(axis=0)
    assert np.mean(nearest <= 0.05 * 250) > 0.97
    beat = result["beats"][5]
    assert beat["label"] in "NSVF" and 0.25 <= beat["p"] <= 1 and beat["time_s"] == round(beat["sample"] / 250, 3)


def test_analyze_af_model_reports_windows(synthetic_npy, heartsight_main):
    path, _ = synthetic_npy
    run = heartsight_main("analyze", path, "--fs", 250, "--model", "ecg_af", "--json")
    assert run.returncode == 0, run.stderr
    windows = json.loads(run.stdout)["windows"]
    assert len(windows) == 6 and windows[1]["start_s"] == 10.0 and windows[1]["end_s"] == 20.0
    assert all(w["label"] in ("AF", "non-AF") for w in windows)


def test_one_failing_input_does_not_stop_the_others(synthetic_npy, tmp_path, heartsight_main):
    path, _ = synthetic_npy
    broken = tmp_path / "nan.npy"
    signal = np.load(path)
    signal[100] = np.nan
    np.save(broken, signal)
    run = heartsight_main("analyze", broken, path, "--fs", 250, "--json")
    assert run.returncode != 0
    first, second = (json.loads(line) for line in run.stdout.splitlines())
    assert first["input"] == str(broken) and "NaN" in first["error"]
    assert second["input"] == str(path) and len(second["beats"]) > 50
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("args, message", [
    (("analyze", "{npy}", "--fs", "0"), "positive"),
    (("analyze", "{npy}", "--fs", "-250"), "positive"),
    (("analyze", "{npy}", "--fs", "25"), "25 Hz is too low for ECG"),
    (("stream", "{npy}", "--fs", "3", "--broker", "mqtt://127.0.0.1:1", "--device", "d", "--outbox", "{outbox}"),
     "3 Hz is too low for ECG"),
    (("analyze", "{npy}", "--fs", "250", "--model", "resnet"), "unknown model 'resnet'"),
    (("analyze", "{npy}", "--fs", "250", "--channel", "3"), "channel 3 is out of range"),
    (("analyze", "{short}", "--fs", "250"), "at least"),
    (("analyze", "{empty}", "--fs", "250"), "empty"),
    (("analyze", "{npy}"), "--fs"),
    (("analyze", "{missing}", "--fs", "250"), "not found"),
    (("evaluate", "--model", "ecg_beat", "--data-dir", "{missing}"), "heartsight data fetch mitdb"),
    (("train", "nosuchmodel"), "unknown model"),
    (("train", "ecg_af", "--training-set", "DS1+SVDB"), "--training-set applies to beat models"),
])
def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(synthetic_npy, tmp_path, heartsight_main, args, message):
    path, _ = synthetic_npy
    np.save(tmp_path / "short.npy", np.zeros(100))
    np.save(tmp_path / "empty.npy", np.zeros(0))
    files = {"npy": path, "short": tmp_path / "short.npy", "empty": tmp_path / "empty.npy",
             "missing": tmp_path / "missing", "outbox": tmp_path / "outbox.sqlite"}
    run = heartsight_main(*(a.format(**files) for a in args))
    assert run.returncode != 0
    assert message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.startswith("heartsight: error")]) == 1


@needs_mitdb
def test_analyze_a_wfdb_record_and_a_csv_agree(tmp_path, heartsight_main):
    from sdk.data.records import read_database_record

    record = read_database_record("mitdb", "100", DATA)
    excerpt = record.signal[: 360 * 30]
    csv = tmp_path / "100.csv"
    np.savetxt(csv, excerpt, delimiter=",", header="MLII,V5", comments="")
    from_csv = json.loads(heartsight_main("analyze", csv, "--fs", 360, "--json").stdout)
    whole = json.loads(heartsight_main("analyze", DATA / "mitdb" / "100", "--json").stdout)
    assert whole["fs"] == 360.0 and len(whole["beats"]) > 2200
    # the first 25 s are the same samples: same beats, same labels
    early = [b for b in from_csv["beats"] if b["time_s"] < 25]
    assert early == [b for b in whole["beats"] if b["time_s"] < 25]


def test_a_short_recording_gets_an_af_decision_on_a_marked_padded_window(tmp_path, heartsight_main):
    """AF needs a decision on 10-s handheld recordings and on the tail of longer ones: a last stretch of 5 s or
    more is padded to a whole window and marked; less than 5 s in all is refused with the minimum."""
    ecg = synthetic_ecg(duration_s=17, fs=250, heart_rate=75, seed=4).signal
    np.save(tmp_path / "17s.npy", ecg)
    np.save(tmp_path / "4s.npy", ecg[: 4 * 250])
    run = heartsight_main("analyze", tmp_path / "17s.npy", "--fs", 250, "--model", "ecg_af", "--json")
    assert run.returncode == 0, run.stderr
    windows = json.loads(run.stdout)["windows"]
    assert [(w["start_s"], w.get("padded_s")) for w in windows] == [(0.0, None), (10.0, 3.0)]
    assert all(w["label"] in ("AF", "non-AF") for w in windows)
    run = heartsight_main("analyze", tmp_path / "4s.npy", "--fs", 250, "--model", "ecg_af", "--json")
    assert run.returncode != 0 and "at least 1250 are needed" in json.loads(run.stdout)["error"]


def test_ecg_models_read_mlii_else_lead_ii_else_the_first_channel():
    from sdk.data.records import Recording
    from sdk.device.analyze import select_channels

    signal = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert select_channels(Recording("r", 250, signal, ("V1", "II", "MLII")), "rhythm", None).tolist() == [2, 5]
    assert select_channels(Recording("r", 250, signal, ("V1", "II", "V5")), "rhythm", None).tolist() == [1, 4]
    assert select_channels(Recording("r", 250, signal, ("V1", "V2", "V5")), "beat", None).tolist() == [0, 3]
    assert select_channels(Recording("r", 250, signal, ("V1", "II", "MLII")), "beat", 0).tolist() == [0, 3]


@pytest.mark.parametrize("fs", [100, 1000])
def test_af_decisions_at_the_lowest_and_highest_device_rates(tmp_path, heartsight_main, fs):
    np.save(tmp_path / "ecg.npy", synthetic_ecg(duration_s=20, fs=fs, heart_rate=75, seed=5).signal)
    run = heartsight_main("analyze", tmp_path / "ecg.npy", "--fs", fs, "--model", "ecg_af", "--json")
    assert run.returncode == 0, run.stderr
    windows = json.loads(run.stdout)["windows"]
    assert [w["start_s"] for w in windows] == [0.0, 10.0] and all(w["label"] == "non-AF" for w in windows)
