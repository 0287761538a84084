"""Clinician-side receiver: takes alerts off the broker, checks them, stores each once and tells its device.

The alerts that have come when the socket runs dry (at most MAX_BATCH) are stored in one transaction: a commit per
alert would cap a listener at about 1,700 alerts/s, while a light load still gets each alert committed at once. A
message is acknowledged to the broker only after its batch is committed (or it is dead-lettered), so a crash or a
database failure leaves it at the broker for redelivery; the broker keeps this listener's session (and queues alerts
for it) while it is away. Once an alert is committed, even as a duplicate, its device is told on its acks topic
(sdk.stream.acks), so that the alert can leave the device's outbox.

Nothing in a payload can crash the listener or make one device write as another: a payload must pass the schema
and name the same site and device as the topic it came on (which the broker's ACL ties to the device's credentials),
or it goes to dead letters with the reason.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Callable

from sdk.clinician.store import Store, UnstorableAlert
from sdk.errors import HeartSightError
from sdk.stream.acks import ack_bytes
from sdk.stream.mqtt import BrokerConfig, Connection, json_properties
from sdk.stream.payload import from_bytes, validate, validate_status
from sdk.stream.topics import acks_topic, alerts_filter, alerts_topic, sender, status_filter

log = logging.getLogger("heartsight.listener")
DRAIN_S = 2.0  # at a stop, how long to wait for the alerts stored so far to be acknowledged to the broker
MAX_PAYLOAD_BYTES = 2_000_000  # ~10 minutes of 1 kHz int16 signal and trace: far beyond any real alert
MAX_BATCH = 200  # alerts per transaction: a full batch is committed at once, so checking and storing one (~0.2 ms
# each) bounds how long the first waits for its commit


def default_client_id(broker: BrokerConfig, shared_group: str | None = None) -> str:
    """heartsight-listener[-<user>][-<group>]: the same at every start, so the broker keeps the session for it."""
    return "-".join(["heartsight-listener", *filter(None, [broker.username, shared_group])])


class Listener:
    """Subscribes (QoS 1, MQTT 5) to every device's alerts, or shares them with other listeners of shared_group.

    The broker keeps this listener's session (and queues alerts for it) for session_expiry_s while it is away, under
    client_id: by default heartsight-listener[-<user>][-<group>], the same at every start. Two listeners with one id
    would take the session from each other, so listeners of one account in one shared group each need their own.
    """

    def __init__(self, broker: BrokerConfig, store: Store, shared_group: str | None = None,
                 client_id: str | None = None, session_expiry_s: int = 86400):
        self.store = store
        self.topic_filter = alerts_filter(shared_group)
        self.status_filter = status_filter(shared_group)
        self.counts = {"stored": 0, "duplicates": 0, "dead_letters": 0, "statuses": 0}
        self._conn = Connection(broker, client_id or default_client_id(broker, shared_group),
                                session_expiry_s=session_expiry_s, on_connected=self._on_connected,
                                on_idle=self._acknowledge, manual_ack=True)
        self._conn.client.on_subscribe = self._on_subscribe
        self._conn.client.on_message = self._on_message
        self._conn.client.on_publish = self._on_ack_published
        self._subscribed = False
        self._ack_props = json_properties()
        # This network round's messages not stored yet: (topic, payload, message id, QoS).
        self._pending: list[tuple[str, bytes, int, int]] = []
        # This network round's messages, stored or dead-lettered: (message id, QoS), and the alert ids per device.
        self._handled: list[tuple[int, int]] = []
        self._committed: dict[tuple[str, str], list[str]] = {}
        # Earlier rounds: the message ids of their acknowledgements the broker has not confirmed yet, and their
        # messages, which the broker may release only then.
        self._rounds: list[tuple[set[int], list[tuple[int, int]]]] = []

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe in the background; raises HeartSightError if not subscribed within timeout_s."""
        self._conn.start()
        deadline = time.monotonic() + timeout_s
        while not self._subscribed:
            if self._conn.error is not None or time.monotonic() >= deadline:
                self._conn.stop()
                self._conn.raise_if_failed()
                raise HeartSightError(f"could not subscribe at {self._conn.url} within {timeout_s:g} s "
                                      f"({self._conn.last_error or 'no answer'}): check the broker address and "
                                      "that it is running")
            time.sleep(0.02)

    def stop(self) -> dict:
        """Disconnect once what was stored is acknowledged to the broker (waiting at most DRAIN_S: past that, the
        broker redelivers it to the next session, which the store deduplicates); the counts so far. Raises
        HeartSightError if the listener had to stop on an error."""
        deadline = time.monotonic() + DRAIN_S
        while (self._pending or self._handled or self._rounds or self._conn.client.want_write()) \
                and self._conn.connected.is_set() and self._conn.error is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the network loop acknowledges, then writes the acknowledgements out
        self._conn.stop()
        self._conn.raise_if_failed()
        return dict(self.counts)

    def run(self, duration_s: float | None = None, stop_when: Callable[[], bool] | None = None) -> dict:
        """Listen in the foreground until duration_s passes or stop_when() is true (forever if neither); the counts."""
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while self._conn.error is None:
                if stop_when is not None and stop_when():
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        finally:
            counts = self.stop()
        return counts

    def _on_connected(self, session_present: bool) -> None:
        # the broker redelivers what was not acknowledged
        self._pending, self._handled, self._committed, self._rounds = [], [], {}, []
        self._conn.client.subscribe([(self.topic_filter, 1), (self.status_filter, 1)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            self._conn.fail(HeartSightError(f"{self._conn.url} refused the subscription to {self.topic_filter} or "
                                            f"{self.status_filter} ({failed[0]}): check that the broker's ACL lets "
                                            "this user read both"))
        else:
            self._subscribed = True

    def _on_message(self, client, userdata, message) -> None:
        self._pending.append((message.topic, message.payload, message.mid, message.qos))
        if len(self._pending) >= MAX_BATCH:
            self._store_pending()

    def _store_pending(self) -> None:
        """Store the messages gathered so far, their alerts in one transaction. If the store fails, none of them is
        acknowledged: the listener stops and the broker redelivers them to its next session."""
        messages, self._pending = self._pending, []
        if not messages or self._conn.error is not None:
            return
        try:
            outcomes = self._handle_batch([(topic, raw) for topic, raw, _, _ in messages])
        except Exception as exc:
            self._conn.fail(HeartSightError(f"could not store a batch of {len(messages)} message(s) (the first from "
                                            f"{messages[0][0]}): {exc}; each stays unacknowledged at the broker"))
            return
        for outcome in outcomes:
            self.counts[outcome] += 1
        self._handled += [(mid, qos) for _, _, mid, qos in messages]

    def _acknowledge(self) -> None:
        """After a network round, its messages stored: one acknowledgement (QoS 1) to each device listing its
        alerts. The messages are acknowledged to the broker (PUBACK) only once it has those, so a crash in between
        costs a redelivery, which the store deduplicates and acknowledges again, never a lost acknowledgement.

        While more messages wait in the socket, the batch waits for them (up to MAX_BATCH): paho reads only as many
        packets in a round as it has messages of its own in flight, often one, and a commit per message would cap the
        listener far below what one commit per MAX_BATCH allows."""
        if not self._more_to_read():  # _on_message stores a full batch itself
            self._store_pending()
        if not self._handled:
            return
        acks = {self._conn.client.publish(acks_topic(site, device), ack_bytes(alert_ids), qos=1,
                                          properties=self._ack_props).mid
                for (site, device), alert_ids in self._committed.items()}
        self._rounds.append((acks, self._handled))
        self._handled, self._committed = [], {}
        self._release()

    def _more_to_read(self) -> bool:
        """True if the broker has sent bytes that paho has not read yet."""
        sock = self._conn.client.socket()
        return sock is not None and bool(select.select([sock], [], [], 0)[0])

    def _on_ack_published(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("the broker refused an acknowledgement (%s): devices keep their stored alerts and send them "
                      "again; check that its ACL lets this clinician write heartsight/v1/+/+/acks", reason_code)
        for acks, _ in self._rounds:
            acks.discard(mid)
        self._release()

    def _release(self) -> None:
        """PUBACK the messages of the rounds whose acknowledgements the broker has, oldest round first."""
        while self._rounds and not self._rounds[0][0]:
            for mid, qos in self._rounds.pop(0)[1]:
                self._conn.client.ack(mid, qos)

    def _handle(self, topic: str, raw: bytes) -> str:
        """_handle_batch of one message (what the payload tests feed the listener without a broker)."""
        return self._handle_batch([(topic, raw)])[0]

    def _handle_batch(self, messages: list[tuple[str, bytes]]) -> list[str]:
        """stored, duplicates, statuses or dead_letters for each (topic, payload). Only a store that is down or broken
        raises (the messages are then redelivered): whatever is wrong with a message itself is dead-lettered, or it
        would be retried forever, and the rest of its batch is stored."""
        outcomes: list[str | None] = [None] * len(messages)
        alerts: list[tuple[int, dict]] = []
        for i, (topic, raw) in enumerate(messages):
            if sender(topic, "status") is not None:
                outcomes[i] = self._handle_status(topic, raw)
                continue
            try:
                alerts.append((i, _checked(topic, raw)))
            except HeartSightError as exc:
                outcomes[i] = self._dead_letter(topic, raw, str(exc))
            except Exception as exc:  # a check that breaks is still about this message, never about the store
                log.exception("checking a message from %s failed", topic)
                outcomes[i] = self._dead_letter(topic, raw, f"checking the payload failed ({exc!r}): a HeartSight bug; "
                                                            "report it with this dead letter's raw payload")
        try:
            stored = self.store.add_many([alert for _, alert in alerts])
        except UnstorableAlert:  # one alert's content is refused: store them one by one to dead-letter only it
            stored = []
            for i, alert in alerts:
                try:
                    stored.append(self.store.add(alert))
                except UnstorableAlert as exc:
                    stored.append(None)
                    outcomes[i] = self._dead_letter(*messages[i], str(exc))
        for (i, alert), new in zip(alerts, stored):
            if new is not None:
                self._committed.setdefault((alert["site"], alert["device"]), []).append(alert["id"])
                outcomes[i] = "stored" if new else "duplicates"
        return outcomes

    def _handle_status(self, topic: str, raw: bytes) -> str:
        """A device's status: its state and vitals are kept (sdk.device.vitals); a bad one is dead-lettered."""
        try:
            status = from_bytes(raw)
            validate_status(status)
            if sender(topic, "status") != (status["site"], status["device"]):
                raise HeartSightError(f"status says site {status['site']} device {status['device']} but came on "
                                      f"{topic}")
            self.store.add_status(status)
        except (HeartSightError, ValueError) as exc:  # ValueError: a time the database cannot hold
            return self._dead_letter(topic, raw, str(exc))
        return "statuses"

    def _dead_letter(self, topic: str, raw: bytes, reason: str) -> str:
        log.warning("dead letter from %s: %s", topic, reason)
        self.store.add_dead_letter(topic, raw, reason)
        return "dead_letters"


def _checked(topic: str, raw: bytes) -> dict:
    """The alert in raw, or HeartSightError saying why it cannot be stored: size, JSON, schema, topic."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise HeartSightError(f"payload of {len(raw):,} bytes exceeds the {MAX_PAYLOAD_BYTES:,}-byte limit "
                              "(an alert's excerpt is seconds of signal, not minutes)")
    alert = from_bytes(raw)
    validate(alert)
    _check_topic(topic, alert)
    return alert


def _check_topic(topic: str, alert: dict) -> None:
    """The topic is what the broker authorised; the payload must not claim another site or device."""
    if sender(topic) != (alert["site"], alert["device"]):
        raise HeartSightError(f"payload says site {alert['site']} device {alert['device']} but came on {topic}: "
                              f"a device may publish only on {alerts_topic('<its site>', '<its device>')}")
