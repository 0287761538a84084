"""`make demo` on a fresh machine: no data directory, so the synthetic ECG with ectopic beats; alerts go through
Mosquitto when it is installed, else through the in-process Python broker. The demo takes a while, so it runs once
per broker for the whole session and each test reads what that run left."""

import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from sdk.demo.broker import mosquitto_binary


class Demo(NamedTuple):
    broker: str
    run: subprocess.CompletedProcess
    out: Path

    def json(self, name: str) -> dict:
        assert self.run.returncode == 0, self.run.stderr
        return json.loads((self.out / name).read_text())


@pytest.fixture(scope="session", params=["mosquitto", "python"])
def demo(request, tmp_path_factory) -> Demo:
    """`heartsight demo --embedded-broker KIND` as a process with a bare environment (PATH, HOME, an empty data
    directory), as a newcomer's shell runs it."""
    if request.param == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (apt-get install -y mosquitto)")
    home = tmp_path_factory.mktemp(f"demo-{request.param}")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HEARTSIGHT_DATA": str(home / "no-data")}
    run = subprocess.run([sys.executable, "-m", "sdk.cli", "demo", "--out", str(home / "demo"),
                          "--embedded-broker", request.param], capture_output=True, text=True, env=env, timeout=300)
    return Demo(request.param, run, home / "demo")


def test_the_demo_succeeds_on_the_synthetic_ecg(demo):
    assert demo.run.returncode == 0, demo.run.stderr
    assert "synthetic ECG" in demo.run.stdout


def test_the_demo_finds_and_classifies_the_beats(demo):
    summary = demo.json("summary.json")
    assert summary["r_peaks"]["se"] > 0.99 and summary["r_peaks"]["ppv"] > 0.99
    assert summary["beat_classification"]["n"] > 300
    assert len(demo.json("analysis.json")["beats"]) == summary["r_peaks"]["detected"]
    assert (demo.out / "strip.png").stat().st_size > 10_000


def test_the_demo_streams_every_alert_through_its_broker_to_the_store_and_review(demo):
    summary = demo.json("summary.json")
    assert summary["speed_x_real_time"] > 1
    streaming = summary["streaming"]
    assert demo.broker in streaming["broker"]
    assert streaming["model"] == "ecg_beat_wcam"
    assert streaming["alerts"] > 0 and streaming["awaiting_broker"] == streaming["awaiting_clinic"] == 0
    assert streaming["stored"] == streaming["alerts"] and streaming["dead_letters"] == 0
    assert "<img" in (demo.out / "review" / "device-demo-patch.html").read_text()
