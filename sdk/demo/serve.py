"""`heartsight demo --serve`: the clinician app on the demo's store, with a login that lasts as long as the server."""

from __future__ import annotations

import secrets
from pathlib import Path

from sdk.clinician.accounts import add_user
from sdk.clinician.store import Store
from sdk.clinician.web.server import WebServer


def serve_demo(store_path: Path, port: int = 8080, host: str = "127.0.0.1") -> None:
    """Serve until Ctrl-C; the demo account is made with a random password now and removed at the stop."""
    name, password = f"demo-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    with Store(store_path) as store:
        add_user(store, name, password, "clinician")
        try:
            WebServer(store, host, port).run(f"clinician app: {{url}}/  one-time login: {name} / {password}  "
                                             "(Ctrl-C stops it)")
        finally:
            store.remove_user(name)
