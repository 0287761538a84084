"""What several test modules share: the data location, brokers, PostgreSQL, a valid alert, the two ways to run
`heartsight`, and a toy beat task with its trained teacher for compression.

Import plain helpers with `from conftest import ...`; fixtures are found by name.
"""

import os
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from models.registry import get_spec
from sdk.data.datasets import Dataset
from sdk.demo.broker import LocalBroker, accepts, mosquitto_binary, wait_until
from sdk.errors import HeartSightError
from sdk.stream.broker_setup import find_plugin
from sdk.training.train import TrainConfig, fit

DATA = Path(os.environ.get("HEARTSIGHT_DATA", "")) if os.environ.get("HEARTSIGHT_DATA") else None
HAS_MITDB = DATA is not None and (DATA / "mitdb" / "100.hea").exists()
HAS_WRIST = DATA is not None and (DATA / "wrist_ppg_exercise" / "RECORDS").exists()
HAS_SVDB = DATA is not None and (DATA / "svdb" / "801.hea").exists()

needs_mitdb = pytest.mark.skipif(not HAS_MITDB, reason="MIT-BIH not found: set HEARTSIGHT_DATA")
needs_wrist = pytest.mark.skipif(not HAS_WRIST, reason="wrist PPG database not found: set HEARTSIGHT_DATA")
needs_svdb = pytest.mark.skipif(not HAS_SVDB, reason="MIT-BIH Supraventricular not found: set HEARTSIGHT_DATA")
needs_cmsis_nn = pytest.mark.skipif(not (os.environ.get("CMSIS_NN_DIR") and os.environ.get("CMSIS_CORE_DIR")),
                                    reason="CMSIS-NN not found: set CMSIS_NN_DIR and CMSIS_CORE_DIR (.ci/run does)")
needs_mosquitto = pytest.mark.skipif(mosquitto_binary() is None,
                                     reason="mosquitto not installed (apt-get install -y mosquitto)")

# How long a test waits for something a broker, a listener or another process must do. Generous, because on a
# loaded 2-core machine a round trip can take seconds; a test that passes stops waiting as soon as it happens.
DEADLINE_S = 30.0


# --- running the command line --------------------------------------------------------------------------------------

class Run(NamedTuple):
    """What a `heartsight` run left: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def heartsight(*args, env_data: bool = False) -> subprocess.CompletedProcess:
    """`python -m sdk.cli ARGS` in a process of its own, for what needs the process boundary (signals, the
    environment, several runs of one device). Without env_data, HEARTSIGHT_DATA is unset so nothing reads the real
    data by accident."""
    env = dict(os.environ)
    if not env_data:
        env.pop("HEARTSIGHT_DATA", None)
    return subprocess.run([sys.executable, "-m", "sdk.cli", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture
def heartsight_main(capsys, monkeypatch):
    """`heartsight ARGS` as sdk.cli.main in this process: for error messages and exit codes a subprocess adds only
    its start-up time. HEARTSIGHT_DATA is unset as in `heartsight`; main's SIGTERM handler is undone afterwards."""
    from sdk.cli import main

    monkeypatch.delenv("HEARTSIGHT_DATA", raising=False)

    def run(*args) -> Run:
        capsys.readouterr()
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            returncode = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            returncode = exc.code
        finally:
            signal.signal(signal.SIGTERM, sigterm)
        out, err = capsys.readouterr()
        return Run(returncode, out, err)
    return run


# --- brokers -------------------------------------------------------------------------------------------------------

def eventually(condition) -> bool:
    """Whether condition() holds within DEADLINE_S."""
    return wait_until(condition, DEADLINE_S)


def has_dynamic_security_plugin() -> bool:
    try:
        find_plugin()
        return True
    except HeartSightError:
        return False


