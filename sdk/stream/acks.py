"""The end-to-end acknowledgement: after its store has committed alerts, the clinic tells their device which.

The listener publishes {"schema": "heartsight.ack.v1", "ids": [...]} (QoS 1) on heartsight/v1/<site>/<device>/acks;
the device's publisher deletes those alerts from its outbox. Until then it keeps them and publishes them again, and the
store deduplicates by id, so a lost alert, a lost acknowledgement or a crash anywhere costs a resend, never an alert.
"""

from __future__ import annotations

import json
import re

from sdk.errors import HeartSightError

ACK_SCHEMA = "heartsight.ack.v1"
_ALERT_ID = re.compile(r"[0-9a-f]{32}")


def ack_bytes(alert_ids: list[str]) -> bytes:
    return json.dumps({"schema": ACK_SCHEMA, "ids": alert_ids}, separators=(",", ":")).encode()


def read_ack(raw: bytes) -> list[str]:
    """The alert ids an acknowledgement lists; HeartSightError if it is not one."""
    try:
        ack = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeartSightError(f"acknowledgement is not JSON: {exc}") from None
    if not isinstance(ack, dict) or ack.get("schema") != ACK_SCHEMA or not isinstance(ack.get("ids"), list) \
            or not all(isinstance(i, str) and _ALERT_ID.fullmatch(i) for i in ack["ids"]):
        raise HeartSightError(f"acknowledgement is not {ACK_SCHEMA} (an object with a list of alert ids): "
                              f"{bytes(raw[:200])!r}")
    return ack["ids"]
