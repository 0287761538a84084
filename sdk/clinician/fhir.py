"""FHIR R4 Observations of alerts: the excerpt and the saliency trace as SampledData, checked against the FHIR model.

A confirmed (or relabelled) alert is a clinician's finding and goes out with status "final" and the clinician's label;
an alert nobody has judged is "preliminary". Every resource is validated with fhir.resources (its R4B models: R4B
is R4 with corrections and leaves Observation, SampledData and Bundle as R4 has them), so what leaves the clinic is a
resource any FHIR server accepts, or an error here.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from sdk.errors import HeartSightError
from sdk.stream.payload import decode_array

UCUM = "http://unitsofmeasure.org"
EXPORTED_ACTIONS = ("confirm", "relabel")  # verdicts that make an alert a clinician's finding


def to_fhir_observation(alert: dict, verdict: dict | None = None) -> dict:
    """An Observation of one alert, validated; verdict: its latest audit-log entry (sdk.clinician.store), if any."""
    signal, trace, model = alert["signal"], alert["trace"], alert["model"]
    period_ms = 1000.0 / signal["fs"]
    ecg = alert["type"] != "hr_out_of_range"  # heart-rate alerts carry PPG, in the sensor's own units
    unit = {"value": 0, "unit": "mV", "system": UCUM, "code": "mV"} if ecg else \
        {"value": 0, "unit": "1", "system": UCUM, "code": "1"}
    code = ({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.24", "code": "131328", "display": "MDC_ECG_ELEC_POTL"}],
             "text": f"ECG excerpt of a {alert['type']} alert"} if ecg else
            {"text": f"PPG excerpt of a {alert['type']} alert (sensor units)"})
    components = [
        {"code": {"text": "alert type"}, "valueString": alert["type"]},
        {"code": {"text": "model label"}, "valueString": alert["label"]},
        {"code": {"text": "model confidence"},
         "valueQuantity": {"value": alert["confidence"], "unit": "1", "system": UCUM, "code": "1"}},
        {"code": {"text": "saliency trace, aligned with the excerpt"},
         "valueSampledData": _sampled_data(trace, period_ms, {"value": 0, "unit": "1", "system": UCUM, "code": "1"})},
    ]
    notes = [{"text": f"model {model['name']} {model['version']} ({model['backend']}, head version "
                      f"{model.get('head_version', 0)}), sha256 {model['sha256']}; event at sample "
                      f"{alert['sample_index']}"}]
    final = verdict is not None and verdict["action"] in EXPORTED_ACTIONS
    if final:
        components.append({"code": {"text": "clinician label"}, "valueString": verdict["label_after"]})
        judged = "confirmed" if verdict["action"] == "confirm" else f"relabelled {verdict['label_after']}"
        note = f": {verdict['note']}" if verdict["note"] else ""
        notes.append({"text": f"{judged} by {verdict['reviewer']}{note}", "authorString": verdict["reviewer"],
                      "time": _instant(verdict["at"])})
    return _validated(Observation, {
        "resourceType": "Observation",
        "id": alert["id"],
        "identifier": [{"system": "urn:heartsight:alert", "value": alert["id"]}],
        "status": "final" if final else "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "procedure", "display": "Procedure"}]}],
        "code": code,
        "device": {"identifier": {"system": "urn:heartsight:device", "value": alert["device"]},
                   "display": f"{alert['device']} at {alert['site']}"},
        "effectiveDateTime": alert["time"],
        "valueSampledData": _sampled_data(signal, period_ms, unit),
        "component": components,
        "note": notes,
    })


def confirmed_bundle(judged: list[tuple[dict, dict]]) -> dict:
    """A FHIR collection Bundle of the Observations of alerts whose latest verdict confirms or relabels them;
    judged: (alert, latest verdict) pairs."""
    entries = [{"fullUrl": f"urn:uuid:{_uuid(alert['id'])}", "resource": to_fhir_observation(alert, verdict)}
               for alert, verdict in judged if verdict["action"] in EXPORTED_ACTIONS]
    return _validated(Bundle, {"resourceType": "Bundle", "type": "collection",
                               "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "entry": entries})


def _validated(model, resource: dict) -> dict:
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HeartSightError(f"the FHIR {resource['resourceType']} of this alert is invalid at {where}: "
                              f"{first['msg']}; the alert holds a value FHIR cannot carry") from None
    return resource


def _sampled_data(encoded: dict, period_ms: float, origin: dict) -> dict:
    steps = np.rint(decode_array(encoded) / encoded["scale"]).astype(int)
    return {"origin": origin, "period": period_ms, "factor": encoded["scale"], "dimensions": 1,
            "data": " ".join(map(str, steps))}


def _instant(text: str) -> str:
    """An audit-log time as a FHIR instant (seconds, with the zone)."""
    return datetime.fromisoformat(text).astimezone(timezone.utc).isoformat(timespec="seconds")


def _uuid(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"