class ConfiguredMosquitto:
    """`mosquitto -c <a generated mosquitto.conf>`, as a user would start it, which a test can kill -9 and restart."""

    def __init__(self, conf: Path, port: int, log: Path):
        self.conf, self.port, self.log = conf, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        logged = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        # "running" once its listener is open (see sdk.demo.broker.LocalBroker.start)
        assert eventually(lambda: self.proc.poll() is not None or (b" running" in self.log.read_bytes()[logged:]
                                                                   and accepts(self.port))) \
            and self.proc.poll() is None, self.log.read_text()[-2000:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(DEADLINE_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(DEADLINE_S)


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto of the test's own on a free port, stopped afterwards."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (apt-get install -y mosquitto)")
    with LocalBroker(tmp_path) as running:
        yield running


@pytest.fixture(params=["mosquitto", "python"])
def any_broker(request, tmp_path):
    """Each embedded broker in turn: a Mosquitto of the test's own, then the in-process Python broker."""
    from sdk.demo.python_broker import PythonBroker

    if request.param == "mosquitto":
        if mosquitto_binary() is None:
            pytest.skip("mosquitto not installed (apt-get install -y mosquitto)")
        running = LocalBroker(tmp_path)
    else:
        running = PythonBroker()
    with running:
        yield running


# --- PostgreSQL ----------------------------------------------------------------------------------------------------

POSTGRES = os.environ.get("HEARTSIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def postgres_schema():
    """A store URL whose tables live in a schema of their own, dropped afterwards; skips without PostgreSQL."""
    from sdk.clinician.store import scratch_schema

    with ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_schema(POSTGRES, "heartsight_test"))
        except HeartSightError as exc:
            pytest.skip(f"{exc} (set HEARTSIGHT_TEST_POSTGRES)")
        yield url


# --- a valid alert -------------------------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def sample_alert(device: str = "dev-a", site: str = "s1", i: int = 0, **overrides) -> dict:
    """A valid alert with a 1 s synthetic ECG excerpt at 360 Hz and a saliency bump at the event."""
    from sdk.device.alerts import Alert, Excerpt
    from sdk.stream.payload import encode_alert

    t = np.arange(360) / 360
    signal_mv = np.sin(2 * np.pi * 1.2 * t) + 0.2 * np.sin(2 * np.pi * 17 * t)
    trace = np.exp(-((t - 0.5) / 0.05) ** 2)
    fields = dict(device=device, site=site, stream="test", type="ventricular_ectopic_beat",
                  time=T0 + timedelta(seconds=i), sample_index=1000 + 360 * i + 180, confidence=0.93, label="V",
                  model={"name": "ecg_beat", "version": "1.0.0", "sha256": "ab" * 32, "backend": "torch"},
                  fs=360, excerpt=Excerpt(1000 + 360 * i, signal_mv, trace), details={"run_length": 1})
    return encode_alert(Alert(**{**fields, **overrides}))


# --- the device path -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_thread():
    """Batches of one or two windows run fastest on one thread (more only spin on a shared CPU)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ecg_with_quality_problems(fs: float) -> np.ndarray:
    """100 s of synthetic ECG (float32) with a dropout at 20-22 s, a lead off at 40-43 s, an amplifier saturating on
    every QRS at 60-66 s and muscle noise at 80-84 s: every problem the quality gate names, once."""
    from sdk.data import synthetic

    signal = synthetic.synthetic_ecg(100, fs, heart_rate=75, ectopic={"V": 0.15}, seed=0).signal.astype(np.float32)
    at = lambda a, b: slice(int(a * fs), int(b * fs))  # noqa: E731
    signal[at(20, 22)] = np.nan
    signal[at(40, 43)] = 0.37  # lead off
    signal[at(60, 66)] = np.clip(signal[at(60, 66)], -0.6, 0.6)  # the amplifier saturates on every QRS
    signal[at(80, 84)] += np.random.default_rng(0).normal(0.0, 0.3, int(4 * fs)).astype(np.float32)  # muscle noise
    return signal


# --- a toy beat task and its teacher, for compression -------------------------------------------------------------

TOY = replace(get_spec("ecg_beat"), window=128, widths=(16, 24))


def toy_beats(n_per_class: int, seed: int) -> Dataset:
    """The class is written in the ECG amplitude around the window centre, where the beat is."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n_per_class)
    x = rng.normal(0, 0.05, size=(len(y), len(TOY.input_channels), TOY.window)).astype(np.float32)
    x[:, 0, 54:74] += (y[:, None] - 1.5).astype(np.float32)
    return Dataset(x, y, np.array(["toy"] * len(y)))


@pytest.fixture(scope="session")
def toy():
    """(teacher trained on the toy task, its training beats, held-out beats)."""
    train, held_out = toy_beats(600, seed=1), toy_beats(50, seed=2)
    teacher, _ = fit(TOY, train, TrainConfig(epochs=6, batch_size=64, max_lr=1e-2), progress=False)
    return teacher, train, held_out
