"""The MQTT topic layout, heartsight/v1/<site>/<device>/alerts|status|acks|head: the publisher's topics, the
listener's subscription, its check of where an alert came from, where it acknowledges it and where the clinic sends
a device its head are all made here."""

from __future__ import annotations

from sdk.errors import HeartSightError

ROOT = "heartsight/v1"


def alerts_topic(site: str, device: str) -> str:
    return f"{ROOT}/{site}/{device}/alerts"


def status_topic(site: str, device: str) -> str:
    return f"{ROOT}/{site}/{device}/status"


def acks_topic(site: str, device: str) -> str:
    """Where the clinic acknowledges a device's alerts end to end (one topic per device, read by it alone)."""
    return f"{ROOT}/{site}/{device}/acks"


def head_topic(site: str, device: str) -> str:
    """Where the clinic sends a device its recalibrated head (retained: a device that connects later still gets the
    latest; firmware_export.head_update), read by that device alone."""
    return f"{ROOT}/{site}/{device}/head"


def alerts_filter(shared_group: str | None = None) -> str:
    """Every device's alerts; with a group, the shared subscription whose listeners split them between them."""
    return _every_device(alerts_topic("+", "+"), shared_group)


def status_filter(shared_group: str | None = None) -> str:
    """Every device's status, likewise."""
    return _every_device(status_topic("+", "+"), shared_group)


def _every_device(every_device: str, shared_group: str | None) -> str:
    if shared_group is None:
        return every_device
    if not shared_group or set(shared_group) & set("/+#"):
        raise HeartSightError(f"shared group {shared_group!r} must be a non-empty name without '/', '+' or '#'")
    return f"$share/{shared_group}/{every_device}"


def sender(topic: str, kind: str = "alerts") -> tuple[str, str] | None:
    """(site, device) of an alerts topic (or of another kind: status); None if the topic is not one."""
    levels = topic.split("/")
    if len(levels) != 5 or "/".join(levels[:2]) != ROOT or levels[4] != kind:
        return None
    return levels[2], levels[3]
