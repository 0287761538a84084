"""The clinician web app's two targets, measured in a real browser and over HTTP, and screenshots of its pages.

1. Store → browser: a new alert must show in an open inbox within 2 s (p95). Chromium (Playwright) logs in and opens
   the inbox; a MutationObserver notes when each new row appears. A second Store object on the same database stores
   100 alerts one by one with random 0.05-0.3 s gaps, as a separate listener process would. Latency: the row's
   appearance (browser clock) minus the return of Store.add (same machine, same clock).
2. Inbox at scale: the first inbox page of a store with 100,000 alerts (50 devices, all 8 alert types, ~10%
   adjudicated) must render in under 300 ms. Filled through Store.add and Store.adjudicate themselves (what a
   listener and the clinicians write), then timed with httpx: GET / and its filters, and GET /api/alerts?limit=10000.
3. Screenshots (1280 px wide) of the app on real data: the first 10 minutes of MIT-BIH record 208 (DS2, many V
   beats) streamed through the device runtime, an embedded Mosquitto and a clinician listener into a store.

Both measurements run on SQLite and, when reachable, on PostgreSQL (in a schema of its own, dropped afterwards).
Writes benchmarks/results/clinician.json, clinician.md and clinician/*.png.
Usage: python -m benchmarks.clinician [DATA_DIR]
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from playwright.sync_api import sync_playwright
from tqdm import tqdm

from benchmarks.machine import describe
from sdk.clinician.accounts import add_user
from sdk.clinician.listener import Listener
from sdk.clinician.store import LABELS, Store, scratch_schema
from sdk.clinician.web.server import WebServer
from sdk.data.records import read_database_record
from sdk.demo.broker import LocalBroker
from sdk.device.alerts import Alert, Excerpt
from sdk.errors import HeartSightError
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import encode_alert
from sdk.stream.publisher import Publisher
from sdk.stream.replay import stream_recording

RESULTS = Path(__file__).resolve().parent / "results"
SHOTS = RESULTS / "clinician"
POSTGRES = os.environ.get("HEARTSIGHT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "bench-clinician", "a long benchmark password"
LIVE_ALERTS, LIVE_GAP_S, LIVE_TARGET_S = 100, (0.05, 0.3), 2.0
INBOX_ALERTS, INBOX_DEVICES, ADJUDICATED_SHARE, INBOX_TARGET_MS = 100_000, 50, 0.10, 300.0
REPEATS = 30
SCREENSHOT_RECORD, SCREENSHOT_SECONDS, SCREENSHOT_DEVICE = "208", 600, "patient-208"
WIDTH = 1280
# (label, details) of each alert type as the device's AlertPolicy raises them
KINDS = {"ventricular_ectopic_beat": ("V", {}),
         "ventricular_run": ("V", {"run_length": 4, "duration_s": 1.8, "rate_bpm": 120.0, "sustained": False}),
         "supraventricular_ectopy": ("S", {}),
         "high_ectopy_burden": ("V", {"ectopic_per_min": 14, "raise_at": 10, "clear_at": 6}),
         "af_start": ("AF", {"windows": 4, "duration_s": 40.0}),
         "af_end": ("non-AF", {"windows": 4, "duration_s": 40.0, "episode_duration_s": 320.0}),
         "hr_out_of_range": ("high_hr", {"hr_bpm": [131.0, 133.5, 135.2], "low_bpm": 40, "high_bpm": 130}),
         "signal_quality": ("flatline", {"problem": "flatline"})}
T0 = datetime(2024, 5, 1, tzinfo=UTC)
_T = np.arange(360) / 360  # a 1-s excerpt at 360 Hz: realistic sizes are not needed here, and it keeps files small
_SIGNAL = np.sin(2 * np.pi * 1.2 * _T) + 0.2 * np.sin(2 * np.pi * 17 * _T)
_TRACE = np.exp(-((_T - 0.5) / 0.05) ** 2)


def bench_alert(device: str, i: int, kind: str = "ventricular_ectopic_beat", time_: datetime | None = None) -> dict:
    """A valid alert (encode_alert validates it) with a 1-s synthetic excerpt; i makes its id unique."""
    label, details = KINDS[kind]
    return encode_alert(Alert(
        device=device, site="clinic", stream="benchmark", type=kind, time=time_ or T0 + timedelta(seconds=i),
        sample_index=360 * i + 180, confidence=0.9, label=label, fs=360, excerpt=Excerpt(360 * i, _SIGNAL, _TRACE),
        model={"name": "ecg_beat", "version": "1.0.0", "sha256": "ab" * 32, "backend": "torch"}, details=details))


@contextmanager
def postgres_store():
    """A store URL in a schema of its own, dropped afterwards; None when PostgreSQL is not reachable."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_schema(POSTGRES, "heartsight_bench"))
        except HeartSightError as exc:
            print(f"{exc}; skipping it")
            url = None
        yield url


