"""The clinician web app over HTTP: accounts, sessions, CSRF, the inbox and its API, the event stream, verdicts,
timelines and FHIR export, on SQLite and PostgreSQL (the browser test is test_clinician_browser.py)."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from starlette.routing import Mount
from starlette.testclient import TestClient

from conftest import heartsight, postgres_schema, sample_alert
from sdk.clinician.accounts import LoginLimiter, add_user, authenticate
from sdk.clinician.store import Store
from sdk.clinician.timeline import device_timeline
from sdk.clinician.web import create_app
from sdk.clinician.web.server import WebServer
from sdk.errors import HeartSightError

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        with Store(tmp_path / "store.sqlite") as s:
            yield s
    else:
        with postgres_schema() as url, Store(url) as s:
            yield s


@pytest.fixture
def app(store):
    add_user(store, "alice", PASSWORD, "clinician")
    add_user(store, "root", PASSWORD, "admin")
    return create_app(store, limiter=LoginLimiter(attempts=3, window_s=60))


def logged_in(app, name: str = "alice") -> TestClient:
    client = TestClient(app, follow_redirects=False)
    response = client.post("/login", data={"username": name, "password": PASSWORD})
    assert response.status_code == 303, response.text
    return client


def csrf_of(client: TestClient, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def every_route(app, alert_id: str) -> list[tuple[str, str]]:
    """(method, path) of every route of the app but the login page and static files, with real parameters."""
    paths = []
    for route in app.routes:
        if isinstance(route, Mount) or route.path == "/login":
            continue
        path = route.path.replace("{alert_id}", alert_id).replace("{device}", "dev-a")
        paths += [(method, path) for method in sorted(route.methods - {"HEAD"})]
    return paths


def test_no_route_answers_without_a_session(app, store):
    alert = sample_alert()
    store.add(alert)
    anonymous = TestClient(app, follow_redirects=False)
    routes = every_route(app, alert["id"])
    assert len(routes) >= 13 and ("POST", f"/alerts/{alert['id']}/adjudicate") in routes
    for method, path in routes:
        response = anonymous.request(method, path, data={"action": "confirm"} if method == "POST" else None)
        if path.startswith(("/api/", "/events")) or method == "POST":
            assert response.status_code == 401, (method, path)
            assert response.json() == {"error": "log in first (POST username and password to /login)"}
        else:
            assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
        assert alert["id"] not in response.text and "dev-a" not in response.text, path
    assert store.adjudications() == []  # the anonymous POST judged nothing
    forged = TestClient(app, follow_redirects=False, cookies={"heartsight_session": "eyJ1c2VyIjogImFsaWNlIn0=.x.y"})
    assert forged.get("/api/alerts").status_code == 401  # a session cookie not signed by this app is none


def test_login_sets_a_hardened_session_and_limits_guessing(store, app):
    client = TestClient(app, follow_redirects=False)
    page = client.get("/login")
    assert page.status_code == 200 and 'name="username"' in page.text and 'name="password"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    response = client.post("/login", data={"username": "alice", "password": PASSWORD, "next": "/devices"})
    assert response.status_code == 303 and response.headers["location"] == "/devices"
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower() and "secure" not in cookie.lower()
    assert client.get("/devices").status_code == 200
    # never sent to another site after login
    assert logged_in_redirect(app, "https://evil.example/") == "/"
    assert logged_in_redirect(app, "//evil.example/") == "/"
    # guessing: 3 failures (this app's limit) then refused even with the right password, with Retry-After
    guesser = TestClient(app, follow_redirects=False)
    for _ in range(3):
        assert guesser.post("/login", data={"username": "alice", "password": "wrong guess"}).status_code == 401
    refused = guesser.post("/login", data={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0 and "Too many" in refused.text
    # an unknown name fails like a wrong password
    assert TestClient(app).post("/login", data={"username": "nobody", "password": PASSWORD}).status_code in (401, 429)
    secure = create_app(store, https_only=True)
    cookie = TestClient(secure, base_url="https://testserver", follow_redirects=False).post(
        "/login", data={"username": "root", "password": PASSWORD}).headers["set-cookie"]
    assert "secure" in cookie.lower()


def logged_in_redirect(app, target: str) -> str:
    return TestClient(app, follow_redirects=False).post(
        "/login", data={"username": "root", "password": PASSWORD, "next": target}).headers["location"]


def test_accounts_hash_with_argon2_and_refuse_weak_or_duplicate(store):
    add_user(store, "bob", PASSWORD)
    stored = store.user("bob")
    assert stored["password_hash"].startswith("$argon2id$") and PASSWORD not in stored["password_hash"]
    assert authenticate(store, "bob", PASSWORD) == {"name": "bob", "role": "clinician"}
    assert authenticate(store, "bob", PASSWORD + "x") is None and authenticate(store, "eve", PASSWORD) is None
    with pytest.raises(HeartSightError, match="use at least 12"):
        add_user(store, "carol", "short")
    with pytest.raises(HeartSightError, match="already exists"):
        add_user(store, "bob", PASSWORD)
    with pytest.raises(HeartSightError, match="unknown role"):
        add_user(store, "dave", PASSWORD, "superuser")


def test_user_add_reads_the_password_from_stdin(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "store.sqlite"
    run = subprocess.run([sys.executable, "-m", "sdk.cli", "clinician", "user", "add", "erin", "--db", str(db),
                          "--role", "admin"], input=PASSWORD + "\n", capture_output=True, text=True)
    assert run.returncode == 0 and "added admin erin" in run.stdout, run.stderr
    with Store(db) as store:
        assert authenticate(store, "erin", PASSWORD) == {"name": "erin", "role": "admin"}
    again = subprocess.run([sys.executable, "-m", "sdk.cli", "clinician", "user", "add", "erin", "--db", str(db)],
                           input="another long password\n", capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert heartsight("clinician", "serve", "--help").returncode == 0


def test_inbox_sorts_unreviewed_then_severity_then_time_and_filters(app, store):
    alerts = [sample_alert(i=0, type="signal_quality", label="flat"),
              sample_alert(i=1),
              sample_alert(i=2, type="ventricular_run", details={"run_length": 5, "sustained": True}),
              sample_alert(i=3, type="af_start", label="AF"),
              sample_alert(i=4),
              sample_alert(device="dev-b", i=5)]
    for alert in alerts:
        store.add(alert)
    store.adjudicate(alerts[2]["id"], "alice", "confirm")
    ids = [row["id"] for row in store.inbox()]
    order = [3, 5, 4, 1, 0, 2]  # af_start (3); then beats, newest first; signal quality; the judged run last
    assert ids == [alerts[i]["id"] for i in order]
    client = logged_in(app)
    page = client.get("/").text
    assert [m for m in re.findall(r'data-id="([0-9a-f]{32})"', page)] == ids
    api = client.get("/api/alerts").json()["alerts"]
    assert [row["id"] for row in api] == [a["id"] for a in reversed(alerts)]  # newest first
    assert api[3]["status"] == "confirmed" and api[3]["severity"] == 4  # a sustained run: one above a run
    assert [r["id"] for r in client.get("/api/alerts?device=dev-b").json()["alerts"]] == [alerts[5]["id"]]
    assert client.get("/api/alerts?status=confirmed").json()["count"] == 1
    assert client.get("/api/alerts?type=af_start&limit=10000").json()["count"] == 1
    assert [r["id"] for r in client.get("/api/alerts?limit=2").json()["alerts"]] == [alerts[5]["id"], alerts[4]["id"]]
    for query, message in [("limit=10001", "between 1 and 10,000"), ("limit=0", "between 1 and 10,000"),
                           ("limit=ten", "whole number"), ("status=pending", "unknown status"),
                           ("type=tachy", "unknown alert type")]:
        response = client.get(f"/api/alerts?{query}")
        assert response.status_code == 400 and message in response.json()["error"], query
    assert f'data-id="{alerts[5]["id"]}"' in client.get("/?device=dev-b").text
    assert f'data-id="{alerts[0]["id"]}"' not in client.get("/?device=dev-b").text


def test_verdicts_need_the_csrf_token_and_go_into_the_audit_log(app, store):
    alert = sample_alert()
    store.add(alert)
    client = logged_in(app)
    path = f"/alerts/{alert['id']}/adjudicate"
    assert client.post(path, data={"action": "confirm"}).status_code == 403  # no token
    assert client.post(path, data={"action": "confirm", "csrf": "forged"}).status_code == 403
    token = csrf_of(client, f"/alerts/{alert['id']}")
    other_site = client.post(path, data={"action": "confirm", "csrf": token},
                             headers={"origin": "https://evil.example"})
    assert other_site.status_code == 403 and store.adjudications() == []
    response = client.post(path, data={"action": "relabel", "label": "S", "note": "P wave visible", "csrf": token})
    assert response.status_code == 303 and response.headers["location"] == f"/alerts/{alert['id']}"
    bad = client.post(path, data={"action": "relabel", "label": "AF", "csrf": token})
    assert bad.status_code == 400 and "&#39;AF&#39; is not a label" in bad.text
    client.post(path, data={"action": "confirm", "csrf": token})
    log = store.adjudications(alert["id"])
    assert [(e["reviewer"], e["action"], e["label_before"], e["label_after"], e["note"]) for e in log] == \
        [("alice", "relabel", "V", "S", "P wave visible"), ("alice", "confirm", "S", "V", "")]
    view = client.get(f"/alerts/{alert['id']}").text
    assert "relabel V → S" in view and "P wave visible" in view and "FHIR Observation" in view
    assert store.inbox()[0]["status"] == "confirmed"
    assert client.get("/audit").status_code == 403  # the whole log is for admins
    admin = logged_in(app, "root")
    assert admin.get("/audit").text.count("<tr><td><time>") == 2
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/api/alerts").status_code == 401


def test_alert_api_gives_real_units_beats_and_neighbours(app, store):
    alerts = [sample_alert(i=i) for i in range(12)]
    alerts[6] = sample_alert(i=6, details={"run_length": 1, "beats": [[3160, "N"], [3160 + 180, "V"], [3520, None]]})
    for alert in alerts:
        store.add(alert)
    store.add(sample_alert(device="dev-b", i=6))
    client = logged_in(app)
    data = client.get(f"/api/alerts/{alerts[6]['id']}").json()
    assert data["fs"] == 360 and data["unit"] == "mV" and len(data["signal"]) == len(data["trace"]) == 360
    assert data["event_s"] == pytest.approx(0.5) and max(data["signal"]) == pytest.approx(1.17, abs=0.05)
    assert data["beats"] == [[pytest.approx(0.0), "N"], [pytest.approx(0.5), "V"], [pytest.approx(1.0), None]]
    page = client.get(f"/alerts/{alerts[6]['id']}").text
    neighbours = re.findall(r'data-id="([0-9a-f]{32})"', page.split("Neighbouring alerts")[1])
    assert neighbours == [a["id"] for a in alerts[1:12]]  # 5 each side and itself, only this device's
    assert alerts[6]["model"]["sha256"] in page and "0.930" in page
    assert client.get("/api/alerts/" + "0" * 32).status_code == 404
    assert client.get("/alerts/" + "0" * 32).status_code == 404


def test_hostile_payload_text_is_escaped(app, store):
    hostile = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    alert = sample_alert(label=hostile[:64], details={"note": hostile, "run_length": 1})
    store.add(alert)
    client = logged_in(app)
    for path in ("/", f"/alerts/{alert['id']}", "/devices", "/devices/dev-a"):
        page = client.get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in client.get(f"/alerts/{alert['id']}").text
    assert client.get("/api/alerts").json()["alerts"][0]["label"] == hostile[:64]  # data stays data in JSON


def test_event_stream_sends_new_alerts_within_two_seconds(store):
    add_user(store, "alice", PASSWORD)
    with WebServer(store, port=0) as server, httpx.Client(base_url=server.url) as client:
        client.post("/login", data={"username": "alice", "password": PASSWORD})
        store.add(sample_alert(i=0))  # before the page: not sent
        since = datetime.now(timezone.utc).isoformat()
        received: list[tuple[float, dict]] = []

        def read():
            with client.stream("GET", "/events", params={"since": since, "device": "dev-a"}, timeout=10) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        received.append((time.monotonic(), json.loads(line[6:])))
                        if len(received) == 2:
                            return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)
        stored = {}
        for alert in (sample_alert(i=1), sample_alert(device="dev-b", i=2), sample_alert(i=3)):
            store.add(alert)
            stored[alert["id"]] = time.monotonic()
            time.sleep(0.3)
        reader.join(5)
    assert [r["id"] for _, r in received] == [sample_alert(i=1)["id"], sample_alert(i=3)["id"]]
    assert all(at - stored[r["id"]] < 2.0 for at, r in received)
    assert received[0][1]["status"] == "unreviewed" and received[0][1]["severity"] == 1


def test_device_timeline_from_vitals_and_af_alerts(app, store):
    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    vitals = [{"start": (start + timedelta(minutes=m)).isoformat(), "period_s": 60.0, "hr_bpm": 70.0 + m,
               "beats": {"N": 68, "V": 2 if m < 30 else 0, "S": 1}, "af_fraction": 0.0} for m in range(90)]
    store.add_status({"device": "dev-a", "site": "s1", "state": "online", "vitals": vitals[:60]})
    store.add_status({"device": "dev-a", "site": "s1", "state": "online", "vitals": vitals[50:]})  # overlap kept once
    onset = sample_alert(i=10, type="af_start", label="AF", details={"windows": 3})
    end = sample_alert(i=70, type="af_end", label="non-AF", details={"windows": 3})
    false_onset = sample_alert(i=100, type="af_start", label="AF", details={"windows": 3})
    for alert in (onset, end, false_onset, sample_alert(i=200, type="af_start", label="AF", details={})):
        store.add(alert)
    store.adjudicate(false_onset["id"], "alice", "reject")
    timeline = device_timeline(store, "dev-a")
    assert len(timeline["hr"]) == 90 and timeline["hr"][5] == [vitals[5]["start"], 75.0]
    assert timeline["burden"] == [
        {"hour": "2024-05-01T12:00:00+00:00", "ectopic": 30 * 3 + 30, "beats": 60 * 69 + 30 * 2, "per_hour": 120.0,
         "source": "vitals"},
        {"hour": "2024-05-01T13:00:00+00:00", "ectopic": 30, "beats": 30 * 69, "per_hour": 60.0, "source": "vitals"}]
    assert [(e["duration_s"], e["end"] is None) for e in timeline["af"]] == [(60.0, False), (None, True)]
    client = logged_in(app)
    page = client.get("/devices/dev-a").text
    assert 'id="hr"' in page and "120.0" in page and "ongoing" in page
    assert client.get("/api/devices/dev-a/timeline").json()["vitals_minutes"] == 90
    assert client.get("/devices/nobody").status_code == 404


def test_fhir_export_of_confirmed_alerts_validates(app, store):
    alerts = [sample_alert(i=i) for i in range(3)]
    for alert in alerts:
        store.add(alert)
    store.adjudicate(alerts[0]["id"], "alice", "confirm", note="clear V")
    store.adjudicate(alerts[1]["id"], "alice", "relabel", "F")
    store.adjudicate(alerts[2]["id"], "alice", "reject")
    client = logged_in(app)
    response = client.get(f"/api/fhir/Observation/{alerts[0]['id']}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    observation = Observation.model_validate(response.json())
    assert observation.status == "final" and observation.valueSampledData.origin.unit == "mV"
    assert observation.component[-1].valueString == "V" and "clear V" in observation.note[-1].text
    assert client.get(f"/api/fhir/Observation/{alerts[2]['id']}").status_code == 409
    bundle = Bundle.model_validate(client.get("/api/fhir/Observation").json())
    assert [e.resource.id for e in bundle.entry] == sorted([alerts[0]["id"], alerts[1]["id"]]) or \
        {e.resource.id for e in bundle.entry} == {alerts[0]["id"], alerts[1]["id"]}
    relabelled = next(e.resource for e in bundle.entry if e.resource.id == alerts[1]["id"])
    assert relabelled.component[-1].valueString == "F"


def test_older_store_gets_the_inbox_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    alert, judged = sample_alert(i=0, type="af_start", label="AF", details={}), sample_alert(i=1)
    with sqlite3.connect(path) as db:
        db.executescript("CREATE TABLE alerts (id TEXT PRIMARY KEY, device TEXT NOT NULL, site TEXT NOT NULL, type TEXT "
                         "NOT NULL, time TEXT NOT NULL, received_at TEXT NOT NULL, payload TEXT NOT NULL);"
                         "CREATE TABLE adjudications (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, "
                         "reviewer TEXT NOT NULL, at TEXT NOT NULL, action TEXT NOT NULL, label_before TEXT NOT NULL, "
                         "label_after TEXT NOT NULL, note TEXT NOT NULL);")
        for a in (alert, judged):
            db.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (a["id"], a["device"], a["site"], a["type"], a["time"], a["time"], json.dumps(a)))
        db.execute("INSERT INTO adjudications (alert_id, reviewer, at, action, label_before, label_after, note) "
                   "VALUES (?, 'alice', '2024-05-01T12:00:00+00:00', 'reject', 'V', 'N', '')", (judged["id"],))
    with Store(path) as store:
        assert [(r["id"], r["severity"], r["label"], r["status"]) for r in store.inbox()] == \
            [(alert["id"], 3, "AF", "unreviewed"), (judged["id"], 1, "V", "rejected")]
