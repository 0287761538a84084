"""Running the app: uvicorn in the foreground (`clinician serve`) or in a background thread (the demo, tests and the
benchmark), optionally with a listener filling the same store in the same process."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from sdk.clinician.listener import Listener
from sdk.clinician.store import Store
from sdk.clinician.web.app import create_app
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig

GRACEFUL_S = 2  # open event streams are cut after this long at a stop


class WebServer:
    """The app on a store, at host:port (port 0: a free one); `url` once started."""

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 8080, https_only: bool = False):
        self.store, self.host, self.port = store, host, port
        self.app = create_app(store, https_only=https_only)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> WebServer:
        """Serve in a background thread; returns once it accepts connections."""
        sock = self._socket()
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="heartsight-web",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise HeartSightError(f"the web app did not start on {self.url} within {timeout_s:g} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(GRACEFUL_S + 5)

    def run(self, banner: str = "") -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM; banner is printed, with {url} filled, once bound."""
        sock = self._socket()
        if banner:
            print(banner.replace("{url}", self.url), flush=True)
        uvicorn.Server(self._config()).run(sockets=[sock])

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _socket(self) -> socket.socket:
        """Bound here, so a taken port is a clear error and port 0 tells which free one it got."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only for sockets that say TCP, and
        # with it on, a response's body waits ~40 ms for the client's delayed ACK of its headers.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise HeartSightError(f"cannot serve on {self.host}:{self.port}: {exc.strerror}; choose another --port "
                                  "or --host") from None
        self.port = sock.getsockname()[1]
        return sock

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_S)


def serve(db: str, host: str, port: int, broker: BrokerConfig | None = None, https_only: bool = False) -> None:
    """`heartsight clinician serve`: the app, and with a broker a listener storing alerts into the same store."""
    store = Store(db)
    listener = Listener(broker, store) if broker is not None else None
    try:
        if listener is not None:
            listener.start()
        WebServer(store, host, port, https_only).run(
            f"serving the clinician app on {{url}} (store {db}{', listening at ' + broker.url if broker else ''}); "
            "Ctrl-C stops it")
    finally:
        if listener is not None:
            listener.stop()
        store.close()
