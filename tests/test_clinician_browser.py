"""The clinician app in a real browser (Debian's Chromium, driven by Playwright): a DS2 record streamed through a real
Mosquitto arrives live in an open inbox, one alert is opened, zoomed and judged, the store and the audit log hold the
verdict, no route answers without a session, and hostile payload text stays text."""

from __future__ import annotations

import dataclasses
import shutil
import threading

import pytest

from conftest import DEADLINE_S, needs_mitdb, sample_alert
from sdk.clinician.accounts import add_user
from sdk.clinician.listener import Listener
from sdk.clinician.store import Store
from sdk.clinician.web.server import WebServer
from sdk.data.records import read_database_record
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.payload import decode_array
from sdk.stream.publisher import Publisher
from sdk.stream.replay import stream_recording

CHROMIUM = shutil.which("chromium")
PASSWORD = "correct horse battery staple"
RECORD, SECONDS = "208", 90  # DS2 (never trained on): frequent V beats, couplets and runs
HOSTILE_LABEL = '"><img src=x onerror="window.pwned=1">'
HOSTILE_NOTE = "<script>window.pwned=2</script>"

pytestmark = [needs_mitdb, pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                              "(apt-get install -y --no-install-recommends chromium)")]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def clinic(broker, tmp_path):
    """A store filled by a listener on the test's own Mosquitto, served by the app, with one clinician."""
    store = Store(tmp_path / "clinic.sqlite")
    add_user(store, "dr.ada", PASSWORD)
    listener = Listener(BrokerConfig(broker.url), store)
    listener.start(DEADLINE_S)
    with WebServer(store, port=0) as server:
        yield store, server, broker
    listener.stop()
    store.close()


def test_live_inbox_alert_view_and_verdict_in_chromium(clinic, browser, tmp_path):
    store, server, broker = clinic
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(server.url + "/")
    assert page.url.startswith(server.url + "/login")
    page.fill("input[name=username]", "dr.ada")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#live.on", timeout=DEADLINE_S * 1000)
    assert page.locator("#alerts tr").count() == 0
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    # a DS2 record through the device runtime, the broker and the listener, while the inbox is open
    record = read_database_record("mitdb", RECORD)
    recording = dataclasses.replace(record, signal=record.signal[: int(SECONDS * record.fs)])
    summary = {}

    def stream():
        with Publisher(BrokerConfig(broker.url), "patient-208", "ward-3", tmp_path / "outbox.sqlite") as publisher:
            summary.update(stream_recording(recording, publisher, "ecg_beat"))

    streamer = threading.Thread(target=stream)
    streamer.start()
    streamer.join(120)
    assert summary["alerts"] >= 3 and summary["awaiting_clinic"] == 0, summary
    rows = page.locator("#alerts tr.alert-row")
    rows.nth(summary["alerts"] - 1).wait_for(timeout=DEADLINE_S * 1000)
    assert rows.count() == summary["alerts"] and page.evaluate("window.sameDocument") is True
    shown = set(page.eval_on_selector_all("#alerts tr.alert-row", "rows => rows.map(r => r.dataset.id)"))
    assert shown == set(summary["alert_ids"])
    severities = [int(s) for s in page.eval_on_selector_all("#alerts tr", "rows => rows.map(r => r.dataset.severity)")]
    assert severities == sorted(severities, reverse=True)  # live rows take their place: most severe first

    # open a ventricular alert: its excerpt, saliency and beat marks; zoom in twice, hover for values
    page.click("#alerts tr[data-severity] a:text-matches('ventricular')")
    page.wait_for_selector("#trace[data-ready='1']")
    alert_id = page.url.rsplit("/", 1)[1]
    full = float(page.get_attribute("#trace", "data-x1")) - float(page.get_attribute("#trace", "data-x0"))
    signal = store.alert(alert_id)["signal"]
    assert full == pytest.approx((len(decode_array(signal)) - 1) / signal["fs"], rel=0.01)  # the whole excerpt, in s
    assert page.locator("#trace .mark-label").count() >= 3 and page.locator("#trace polygon.trace").count() == 1
    page.click("#trace button.zoom-in")
    page.click("#trace button.zoom-in")
    zoomed = float(page.get_attribute("#trace", "data-x1")) - float(page.get_attribute("#trace", "data-x0"))
    assert zoomed == pytest.approx(full / 4, rel=0.01)
    box = page.locator("#trace svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert "mV" in page.inner_text("#trace .readout") and "saliency" in page.inner_text("#trace .readout")
    page.screenshot(path=str(tmp_path / "alert.png"))

    # judge it: relabel as F with a note
    page.check("input[name=action][value=relabel]")
    page.select_option("select[name=label]", "F")
    page.fill("textarea[name=note]", "fusion: P wave before the QRS")
    page.click("form.adjudicate button[type=submit]")
    page.wait_for_selector("ol.verdicts li")
    assert "relabel V → F" in page.inner_text("ol.verdicts")
    [entry] = store.adjudications(alert_id)
    assert (entry["reviewer"], entry["action"], entry["label_before"], entry["label_after"], entry["note"]) == \
        ("dr.ada", "relabel", "V", "F", "fusion: P wave before the QRS")
    assert next(r for r in store.list_alerts() if r["id"] == alert_id)["status"] == "relabelled"
    assert store.adjudicated("ward-3", "patient-208") == [(store.alert(alert_id), "F")]  # what recalibrate reads

    # the device's timeline: heart rate from the vitals the device sent each minute
    page.goto(f"{server.url}/devices/patient-208")
    page.wait_for_selector("#hr[data-ready='1']")
    assert page.locator("table.burden tbody tr").count() >= 1 and "vitals" in page.inner_text("table.burden")

    # hostile text from a device: arrives live and on its page as text, runs nothing
    page.goto(server.url + "/")
    page.wait_for_selector("#live.on")
    hostile = sample_alert(device="patient-208", site="ward-3", i=500, label=HOSTILE_LABEL,
                           details={"note": HOSTILE_NOTE})
    with Publisher(BrokerConfig(broker.url), "patient-208", "ward-3", tmp_path / "outbox.sqlite") as publisher:
        publisher.publish(hostile)
        publisher.flush(DEADLINE_S)
    row = page.locator(f"#alerts tr[data-id='{hostile['id']}']")
    row.wait_for(timeout=DEADLINE_S * 1000)
    assert row.locator("td.label").inner_text() == HOSTILE_LABEL
    page.goto(f"{server.url}/alerts/{hostile['id']}")
    assert HOSTILE_NOTE in page.inner_text("table.facts") and HOSTILE_LABEL in page.inner_text("h1")
    assert page.locator("img").count() == 0 and page.evaluate("window.pwned") is None and dialogs == []

    # no route answers a browser without a session
    anonymous = browser.new_context()
    for path in ["/", "/devices", "/devices/patient-208", f"/alerts/{alert_id}", "/audit"]:
        visit = anonymous.new_page()
        visit.goto(server.url + path)
        assert visit.url.startswith(server.url + "/login") and "ventricular" not in visit.content(), path
        assert visit.locator("input[name=password]").count() == 1
    for path in ["/api/alerts", f"/api/alerts/{alert_id}", "/api/devices/patient-208/timeline",
                 "/api/fhir/Observation", f"/api/fhir/Observation/{alert_id}", "/events"]:
        response = anonymous.request.get(server.url + path)
        assert response.status == 401 and "patient-208" not in response.text(), path
    posted = anonymous.request.post(f"{server.url}/alerts/{alert_id}/adjudicate", form={"action": "confirm"})
    assert posted.status == 401 and len(store.adjudications()) == 1
