"""`heartsight clinician recalibrate`: refit one patient's head from the clinicians' verdicts on their device's alerts,
and send it to the device over MQTT, without reflashing.

Each judged beat alert carries the embedding its beat gave the device's head (details.embedding, from hs_last_sums);
its label is the verdict's (a rejected ectopy is taken as a normal beat). The head is refitted in closed form on the
population's beats (the model's training patients, MIT-BIH DS1, embedded by the same int8 model:
sdk.device.recalibration.population) and the patient's, weighted as the model's card says (adaptation_settings), re-quantized for the device's
backbone (firmware_export.head_update), signed with the device's key, published retained on the device's head topic
and recorded in the store with its version.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np

from firmware_export.artifact import Int8Artifact
from firmware_export.head_update import encode, requantized_head
from models.closed_form_head import patient_head
from sdk.clinician.store import BEAT_ALERTS, Store
from sdk.device.backends import int8_model, int8_runner
from sdk.device.recalibration import adaptation_settings, population
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig, Connection
from sdk.stream.topics import head_topic

MIN_BEATS_PER_CLASS = 3  # a class the clinicians named needs this many judged beats to weigh in the patient's head
PUBLISH_TIMEOUT_S = 10.0


def patient_beats(store: Store, site: str, device: str, model: Int8Artifact) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, class indices) of the device's judged beat alerts made by this model."""
    classes = model.spec.outputs
    judged = [(alert, label) for alert, label in store.adjudicated(site, device) if alert["type"] in BEAT_ALERTS]
    if not judged:
        raise HeartSightError(f"device {site}/{device} has no judged beat alerts in {store.target}; confirm, reject or "
                              "relabel some first (`heartsight clinician adjudicate`)")
    other = {alert["model"]["sha256"] for alert, _ in judged} - {model.sha256}
    if other:
        raise HeartSightError(f"device {site}/{device}'s alerts were made by another model (sha256 "
                              f"{sorted(other)[0][:12]}…), not {model.name} ({model.sha256[:12]}…); pass the export the "
                              "device runs as --model")
    missing = sum("embedding" not in alert["details"] for alert, _ in judged)
    if missing:
        raise HeartSightError(f"{missing} judged alert(s) of {site}/{device} carry no embedding (made before devices "
                              "sent them); the head can only be refitted from alerts that do")
    counts = Counter(label for _, label in judged)
    scarce = {label: n for label, n in counts.items() if n < MIN_BEATS_PER_CLASS}
    if scarce:
        raise HeartSightError(f"too few judged beats to refit {site}/{device}'s head: "
                              f"{', '.join(f'{label} {n}' for label, n in sorted(scarce.items()))}; each class the "
                              f"verdicts name needs at least {MIN_BEATS_PER_CLASS} (judge more alerts)")
    embeddings = np.array([alert["details"]["embedding"] for alert, _ in judged], np.float64)
    if embeddings.shape[1] != model.quantized.head_weight.shape[1]:
        raise HeartSightError(f"the alerts' embeddings have {embeddings.shape[1]} values, {model.name}'s head reads "
                              f"{model.quantized.head_weight.shape[1]}; pass the export the device runs as --model")
    return embeddings, np.array([classes.index(label) for _, label in judged])


def recalibrate(store: Store, site: str, device: str, model="ecg_beat_wcam", broker: BrokerConfig | None = None,
                data_root=None) -> dict:
    """Fit, sign and record the device's next head; publish it when a broker is given. Returns a summary."""
    artifact = int8_model(model)
    if artifact.spec.task != "beat":
        raise HeartSightError(f"recalibration refits beat models' heads; {artifact.name} is a {artifact.spec.task} model")
    key = store.device_key(site, device)
    patient_x, patient_y = patient_beats(store, site, device, artifact)
    population_x, population_y = population(int8_runner(artifact, "c"), data_root)
    weight, bias = patient_head((population_x, population_y), (patient_x, patient_y), artifact.spec.outputs,
                                **adaptation_settings(artifact.card))
    version = store.head_version(site, device) + 1
    update = requantized_head(artifact.quantized, weight, bias, np.r_[population_x, patient_x], version)
    blob = encode(update, key)
    if broker is not None:
        publish_head(broker, site, device, blob)
    store.add_head_update(site, device, version, artifact.sha256, len(patient_y), blob)
    return {"site": site, "device": device, "model": artifact.name, "version": version, "bytes": len(blob),
            "beats": dict(sorted(Counter(artifact.spec.outputs[k] for k in patient_y).items())),
            "published": broker is not None, "topic": head_topic(site, device)}


def publish_head(broker: BrokerConfig, site: str, device: str, blob: bytes, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
    """Publish a head update retained (QoS 1) on the device's head topic and wait for the broker to take it."""
    topic, acknowledged, outcome = head_topic(site, device), threading.Event(), {}

    def send(session_present: bool) -> None:
        connection.client.publish(topic, blob, qos=1, retain=True)

    def published(client, userdata, mid, reason_code, properties) -> None:
        outcome["reason"] = reason_code
        acknowledged.set()

    connection = Connection(broker, f"heartsight-recalibrate-{site}-{device}", on_connected=send)
    connection.client.on_publish = published
    connection.start()
    try:
        if not connection.wait_connected(timeout_s) or not acknowledged.wait(timeout_s):
            raise HeartSightError(f"could not publish the head update to {broker.url} within {timeout_s:g} s "
                                  f"({connection.last_error or 'no acknowledgement'}); it was not recorded, run again")
        if outcome["reason"].is_failure:
            raise HeartSightError(f"{broker.url} refused the head update on {topic} ({outcome['reason']}); check that "
                                  "this account may publish to devices' head topics")
    finally:
        connection.stop()
