"""Bad input gets one line `heartsight: error: …` naming the problem and what to do, never a traceback or a wrong
answer: malformed paths, rates, headers, files and model directories, by hand and by fuzzing."""

import json
import shutil

import numpy as np
import pytest
from conftest import DATA, needs_mitdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.registry import ZOO_DIR
from sdk.data.records import Recording, resample_factors
from sdk.device.analyze import analyze
from sdk.errors import HeartSightError


def one_error_line(run) -> str:
    """The run failed cleanly: an exit status, and its only diagnostic is one `heartsight: error:` line."""
    assert run.returncode in (1, 2), run
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("heartsight: error: ")]
    assert len(errors) >= 1, run.stderr
    return errors[0]


@pytest.mark.parametrize("path, expected", [("", "empty input path"), (".", "is a directory"), ("/", "is a directory")])
def test_paths_that_are_not_recordings(heartsight_main, path, expected):
    assert expected in one_error_line(heartsight_main("analyze", path))


def test_empty_and_odd_files(heartsight_main, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros(0, np.float32))
    (tmp_path / "empty.csv").write_text("")
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    for name, expected in (("empty.npy", "holds no samples"), ("empty.csv", "empty"), ("text.npy", "expected numbers")):
        assert expected in one_error_line(heartsight_main("analyze", tmp_path / name, "--fs", 360))
    assert "holds no samples" in one_error_line(heartsight_main("stream", tmp_path / "empty.npy", "--fs", 360,
                                                                "--broker", "mqtt://127.0.0.1:1", "--device", "d"))


@needs_mitdb
def test_a_header_rate_that_is_not_positive_is_refused_not_read_as_250_hz(heartsight_main, tmp_path):
    for rate in ("-360", "0", "nan"):
        shutil.copyfile(DATA / "mitdb" / "100.dat", tmp_path / "100.dat")
        header = (DATA / "mitdb" / "100.hea").read_text().replace("100 2 360 650000", f"100 2 {rate} 650000")
        (tmp_path / "100.hea").write_text(header)
        assert "not a positive number of Hz" in one_error_line(heartsight_main("analyze", tmp_path / "100"))


def test_resampling_ratios_are_exact_or_refused():
    assert resample_factors(360, 128) == (16, 45)
    assert resample_factors(200_000, 128) == (2, 3125)  # was rounded to a nearby ratio: time ran at the wrong speed
    assert resample_factors(360.5, 128) == (256, 721)
    with pytest.raises(HeartSightError, match="cannot be resampled"):
        resample_factors(1e9, 128)
    with pytest.raises(HeartSightError, match="cannot be resampled"):
        resample_factors(97.123456, 128)


def test_damaged_model_directories(heartsight_main, tmp_path):
    for damage in ("card", "weights"):
        model = tmp_path / damage
        shutil.copytree(ZOO_DIR / "ecg_beat_wcam", model, ignore=shutil.ignore_patterns("int8"))
        if damage == "card":
            (model / "card.json").write_text("{not json")
        else:
            (model / "model.pt").write_bytes(b"\x00" * 100)
        message = one_error_line(heartsight_main("analyze", "x.npy", "--fs", 360, "--model", model))
        assert ("not a readable model card" if damage == "card" else "does not hold the weights") in message
    assert "ecg_beat_wcam" in one_error_line(heartsight_main("analyze", "x.npy", "--fs", 360, "--model", "nope"))


def test_export_to_an_unwritable_place(heartsight_main, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = one_error_line(heartsight_main("export", "--model", "ecg_beat_wcam", "--out", blocker / "sub"))
    assert "cannot write the export" in message and "is a file" in message


def test_unreadable_signal_is_reported_as_such_not_diagnosed():
    """A constant (lead-off) and a full-scale square wave: the quality gate says why, no beat gets a label."""
    fs = 360.0
    t = np.arange(int(60 * fs))
    for signal, problem in ((np.full(len(t), 0.5), "flat_line"), (np.where((t // 37) % 2, 32767.0, -32767.0), None)):
        result = analyze(Recording("bad", fs, signal.astype(np.float32)[:, None], ("ecg",)), "ecg_beat")
        assert result["quality"] and all(b["label"] is None and b["quality"] for b in result["beats"])
        if problem:
            assert result["quality"][0]["problem"] == problem


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["0", "-1", "1e400", "nan",
                                                                                      "3", "abc", "1e-300"])),
       length=st.integers(0, 4000), channels=st.integers(1, 3))
def test_fuzzed_rates_and_files_never_raise_a_traceback(heartsight_main, tmp_path, rate, length, channels):
    path = tmp_path / "signal.npy"
    np.save(path, np.random.default_rng(length).standard_normal((length, channels)).astype(np.float32))
    run = heartsight_main("analyze", path, f"--fs={rate}", "--json")
    assert "Traceback" not in run.stderr
    if run.returncode == 0:
        assert json.loads(run.stdout.splitlines()[0])["input"] == str(path)
    else:
        one_error_line(run)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.one_of(st.sampled_from(["", ".", "/", "-", "x.npy", "x.csv", "x.hea", "/dev/null", "a/../", "~"]),
                      st.text(min_size=1, max_size=30)),
       command=st.sampled_from(["analyze", "stream", "export"]))
def test_fuzzed_paths_through_analyze_stream_and_export_never_raise_a_traceback(heartsight_main, tmp_path, path,
                                                                               command):
    path = path.replace("\x00", "")
    if command == "analyze":
        args = ("analyze", "--fs=360", "--", path)
    elif command == "stream":
        args = ("stream", "--fs=360", "--broker", "mqtt://127.0.0.1:1", "--device", "d", "--wait", "0",
                "--outbox", tmp_path / "outbox.sqlite", "--", path)
    else:
        args = ("export", "--model", path or "''", "--out", tmp_path / "out")
    run = heartsight_main(*args)
    assert "Traceback" not in run.stderr
    if run.returncode != 0:
        one_error_line(run)
