"""Device-side delivery of explained alerts over MQTT 5: at least once, in order, surviving outages and restarts.

Every alert goes to the on-disk outbox before it is sent and leaves it only on the broker's PUBACK, so neither a
lost link nor a killed process loses it; consumers deduplicate the rare resend by alert id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from sdk.device.names import check_name
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig, Connection, json_properties
from sdk.stream.outbox import Outbox
from sdk.stream.payload import SCHEMA, to_bytes, validate
from sdk.stream.topics import alerts_topic, status_topic

log = logging.getLogger("heartsight.publisher")


class Publisher:
    """Publishes one device's alerts (QoS 1) and its retained online/offline status, with an offline last will.

    publish() only persists; the connection's network thread hands alerts to MQTT oldest first whenever connected,
    starting with any left in the outbox by an earlier run, and reconnects by itself.
    """

    def __init__(self, broker: BrokerConfig, device: str, site: str = "default", outbox_path: str | Path | None = None,
                 client_id: str | None = None, session_expiry_s: int = 86400, reconnect_max_s: float = 30):
        check_name("device", device)
        check_name("site", site)
        self.device, self.site, self.username = device, site, broker.username
        self.alerts_topic = alerts_topic(site, device)
        self.status_topic = status_topic(site, device)
        self._alert_props = json_properties()
        self._alert_props.UserProperty = [("schema", SCHEMA)]
        self._conn = Connection(broker, client_id or f"heartsight-{site}-{device}",
                                session_expiry_s=session_expiry_s, will=(self.status_topic, self._status("offline")),
                                on_connected=self._on_connected, on_idle=self._hand_over,
                                reconnect_max_s=reconnect_max_s)
        self._conn.client.on_publish = self._on_publish
        self._outbox = Outbox(outbox_path or Path.home() / ".heartsight" / f"outbox-{site}-{device}.sqlite")
        self._in_flight: dict[int, str] = {}  # message id -> alert id, handed to paho and not yet acknowledged
        self._rejected: dict[str, str] = {}  # alert id -> the broker's reason
        self._new = threading.Event()  # the outbox may hold alerts not yet handed over
        self._acked = threading.Condition()
        self._conn.start()

    @property
    def connected(self) -> bool:
        return self._conn.connected.is_set()

    @property
    def last_error(self) -> str | None:
        """Why the broker is not reachable right now, if known (e.g. connection refused)."""
        return self._conn.last_error

    def status(self) -> str:
        """One line for people: connected, or why not and when the next attempt is, and what waits on disk."""
        queued = self.pending()
        if self.connected:
            return f"connected to {self._conn.url}; {queued} alert(s) not yet acknowledged"
        retry = f"; retrying in {self._conn.retry_in_s:g} s (backing off up to {self._conn.reconnect_max_s:g} s)" \
            if self._conn.retry_in_s else ""
        return (f"not connected to {self._conn.url} ({self.last_error or 'connecting'}){retry}; {queued} alert(s) "
                f"wait in {self._outbox.path} and go out in order once it is reachable (also from a later run "
                "with the same outbox)")

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """True once connected, False on timeout; HeartSightError for bad credentials or an untrusted certificate."""
        return self._conn.wait_connected(timeout_s)

    def publish(self, alert: dict) -> None:
        """Validate and persist; it is sent when connected. An unreachable broker is not an error: the alert waits.

        Raises HeartSightError for an invalid alert or one of another device, and, after persisting the alert,
        if the broker refused this device for good (bad credentials, untrusted certificate).
        """
        validate(alert)
        if (alert["site"], alert["device"]) != (self.site, self.device):
            raise HeartSightError(f"alert is for site {alert['site']} device {alert['device']}, but this publisher "
                                  f"is site {self.site} device {self.device}: use one Publisher per device")
        if self._outbox.put(alert):
            self._new.set()
        self._conn.raise_if_failed()

    def pending(self) -> int:
        """Alerts not yet acknowledged by the broker."""
        return len(self._outbox)

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait until the broker has acknowledged every alert or timeout_s passes; return how many are still queued.

        Raises HeartSightError if delivery cannot succeed: bad credentials, an untrusted certificate, or alerts the
        broker refused (e.g. its ACL forbids this topic; they stay in the outbox and are retried on the next start).
        """
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while True:
                self._conn.raise_if_failed()
                rejected = dict(self._rejected)  # written by the network thread
                if rejected:
                    alert_id, reason = next(iter(rejected.items()))
                    raise HeartSightError(f"the broker refused {len(rejected)} alert(s) on {self.alerts_topic} "
                                          f"(alert {alert_id}: {reason}): check that its ACL lets user "
                                          f"{self.username or '(anonymous)'} write there")
                left = len(self._outbox)
                remaining = deadline - time.monotonic()
                if left == 0 or remaining <= 0:
                    return left
                self._acked.wait(min(remaining, 0.2))

    def close(self) -> None:
        """Announce "offline" (retained) if connected, disconnect, close the outbox; unsent alerts stay on disk."""
        self._conn.stop(goodbye=(self.status_topic, self._status("offline")))
        self._outbox.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _status(self, state: str, queued: int | None = None) -> bytes:
        """The retained status; "online" also says how many alerts wait to go out, so a backlog after an outage
        shows to whoever watches the fleet."""
        status = {"device": self.device, "site": self.site, "state": state}
        if queued is not None:
            status["queued"] = queued
        return json.dumps(status).encode()

    # The methods below run on the connection's network thread only.

    def _on_connected(self, session_present: bool) -> None:
        self._conn.client.publish(self.status_topic, self._status("online", len(self._outbox)), qos=1, retain=True,
                                  properties=json_properties())
        self._new.set()

    def _hand_over(self) -> None:
        """Give paho, in outbox order, the alerts it does not have yet; it keeps and resends them until acked."""
        if not self._new.is_set():
            return
        self._new.clear()
        with_paho = set(self._in_flight.values())
        for alert in self._outbox.pending():
            if alert["id"] not in with_paho and alert["id"] not in self._rejected:
                info = self._conn.client.publish(self.alerts_topic, to_bytes(alert), qos=1,
                                                 properties=self._alert_props)
                self._in_flight[info.mid] = alert["id"]

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        alert_id = self._in_flight.pop(mid, None)
        if alert_id is None:  # a status message
            return
        if reason_code.is_failure:
            log.error("broker refused alert %s on %s: %s", alert_id, self.alerts_topic, reason_code)
            self._rejected[alert_id] = str(reason_code)
        else:
            self._outbox.mark_acked(alert_id)
        with self._acked:
            self._acked.notify_all()