@contextmanager
def browser_page():
    """A Chromium page 1280 px wide (Debian's chromium: Playwright's own browsers are not installed)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield browser.new_page(viewport={"width": WIDTH, "height": 800})
        finally:
            browser.close()


def log_in(page, url: str, screenshot: Path | None = None) -> None:
    """Through the login form, as a clinician would; lands on the inbox."""
    page.goto(f"{url}/login")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")


def _stats(values: list[float], scale: float = 1.0) -> dict:
    values = np.asarray(values) * scale
    if values.size == 0:  # nothing arrived: reported as such, not as a crash
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {"n": int(len(values)), "p50": round(float(np.percentile(values, 50)), 3),
            "p95": round(float(np.percentile(values, 95)), 3), "max": round(float(values.max()), 3)}


# --- 1. store -> browser ---------------------------------------------------------------------------------------------

def live_latency(target: str, backend: str) -> dict:
    """Open the inbox in Chromium, store LIVE_ALERTS alerts from a second Store object, time each row's arrival."""
    store, writer = Store(target), Store(target)  # the writer stands for a listener in another process
    add_user(store, USER, PASSWORD)
    rng = random.Random(208)
    stored: dict[str, float] = {}
    try:
        with WebServer(store, port=0) as server, browser_page() as page:
            log_in(page, server.url)
            page.wait_for_function("document.getElementById('live').textContent === 'live'", timeout=10_000)
            page.evaluate("""() => {
                window.__seen = {};
                new MutationObserver((changes) => {
                    const now = Date.now();
                    for (const change of changes) for (const node of change.addedNodes)
                        if (node.dataset && node.dataset.id && !(node.dataset.id in window.__seen))
                            window.__seen[node.dataset.id] = now;
                }).observe(document.getElementById('alerts'), {childList: true});
            }""")
            for i in tqdm(range(LIVE_ALERTS), desc=f"live alerts ({backend})", leave=False):
                alert = bench_alert(f"live-{i % 5}", i, time_=datetime.now(UTC))
                writer.add(alert)
                stored[alert["id"]] = time.time()
                time.sleep(rng.uniform(*LIVE_GAP_S))
            deadline = time.monotonic() + 10  # stragglers get 10 s more; what is still missing then counts as lost
            while time.monotonic() < deadline and page.evaluate("Object.keys(window.__seen).length") < len(stored):
                time.sleep(0.1)
            seen = page.evaluate("window.__seen")
    finally:
        writer.close()
        store.close()
    latencies = [seen[alert_id] / 1000 - at for alert_id, at in stored.items() if alert_id in seen]
    return {"store": backend, **_stats(latencies), "never_appeared": len(stored) - len(latencies),
            "target_p95_s": LIVE_TARGET_S,
            "met": bool(latencies) and len(latencies) == len(stored)
            and float(np.percentile(latencies, 95)) <= LIVE_TARGET_S}


