import json
import subprocess
import sys

import pytest

from sdk.stream.broker import mosquitto_binary


@pytest.mark.parametrize("embedded_broker", ["mosquitto", "python"])
def test_demo_runs_on_the_synthetic_default_without_any_data(tmp_path, embedded_broker):
    """`make demo` on a fresh machine: no data directory, the synthetic ECG with ectopic beats; alerts go through
    Mosquitto when it is installed, else through the in-process Python broker."""
    if embedded_broker == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (apt-get install -y mosquitto)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HEARTSIGHT_DATA": str(tmp_path / "no-data")}
    run = subprocess.run([sys.executable, "-m", "sdk.cli", "demo", "--out", str(tmp_path / "demo"),
                          "--embedded-broker", embedded_broker], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "synthetic ECG" in run.stdout
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["r_peaks"]["se"] > 0.99 and summary["r_peaks"]["ppv"] > 0.99
    assert summary["beat_classification"]["n"] > 300
    assert summary["speed_x_real_time"] > 1
    assert (tmp_path / "demo" / "strip.png").stat().st_size > 10_000
    analysis = json.loads((tmp_path / "demo" / "analysis.json").read_text())
    assert len(analysis["beats"]) == summary["r_peaks"]["detected"]
    streaming = summary["streaming"]
    assert embedded_broker in streaming["broker"]
    assert streaming["model"] == "ecg_beat_wcam"
    assert streaming["alerts_published"] > 0 and streaming["queued"] == 0
    assert streaming["stored"] == streaming["alerts_published"] and streaming["dead_letters"] == 0
    assert "<img" in (tmp_path / "demo" / "review" / "device-demo-patch.html").read_text()
