"""Device-side delivery of explained alerts over MQTT 5: end to end, in order, surviving outages and crashes.

Every alert goes to the on-disk outbox before it is sent and leaves it only when the clinic acknowledges that its store
committed it (sdk.stream.acks); the broker's PUBACK only marks it sent. An alert sent but not acknowledged is published
again on every reconnect and after ACK_TIMEOUT_S, so neither a lost link, a broker or listener that loses messages
nor a killed process loses it; the store deduplicates the resends by alert id (deterministic: sdk.device.alerts).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

from sdk.device.names import check_name
from sdk.errors import HeartSightError
from sdk.stream.acks import read_ack
from sdk.stream.mqtt import BrokerConfig, Connection, json_properties
from sdk.stream.outbox import Backlog, Outbox
from sdk.stream.payload import SCHEMA, validate
from sdk.stream.topics import acks_topic, alerts_topic, head_topic, status_topic

log = logging.getLogger("heartsight.publisher")

# An alert the clinic has not acknowledged this long after the broker took it is published again: a listener stores
# and acknowledges in milliseconds, so a minute means the alert or its acknowledgement was lost (a broker killed
# before saving it, a listener gone for good from a shared group). While no acknowledgement arrives at all (the clinic
# is away and the broker queues for it), the wait doubles up to ACK_TIMEOUT_MAX_S, so the queue does not fill with
# copies.
ACK_TIMEOUT_S = 60.0
ACK_TIMEOUT_MAX_S = 3600.0


class Publisher:
    """Publishes one device's alerts (QoS 1) and its retained online/offline status, with an offline last will, and
    reads the clinic's acknowledgements on its acks topic (a persistent session, so none is lost while away) and the
    head updates the clinic sends it (take_head_update; report_head says what became of one).

    publish() only persists; the connection's network thread hands alerts to MQTT oldest first whenever connected,
    starting with any left in the outbox by an earlier run, and reconnects by itself.
    """

    def __init__(self, broker: BrokerConfig, device: str, site: str = "default", outbox_path: str | Path | None = None,
                 client_id: str | None = None, session_expiry_s: int = 86400, reconnect_max_s: float = 30,
                 ack_timeout_s: float = ACK_TIMEOUT_S):
        check_name("device", device)
        check_name("site", site)
        self.device, self.site, self.username = device, site, broker.username
        self.alerts_topic = alerts_topic(site, device)
        self.status_topic = status_topic(site, device)
        self.acks_topic = acks_topic(site, device)
        self.head_topic = head_topic(site, device)
        self.ack_timeout_s = ack_timeout_s
        self._alert_props = json_properties()
        self._alert_props.UserProperty = [("schema", SCHEMA)]
        self._head_update: bytes | None = None  # the latest head update received and not yet taken
        self._head_report: dict | None = None  # what became of the last one, in every later status
        self._vitals: list[dict] = []  # the last minutes of vitals reported, in every later status
        self._head_lock = threading.Lock()
        self._conn = Connection(broker, client_id or f"heartsight-{site}-{device}",
                                session_expiry_s=session_expiry_s, will=(self.status_topic, self._status("offline")),
                                on_connected=self._on_connected, on_idle=self._hand_over,
                                reconnect_max_s=reconnect_max_s)
        self._conn.client.on_publish = self._on_publish
        self._conn.client.on_subscribe = self._on_subscribe
        self._conn.client.message_callback_add(self.acks_topic, self._on_ack)
        self._conn.client.message_callback_add(self.head_topic, self._on_head)
        self._outbox = Outbox(outbox_path or Path.home() / ".heartsight" / f"outbox-{site}-{device}.sqlite")
        self._in_flight: dict[int, str] = {}  # message id -> alert id, handed to paho and not yet acknowledged
        self._sent: dict[str, float] = {}  # alert id -> when the broker acknowledged it on this connection
        self._wait_s = ack_timeout_s  # the current ack timeout: doubles while the clinic is silent
        self._resend_at = math.inf  # when the first sent alert times out
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
        backlog = self.backlog()
        waiting = (f"{backlog.awaiting_clinic} alert(s) await the clinic's acknowledgement and "
                   f"{backlog.awaiting_broker} the broker's, in {self._outbox.path}")
        if self.connected:
            return (f"connected to {self._conn.url}; {waiting} (unacknowledged alerts are published again on every "
                    f"reconnect and after {self.ack_timeout_s:g} s; a later run with the same outbox resumes)")
        retry = f"; retrying in {self._conn.retry_in_s:g} s (backing off up to {self._conn.reconnect_max_s:g} s)" \
            if self._conn.retry_in_s else ""
        return (f"not connected to {self._conn.url} ({self.last_error or 'connecting'}){retry}; {waiting}: they go "
                "out in order once it is reachable (also from a later run with the same outbox)")

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

    @property
    def head_update_pending(self) -> bool:
        """A head update has arrived and waits for take_head_update."""
        return self._head_update is not None

    def take_head_update(self) -> bytes | None:
        """The latest head update the clinic sent (a signed blob, firmware_export.head_update), once; else None."""
        with self._head_lock:
            blob, self._head_update = self._head_update, None
        return blob

    def report_head(self, report: dict) -> None:
        """Tell the clinic what became of a head update ({"version": ..., "status": "applied"} or "refused" with a
        "reason"): it goes into the retained status, now and at every reconnect."""
        self._head_report = dict(report)
        if self.connected:
            self._conn.client.publish(self.status_topic, self._status("online", len(self._outbox)), qos=1, retain=True,
                                      properties=json_properties())

    def report_vitals(self, vitals: list[dict]) -> None:
        """The minutes of vitals just completed (sdk.device.vitals) go out in the retained status, now and at every
        reconnect until the next report; the clinic keeps each minute once. A best-effort trend, not an alert: minutes
        reported while the broker is away are sent with the next report only if paho still holds them."""
        if not vitals:
            return
        self._vitals = list(vitals)
        if self.connected:
            self._conn.client.publish(self.status_topic, self._status("online", len(self._outbox)), qos=1, retain=True,
                                      properties=json_properties())

    def backlog(self) -> Backlog:
        """The alerts in the outbox: awaiting the broker's acknowledgement, and awaiting the clinic's."""
        return self._outbox.backlog()

    def flush(self, timeout_s: float = 10.0) -> Backlog:
        """Wait until the clinic has acknowledged every alert or timeout_s passes; return what is still in the outbox.

        Raises HeartSightError if delivery cannot succeed: bad credentials, an untrusted certificate, a broker that
        does not let this device read its acks, or alerts the broker refused (e.g. its ACL forbids this topic; they
        stay in the outbox and are retried on the next start).
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
                left = self._outbox.backlog()
                remaining = deadline - time.monotonic()
                if left.total == 0 or remaining <= 0:
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
        if self._head_report is not None:
            status["head"] = self._head_report
        if self._vitals:
            status["vitals"] = self._vitals
        return json.dumps(status).encode()

    # The methods below run on the connection's network thread only.

    def _on_connected(self, session_present: bool) -> None:
        """Subscribe to the acks (again: the broker may have lost the session), say how many alerts wait, and publish
        every unacknowledged alert again, since the broker or the listener may have lost any of them."""
        self._conn.client.subscribe([(self.acks_topic, 1), (self.head_topic, 1)])
        self._conn.client.publish(self.status_topic, self._status("online", len(self._outbox)), qos=1, retain=True,
                                  properties=json_properties())
        self._sent.clear()
        self._new.set()

    def _hand_over(self) -> None:
        """Give paho, in outbox order, the alerts it does not have and those whose acknowledgement is overdue; paho
        keeps and resends what it has until the broker acknowledges it."""
        now = time.monotonic()
        if not self._new.is_set() and now < self._resend_at:
            return
        self._new.clear()
        with_paho = set(self._in_flight.values())
        pending = self._outbox.pending_ids()
        waiting = set(pending)
        self._sent = {alert_id: at for alert_id, at in self._sent.items() if alert_id in waiting}
        overdue = False
        for alert_id in pending:
            if alert_id in with_paho or alert_id in self._rejected:
                continue
            sent_at = self._sent.get(alert_id)
            if sent_at is not None and now - sent_at < self._wait_s:
                continue  # the clinic still has time to acknowledge it
            overdue |= sent_at is not None
            self._sent.pop(alert_id, None)
            info = self._conn.client.publish(self.alerts_topic, self._outbox.payload(alert_id), qos=1,
                                             properties=self._alert_props)
            self._in_flight[info.mid] = alert_id
        if overdue:
            log.warning("the clinic has not acknowledged some alerts within %g s: published them again", self._wait_s)
            self._wait_s = min(2 * self._wait_s, ACK_TIMEOUT_MAX_S)
        self._resend_at = min(self._sent.values(), default=math.inf) + self._wait_s

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        alert_id = self._in_flight.pop(mid, None)
        if alert_id is None:  # a status message
            return
        if reason_code.is_failure:
            log.error("broker refused alert %s on %s: %s", alert_id, self.alerts_topic, reason_code)
            self._rejected[alert_id] = str(reason_code)
        else:
            self._outbox.mark_sent(alert_id)
            now = time.monotonic()
            self._sent[alert_id] = now
            self._resend_at = min(self._resend_at, now + self._wait_s)
        with self._acked:
            self._acked.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if reason_codes and reason_codes[0].is_failure:
            self._conn.fail(HeartSightError(
                f"{self._conn.url} refused the subscription to {self.acks_topic} ({reason_codes[0]}): alerts would "
                f"never leave the outbox; check that the broker's ACL lets user {self.username or '(anonymous)'} "
                "read it"))
        elif len(reason_codes) > 1 and reason_codes[1].is_failure:  # alerts still flow; only updates cannot arrive
            log.warning("%s refused the subscription to %s (%s): this device will not receive head updates; check "
                        "the broker's ACL", self._conn.url, self.head_topic, reason_codes[1])

    def _on_head(self, client, userdata, message) -> None:
        """Keep the latest head update for the device loop to apply (the model is not touched from this thread)."""
        if message.payload:  # an empty retained message clears the topic
            with self._head_lock:
                self._head_update = bytes(message.payload)

    def _on_ack(self, client, userdata, message) -> None:
        """The clinic stored these alerts: they leave the outbox, and the ack timeout is back to its start."""
        try:
            alert_ids = read_ack(message.payload)
        except HeartSightError as exc:
            log.warning("ignored a message on %s: %s", message.topic, exc)
            return
        self._outbox.acknowledge(alert_ids)
        for alert_id in alert_ids:
            self._sent.pop(alert_id, None)
        self._wait_s = self.ack_timeout_s
        self._resend_at = min(self._sent.values(), default=math.inf) + self._wait_s
        with self._acked:
            self._acked.notify_all()
