"""A Mosquitto of our own on a free local port: the demo's embedded broker when Mosquitto is installed, and the
tests'. Without it the demo uses sdk.demo.python_broker instead.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from sdk.errors import HeartSightError

# Mosquitto drops QoS 1 messages for a client once 1,000 are queued for it (its default): a listener that is away,
# or falls a few seconds behind a fleet, would lose alerts. Brokers in production need the same setting.
QUEUE_LIMITS = "max_queued_messages 1000000"


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    """Whether condition() became true within timeout_s, asking every interval_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


class LocalBroker:
    """Mosquitto on a free port with persistence in `directory`, so it can be stopped and restarted."""

    def __init__(self, directory: Path, config: str = "allow_anonymous true", tls: bool = False):
        binary = mosquitto_binary()
        if binary is None:
            raise HeartSightError("mosquitto is not installed; install it with `apt-get install -y mosquitto`")
        self.binary = binary
        self.port = free_port()
        directory = Path(directory)
        self.log_path = directory / f"mosquitto-{self.port}.log"
        self.conf = directory / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n{config}\n"
                             f"persistence true\npersistence_location {directory}/\n{QUEUE_LIMITS}\n"
                             f"persistence_file mosquitto-{self.port}.db\nlog_dest stderr\n")
        self.url = f"mqtts://localhost:{self.port}" if tls else f"mqtt://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0  # a restart appends to the same log
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        # "running" is logged once its listeners are open: a port taken meanwhile by another process (free_port can
        # only promise a port that was free) makes it exit instead, rather than leaving us talking to a stranger
        ready = wait_until(lambda: self.proc.poll() is not None or (b" running" in self.log_path.read_bytes()[logged:]
                                                                       and accepts(self.port)), 10)
        if not ready or self.proc.poll() is not None:
            raise HeartSightError(f"mosquitto did not start on port {self.port}: {self.log_path.read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> "LocalBroker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
