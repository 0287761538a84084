import os
from pathlib import Path

import pytest

from sdk.stream.broker import LocalBroker, mosquitto_binary

DATA = Path(os.environ.get("HEARTSIGHT_DATA", "")) if os.environ.get("HEARTSIGHT_DATA") else None
HAS_MITDB = DATA is not None and (DATA / "mitdb" / "100.hea").exists()
HAS_WRIST = DATA is not None and (DATA / "wrist_ppg_exercise" / "RECORDS").exists()

needs_mitdb = pytest.mark.skipif(not HAS_MITDB, reason="MIT-BIH not found: set HEARTSIGHT_DATA")
needs_wrist = pytest.mark.skipif(not HAS_WRIST, reason="wrist PPG database not found: set HEARTSIGHT_DATA")


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
    from sdk.stream.python_broker import PythonBroker

    if request.param == "mosquitto":
        if mosquitto_binary() is None:
            pytest.skip("mosquitto not installed (apt-get install -y mosquitto)")
        running = LocalBroker(tmp_path)
    else:
        running = PythonBroker()
    with running:
        yield running