# --- 2. inbox with 100,000 alerts ------------------------------------------------------------------------------------

def fill(store: Store, backend: str) -> dict:
    """INBOX_ALERTS alerts over INBOX_DEVICES devices and all types, ~ADJUDICATED_SHARE of them judged, through the
    store's own add and adjudicate (the columns the inbox reads are theirs)."""
    rng = random.Random(100_000)
    kinds, actions = list(KINDS), ("confirm", "reject", "relabel")
    step = timedelta(days=30) / INBOX_ALERTS  # a month of a clinic's alerts
    adjudicated, in_store_s = 0, 0.0
    started = time.perf_counter()
    for i in tqdm(range(INBOX_ALERTS), desc=f"filling {backend}", unit="alert", mininterval=1):
        kind = kinds[i % len(kinds)]
        alert = bench_alert(f"dev-{rng.randrange(INBOX_DEVICES):02d}", i, kind, T0 + i * step)
        began = time.perf_counter()
        store.add(alert)
        if rng.random() < ADJUDICATED_SHARE:
            action = rng.choice(actions) if kind in LABELS else rng.choice(actions[:2])
            label = next(x for x in LABELS[kind] if x != alert["label"]) if action == "relabel" else None
            store.adjudicate(alert["id"], "dr-bench", action, label, "benchmark verdict")
            adjudicated += 1
        in_store_s += time.perf_counter() - began
    return {"alerts": INBOX_ALERTS, "devices": INBOX_DEVICES, "adjudicated": adjudicated,
            "fill_s": round(time.perf_counter() - started, 1), "in_store_s": round(in_store_s, 1),
            "method": "Store.add and Store.adjudicate, one call per alert or verdict"}


def inbox_timing(target: str, backend: str) -> dict:
    """Fill the store, log in with httpx, and time each request REPEATS times (after one untimed warm-up)."""
    store = Store(target)
    try:
        filled = fill(store, backend)
        add_user(store, USER, PASSWORD)
        device = store.devices()[7]
        requests = {"inbox": "/", "inbox_device": f"/?device={device}",
                    "inbox_unreviewed_runs": "/?status=unreviewed&type=ventricular_run",
                    "api_10000": "/api/alerts?limit=10000",
                    "floor": "/static/app.css"}  # reads no store: what any response costs on this server
        timings = {}
        with WebServer(store, port=0) as server, httpx.Client(base_url=server.url, timeout=60) as client:
            login = client.post("/login", data={"username": USER, "password": PASSWORD})
            if login.status_code != 303 or "heartsight_session" not in client.cookies:
                raise RuntimeError(f"login with httpx failed: {login.status_code} {login.text[:200]}")
            first = client.get("/")
            if first.status_code != 200 or f'id="total">{INBOX_ALERTS}<' not in first.text:
                raise RuntimeError(f"GET / did not show the {INBOX_ALERTS} alerts (status {first.status_code})")
            for name, path in requests.items():
                client.get(path).raise_for_status()
                seconds = []
                for _ in range(REPEATS):
                    began = time.perf_counter()
                    response = client.get(path)
                    seconds.append(time.perf_counter() - began)
                    response.raise_for_status()
                ms = np.asarray(seconds) * 1000
                timings[name] = {"path": path, "median_ms": round(float(np.median(ms)), 1),
                                 "p95_ms": round(float(np.percentile(ms, 95)), 1), "bytes": len(response.content)}
    finally:
        store.close()
    return {"store": backend, "fill": filled, "requests": timings, "target_ms": INBOX_TARGET_MS,
            "met": timings["inbox"]["p95_ms"] < INBOX_TARGET_MS}


# --- 3. screenshots --------------------------------------------------------------------------------------------------

