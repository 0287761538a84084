"""What clinicians read offline: static HTML review pages and a JSON-lines export of stored alerts (the live app is
sdk.clinician.web, FHIR export sdk.clinician.fhir).

Every piece of text on the pages comes from device payloads, so all of it is HTML-escaped, and none of what a store
may hold (text UTF-8 cannot write, numbers matplotlib cannot draw) stops the pages from being written.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np
from matplotlib.figure import Figure

from sdk.clinician.store import Store
from sdk.errors import HeartSightError
from sdk.stream.payload import decode_array

_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")  # control, lone surrogate
_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}section{margin:2em 0}"
          "img{max-width:100%}code{font-size:.9em}")


def write_review(store: Store, out_dir: str | Path) -> list[Path]:
    """index.html plus one page per device, newest alert first, each with a PNG under png/; the pages, index first."""
    out = Path(out_dir)
    (out / "png").mkdir(parents=True, exist_ok=True)
    by_device = {device: store.alerts(device) for device in store.devices()}
    index = out / "index.html"
    index.write_text(_html("HeartSight alerts", _device_table(by_device) + _dead_letter_table(store.dead_letters())),
                     encoding="utf-8")
    pages = []
    for device, alerts in by_device.items():
        sections = []
        for alert in reversed(alerts):  # newest first
            png = Path("png") / f"{_file_name(alert['id'])}.png"
            sections.append(_alert_section(alert, png, _plot(alert, out / png), store.adjudications(alert["id"])))
        page = out / _device_page(device)
        page.write_text(_html(f"Device {device}", f'<p><a href="index.html">All devices</a></p>'
                              f"<p>{len(alerts)} alert(s)</p>{''.join(sections)}"), encoding="utf-8")
        pages.append(page)
    return [index, *pages]


def export_jsonl(store: Store, device: str | None = None) -> Iterator[str]:
    """One JSON line per alert, arrays decoded to plain numbers in real units (signal in mV); strictly JSON."""
    for alert in store.alerts(device):
        yield _strict_json(alert["id"], {
            "id": alert["id"], "device": alert["device"], "site": alert["site"], "type": alert["type"],
            "time": alert["time"], "sample_index": alert["sample_index"], "label": alert["label"],
            "confidence": alert["confidence"], "model": alert["model"], "details": alert["details"],
            "fs": alert["signal"]["fs"], "start_sample": alert["signal"]["start_sample"],
            "signal": plain_values(decode_array(alert["signal"])), "trace": plain_values(decode_array(alert["trace"])),
        })


def _strict_json(alert_id: str, value: dict) -> str:
    """JSON without NaN or Infinity, which JSON readers refuse; only a store filled before the listener refused them
    can hold one."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        raise HeartSightError(f"alert {alert_id} holds NaN or an infinite number, which JSON cannot carry: it was "
                              "stored before HeartSight refused them; delete it from the store to export") from None


def _plot(alert: dict, path: Path) -> str | None:
    """Draw the alert's PNG; None, or why there is none instead of raising, for numbers matplotlib cannot draw (an fs
    of 5e-324 Hz makes the time axis infinite, values near the largest float overflow its axis arithmetic)."""
    try:
        with np.errstate(all="ignore"):  # numpy's overflows end in matplotlib's ValueError
            _draw(alert, path)
    except (ValueError, OverflowError) as exc:
        return f"No plot: matplotlib cannot draw this excerpt ({exc}); `heartsight clinician export` gives its values."
    return None


