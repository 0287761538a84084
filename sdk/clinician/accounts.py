"""Clinicians' accounts for the web app: argon2id password hashes in the store, and a limit on login attempts.

argon2 is memory-hard, so a stolen store cannot be brute-forced at GPU speed; argon2-cffi's defaults (RFC 9106's
low-memory profile) are used, and a hash made with older parameters is redone at the next login.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sdk.clinician.store import ROLES, Store
from sdk.errors import HeartSightError

MIN_PASSWORD_LENGTH = 12
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a login takes as long whether or not the account exists.
_UNKNOWN_USER_HASH = _hasher.hash("no account has this password")


def add_user(store: Store, name: str, password: str, role: str = "clinician") -> None:
    """A new account; the password is kept as an argon2id hash only."""
    if not NAME.match(name):
        raise HeartSightError(f"user name {name!r} must be 1-64 letters, digits or _ . @ - (starting with a letter or "
                              "digit)")
    if role not in ROLES:
        raise HeartSightError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise HeartSightError(f"the password has {len(password)} characters; use at least {MIN_PASSWORD_LENGTH}")
    store.add_user(name, role, _hasher.hash(password))


def authenticate(store: Store, name: str, password: str) -> dict | None:
    """The account ({"name", "role"}) if the password is right; None otherwise, for an unknown name too."""
    user = store.user(name) if NAME.match(name) else None
    try:
        _hasher.verify(user["password_hash"] if user else _UNKNOWN_USER_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user["password_hash"]):
        store.set_password_hash(name, _hasher.hash(password))
    return {"name": user["name"], "role": user["role"]}


class LoginLimiter:
    """At most `attempts` failed logins per client address and per user name in `window_s`; then refused until the
    oldest of them is that old. Guessing is slowed per account even when it comes from many addresses."""

    def __init__(self, attempts: int = 5, window_s: float = 900.0):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, name: str) -> float:
        """Seconds until this client may try this name again; 0 if it may now."""
        now = time.monotonic()
        with self._lock:
            waits = [self._wait(key, now) for key in (f"client:{client}", f"user:{name}")]
        return max(waits)

    def failed(self, client: str, name: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (f"client:{client}", f"user:{name}"):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{name}", None)

    def _wait(self, key: str, now: float) -> float:
        failures = self._failures.get(key)
        if not failures:
            return 0.0
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return 0.0
        return failures[0] + self.window_s - now if len(failures) >= self.attempts else 0.0
