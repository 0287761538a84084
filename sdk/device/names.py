"""Device and site names. The device owns its name; the alerts and the MQTT topics carry it, so a name must be one
safe topic level (the alert schema's pattern)."""

from __future__ import annotations

import re

from sdk.errors import HeartSightError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(what: str, value: object) -> None:
    """Raise HeartSightError unless value is a valid device or site name; `what` says which it is."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise HeartSightError(f"{what} {value!r} is not a valid name: use 1-64 letters, digits, '_', '.' or '-', "
                              "starting with a letter or digit")