def _draw(alert: dict, path: Path) -> None:
    """ECG excerpt in black over the saliency trace as a filled area on its own axis; the event as a line."""
    signal, trace = decode_array(alert["signal"]), decode_array(alert["trace"])
    fs = alert["signal"]["fs"]
    t = np.arange(len(signal)) / fs
    fig = Figure(figsize=(10, 2.4), dpi=100)
    ecg = fig.add_subplot()
    saliency = ecg.twinx()
    saliency.fill_between(t, 0, trace, color="tab:red", alpha=0.3, linewidth=0)
    saliency.set_ylabel("saliency", color="tab:red")
    ecg.plot(t, signal, color="black", linewidth=0.8)
    ecg.set_zorder(saliency.get_zorder() + 1)  # the ECG stays readable on top of the filled trace
    ecg.patch.set_visible(False)
    event = (alert["sample_index"] - alert["signal"]["start_sample"]) / fs
    if 0 <= event <= t[-1]:
        ecg.axvline(event, color="tab:blue", linewidth=1, linestyle="--")
    ecg.set_xlim(0, t[-1] if len(t) > 1 else 1 / fs)
    ecg.set_xlabel("seconds from excerpt start")
    ecg.set_ylabel("PPG (arbitrary units)" if alert["type"] == "hr_out_of_range" else "ECG (mV)")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _alert_section(alert: dict, png: Path, no_plot: str | None, verdicts: list[dict]) -> str:
    e = _escape
    model = alert["model"]
    details = {k: v for k, v in alert["details"].items() if k != "embedding"}  # numbers for the head, not for people
    rows = [("type", alert["type"]), ("time", alert["time"]), ("label", alert["label"]),
            ("confidence", f"{alert['confidence']:.2f}"), ("model", f"{model['name']} {model['version']}"),
            ("model sha256", model["sha256"][:12]), ("backend", model["backend"]),
            ("head version", model.get("head_version", 0)), ("details", details_text(details)),
            ("alert id", alert["id"])]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    figure = (f"<p>{e(no_plot)}</p>" if no_plot else
              f'<img src="{e(png.as_posix())}" alt="{e("ECG excerpt and saliency trace of alert " + alert["id"])}">')
    return (f'<section id="{e(alert["id"])}"><h2>{e(alert["time"])}: {e(alert["type"])}</h2><table>{table}</table>'
            f"{figure}{_verdicts(alert, verdicts)}</section>")


def _verdicts(alert: dict, verdicts: list[dict]) -> str:
    """The alert's verdicts so far (the audit log), and how to add one: these pages are static files."""
    e = _escape
    log = "".join(f"<li>{e(v['at'])} {e(v['reviewer'])}: {e(v['action'])} {e(v['label_before'])} → "
                  f"{e(v['label_after'])}{' (' + e(v['note']) + ')' if v['note'] else ''}</li>" for v in verdicts)
    command = (f"heartsight clinician adjudicate {alert['id']} --db DB --reviewer NAME "
               "--confirm | --reject | --relabel LABEL [--note TEXT]")
    return (f"<h3>Verdict</h3>{'<ul>' + log + '</ul>' if log else '<p>not judged yet</p>'}"
            f"<p>Judge it: <code>{e(command)}</code></p>")


def details_text(details: dict) -> str:
    """JSON, or Python's notation for the NaN and infinities that a store filled before the listener refused them
    can hold."""
    try:
        return json.dumps(details, sort_keys=True, allow_nan=False)
    except ValueError:
        return repr(details)


def _device_table(by_device: dict[str, list[dict]]) -> str:
    e = _escape
    rows = "".join(f'<tr><td><a href="{e(_device_page(device))}">{e(device)}</a></td>'
                   f"<td>{e(', '.join(sorted({a['site'] for a in alerts})))}</td><td>{len(alerts)}</td>"
                   f"<td>{e(alerts[-1]['time'])}</td></tr>" for device, alerts in by_device.items())
    return ("<h2>Devices</h2><table><tr><th>device</th><th>site</th><th>alerts</th><th>latest</th></tr>"
            f"{rows}</table>")


def _dead_letter_table(dead: list[dict]) -> str:
    """Rejected messages, newest first, so an operator sees spoofing attempts and broken devices."""
    e = _escape
    rows = "".join(f"<tr><td>{e(d['received_at'])}</td><td><code>{e(d['topic'])}</code></td>"
                   f"<td>{e(d['reason'])}</td></tr>" for d in reversed(dead[-100:]))
    return (f"<h2>Rejected messages ({len(dead)})</h2><table><tr><th>received</th><th>topic</th><th>reason</th></tr>"
            f"{rows}</table>")


def _html(title: str, body: str) -> str:
    t = _escape(title)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{t}</h1>{body}</body></html>\n")


def _escape(value: object) -> str:
    """HTML-escaped visible_text."""
    return html.escape(visible_text(value))


def visible_text(value: object) -> str:
    """Text with control characters and lone surrogates (which UTF-8 cannot even write) as escapes: what a page may
    show of a device's payload."""
    return _INVISIBLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def _device_page(device: str) -> str:
    return f"device-{_file_name(device)}.html"


def _file_name(text: str) -> str:
    """Schema-valid names and ids are kept as they are; nothing can reach outside out_dir (no slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def plain_values(values: np.ndarray) -> list[float]:
    """int16 steps times scale, without float noise such as 0.30000000000000004 (9 digits keep every step)."""
    return [float(f"{v:.9g}") for v in values]