def record_store(data_root, work: Path) -> Store:
    """The first 10 minutes of record 208 through the device runtime, Mosquitto and a listener into a store."""
    recording = read_database_record("mitdb", SCREENSHOT_RECORD, data_root)
    recording = replace(recording, signal=recording.signal[: int(SCREENSHOT_SECONDS * recording.fs)])
    store = Store(work / "record.sqlite")
    with LocalBroker(work) as broker:
        config = BrokerConfig(broker.url)
        listener = Listener(config, store)
        listener.start()
        with Publisher(config, SCREENSHOT_DEVICE, "clinic", outbox_path=work / "outbox.sqlite") as publisher:
            # event times end now rather than 10 minutes ahead; returns once the clinic acknowledged every alert
            started = datetime.now(UTC) - timedelta(seconds=SCREENSHOT_SECONDS)
            streamed = stream_recording(recording, publisher, "ecg_beat", start_time=started)
        counts = listener.stop()
    print(f"record {SCREENSHOT_RECORD}: {streamed['beats']} beats, {streamed['alerts']} alerts, "
          f"{counts['stored']} stored, {counts['statuses']} status messages")
    return store


def screenshots(data_root, work: Path) -> dict:
    """login, inbox, a ventricular alert zoomed in, the same after a verdict, and the device timeline."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    store = record_store(data_root, work)
    add_user(store, USER, PASSWORD)
    ventricular = (store.list_alerts(kind="ventricular_run", limit=1)
                   or store.list_alerts(kind="ventricular_ectopic_beat", limit=1))
    if not ventricular:
        raise RuntimeError(f"record {SCREENSHOT_RECORD} gave no ventricular alert to show")
    alert_id = ventricular[0]["id"]
    try:
        with WebServer(store, port=0) as server, browser_page() as page:
            log_in(page, server.url, SHOTS / "login.png")
            page.wait_for_function("document.getElementById('live').textContent === 'live'", timeout=10_000)
            page.screenshot(path=str(SHOTS / "inbox.png"), full_page=True)
            page.goto(f"{server.url}/alerts/{alert_id}")
            page.wait_for_selector('#trace[data-ready="1"]')
            for _ in range(2):
                page.click("#trace button.zoom-in")
            page.screenshot(path=str(SHOTS / "alert_zoomed.png"), full_page=True)
            page.check("input[name=action][value=confirm]")
            page.fill("textarea[name=note]", "Agree with the model: wide, premature QRS complexes.")
            with page.expect_navigation():
                page.click("form.adjudicate button[type=submit]")
            page.wait_for_selector('#trace[data-ready="1"]')
            page.screenshot(path=str(SHOTS / "alert_adjudicated.png"), full_page=True)
            page.goto(f"{server.url}/devices/{SCREENSHOT_DEVICE}")
            if page.query_selector("#hr"):
                page.wait_for_selector('#hr[data-ready="1"]')
            page.screenshot(path=str(SHOTS / "device_timeline.png"), full_page=True)
        verdicts = store.adjudications(alert_id)
    finally:
        store.close()
    if not verdicts:
        raise RuntimeError("the verdict sent through the alert page's form was not stored")
    names = ("login", "inbox", "alert_zoomed", "alert_adjudicated", "device_timeline")
    return {"record": f"mitdb/{SCREENSHOT_RECORD}", "seconds": SCREENSHOT_SECONDS, "alert": alert_id,
            "alert_type": ventricular[0]["type"], "verdict": verdicts[-1]["action"],
            "files": [str((SHOTS / f"{name}.png").relative_to(RESULTS.parent.parent)) for name in names]}


# --- running and reporting -------------------------------------------------------------------------------------------

def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    result = {"machine": describe(), "live": [], "inbox": [], "screenshots": None}
    json_path, md_path = RESULTS / "clinician.json", RESULTS / "clinician.md"

    def save() -> None:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        md_path.write_text(_markdown(result))

    with tempfile.TemporaryDirectory() as work:
        result["live"].append(live_latency(str(Path(work) / "live.sqlite"), "SQLite"))
    with postgres_store() as url:
        if url is not None:
            result["live"].append(live_latency(url, "PostgreSQL"))
    save()
    with tempfile.TemporaryDirectory() as work:
        result["inbox"].append(inbox_timing(str(Path(work) / "inbox.sqlite"), "SQLite"))
    save()
    with postgres_store() as url:
        if url is not None:
            result["inbox"].append(inbox_timing(url, "PostgreSQL"))
    save()
    with tempfile.TemporaryDirectory() as work:
        result["screenshots"] = screenshots(data_root, Path(work))
    save()
    print(f"wrote {json_path}, {md_path} and {SHOTS}/*.png")


def _markdown(result: dict) -> str:
    yes = {True: "met", False: "**not met**"}
    lines = ["# Clinician web app benchmark", "", f"Machine: {result['machine']}.", "",
             f"## Store → browser: a new alert in an open inbox (target p95 ≤ {LIVE_TARGET_S:g} s)", "",
             f"Chromium (headless, Playwright) logged in with the inbox open; a second Store object on the same "
             f"database (as a listener in another process) stores {LIVE_ALERTS} alerts one by one, "
             f"{LIVE_GAP_S[0]}–{LIVE_GAP_S[1]} s apart. Latency: the row appearing in the page (a MutationObserver "
             "on the inbox's rows) minus the return of Store.add.", "",
             "| store | n | p50 s | p95 s | max s | never appeared | target |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['store']} | {r['n']} | {r['p50']} | {r['p95']} | {r['max']} | {r['never_appeared']} | "
              f"{yes[r['met']]} |" for r in result["live"]]
    lines += ["", f"## Inbox with {INBOX_ALERTS:,} alerts (target: first page < {INBOX_TARGET_MS:g} ms at p95)", "",
              f"{INBOX_ALERTS:,} alerts (1-s excerpts) over {INBOX_DEVICES} devices and all 8 alert types, about "
              f"{ADJUDICATED_SHARE:.0%} judged, written with Store.add and Store.adjudicate one call at a time. Each "
              f"request timed {REPEATS} times with httpx after a warm-up, on a logged-in session (server-rendered "
              "pages; the API returns JSON).", ""]
    for r in result["inbox"]:
        f = r["fill"]
        lines += [f"### {r['store']}: first page {yes[r['met']]}", "",
                  f"Fill: {f['alerts']:,} alerts, {f['adjudicated']:,} verdicts in {f['fill_s']} s "
                  f"({f['in_store_s']} s of it in the store's calls, the rest making and validating the alerts).", "",
                  "| request | median ms | p95 ms | response bytes |", "|---|---|---|---|"]
        lines += [f"| `GET {t['path']}` | {t['median_ms']} | {t['p95_ms']} | {t['bytes']:,} |"
                  for t in r["requests"].values()]
        lines.append("")
        if r["requests"]["floor"]["median_ms"] > 30:
            lines += [f"Even the static stylesheet takes {r['requests']['floor']['median_ms']} ms: responses on a "
                      "kept-alive connection wait ~40 ms for the client's delayed ACK (Nagle's algorithm), because the "
                      "server's listening socket is made without IPPROTO_TCP, so asyncio does not set TCP_NODELAY on "
                      "its connections (sdk/clinician/web/server.py, WebServer._socket). That wait is part of each "
                      "figure above.", ""]
    shots = result["screenshots"]
    if shots:
        lines += ["## Screenshots", "",
                  f"The first {shots['seconds'] // 60} minutes of MIT-BIH record 208 (DS2) streamed through the device "
                  "runtime (ecg_beat), an embedded Mosquitto and a clinician listener; the alert shown is a "
                  f"{shots['alert_type']} (zoomed in twice, then after a '{shots['verdict']}' verdict through its "
                  "form).", ""]
        lines += [f"- [{Path(f).name}](clinician/{Path(f).name})" for f in shots["files"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
