"""One device's day for the clinician: heart-rate trend, ectopy burden per hour and AF episodes.

Heart rate and burden come from the vitals devices report each minute (sdk.device.vitals, kept by the listener);
a device that reports none still gets its burden counted from its beat alerts, which are rate-limited and so a
lower bound, and the page says which it is. AF episodes come from the af_start and af_end alerts; an onset a
clinician rejected is no episode.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from sdk.clinician.store import BEAT_ALERTS, MAX_LIST, Store

HOUR_S = 3600


def device_timeline(store: Store, device: str) -> dict:
    """{"hr": [[ISO time, bpm], ...], "burden": [{"hour", "ectopic", "beats", "per_hour", "source"}], "af": [{"start",
    "end" (None: still going), "duration_s"}], "vitals_minutes", "alerts"}."""
    vitals = store.vitals(device)
    alerts = list(reversed(store.list_alerts(device=device, limit=MAX_LIST)))  # oldest first
    return {"device": device, "hr": [[v["start"], v["hr_bpm"]] for v in vitals if v["hr_bpm"] is not None],
            "burden": _burden_from_vitals(vitals) if vitals else _burden_from_alerts(alerts),
            "af": af_episodes(alerts), "vitals_minutes": len(vitals), "alerts": len(alerts)}


def af_episodes(alerts: list[dict]) -> list[dict]:
    """AF onsets paired with the next end, oldest first; alerts: summaries in time order (Store.list_alerts)."""
    episodes, start = [], None
    for alert in alerts:
        if alert["status"] == "rejected":
            continue
        if alert["type"] == "af_start" and start is None:
            start = alert["time"]
        elif alert["type"] == "af_end" and start is not None:
            episodes.append(_episode(start, alert["time"]))
            start = None
    if start is not None:
        episodes.append(_episode(start, None))
    return episodes


def _episode(start: str, end: str | None) -> dict:
    duration = None if end is None else (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return {"start": start, "end": end, "duration_s": duration}


def _burden_from_vitals(vitals: list[dict]) -> list[dict]:
    """S and V beats per hour of reported minutes, with every beat counted (so a share can be drawn)."""
    ectopic, beats, seconds = defaultdict(int), defaultdict(int), defaultdict(float)
    for entry in vitals:
        hour = _hour(entry["start"])
        counts = entry["beats"]
        ectopic[hour] += counts.get("S", 0) + counts.get("V", 0)
        beats[hour] += sum(counts.values())
        seconds[hour] += entry["period_s"]
    return [{"hour": hour, "ectopic": ectopic[hour], "beats": beats[hour],
             "per_hour": round(ectopic[hour] * HOUR_S / seconds[hour], 1), "source": "vitals"}
            for hour in sorted(beats)]


def _burden_from_alerts(alerts: list[dict]) -> list[dict]:
    ectopic = defaultdict(int)
    for alert in alerts:
        if alert["type"] in BEAT_ALERTS and alert["status"] != "rejected":
            ectopic[_hour(alert["time"])] += 1
    return [{"hour": hour, "ectopic": count, "beats": None, "per_hour": count, "source": "alerts (a lower bound)"}
            for hour, count in sorted(ectopic.items())]


def _hour(text: str) -> str:
    """The UTC hour an ISO time falls in, as ISO text."""
    moment = datetime.fromisoformat(text).astimezone(timezone.utc)
    return moment.replace(minute=0, second=0, microsecond=0).isoformat()
