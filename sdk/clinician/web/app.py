"""`heartsight clinician serve`: the clinicians' web app on the store the listener fills.

Starlette on uvicorn, pages rendered server-side by Jinja2 with autoescaping, and a little JavaScript (static/) for
the live inbox (server-sent events), the interactive traces and the timeline. Security, in order of the request:
- every response forbids inline script, framing and sniffing (Content-Security-Policy and friends), so text from a
  device payload can never run even if it slipped past the escaping;
- the session is a signed cookie (HttpOnly, SameSite=Lax; Secure with https_only), valid for SESSION_S;
- every route but the login page and the static files needs a session: pages redirect to /login, the API and the
  event stream answer 401;
- every form that changes something carries the session's CSRF token, and a POST from another origin is refused;
- failed logins are limited per client address and per user name (accounts.LoginLimiter).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sdk.clinician.accounts import LoginLimiter, authenticate
from sdk.clinician.fhir import EXPORTED_ACTIONS, confirmed_bundle, to_fhir_observation
from sdk.clinician.review import details_text, plain_values, visible_text
from sdk.clinician.store import ACTIONS, LABELS, MAX_LIST, SEVERITY, STATUSES, Store
from sdk.clinician.timeline import device_timeline
from sdk.errors import HeartSightError
from sdk.stream.payload import decode_array

HERE = Path(__file__).parent
SESSION_S = 12 * 3600
PAGE_SIZE = 50
POLL_S = 0.25  # how often the event stream looks for new alerts: well inside the 2 s a new alert may take to show
LATE_COMMIT_S = 5.0  # how far back the event stream looks again, for alerts committed out of order by other listeners
KEEPALIVE_S = 15.0
PUBLIC = ("/login", "/static/")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HIDDEN_DETAILS = ("embedding", "beats")  # numbers for the head and the plot, not for people


def create_app(store: Store, *, secret_key: str | None = None, https_only: bool = False,
               limiter: LoginLimiter | None = None) -> Starlette:
    """The app on this store. secret_key signs the session cookies (default: a new one, so a restart logs everyone
    out); https_only marks them Secure, for a deployment behind TLS."""
    pages = _Pages(store, limiter or LoginLimiter())
    routes = [
        Route("/login", pages.login_form, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/", pages.inbox),
        Route("/events", pages.events),
        Route("/alerts/{alert_id}", pages.alert),
        Route("/alerts/{alert_id}/adjudicate", pages.adjudicate, methods=["POST"]),
        Route("/devices", pages.devices),
        Route("/devices/{device}", pages.device),
        Route("/audit", pages.audit),
        Route("/api/alerts", pages.api_alerts),
        Route("/api/alerts/{alert_id}", pages.api_alert),
        Route("/api/devices/{device}/timeline", pages.api_timeline),
        Route("/api/fhir/Observation", pages.api_fhir_bundle),
        Route("/api/fhir/Observation/{alert_id}", pages.api_fhir_observation),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(_SecurityHeaders),
                  Middleware(SessionMiddleware, secret_key=secret_key or secrets.token_urlsafe(32),
                             session_cookie="heartsight_session", max_age=SESSION_S, same_site="lax",
                             https_only=https_only),
                  Middleware(_RequireLogin)]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: pages.error, HeartSightError: pages.error})
    app.state.store = store
    return app


class _Pages:
    """The routes' handlers; the store's calls run in the thread pool (sync handlers do so by themselves)."""

    def __init__(self, store: Store, limiter: LoginLimiter):
        self.store, self.limiter = store, limiter
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                 finalize=lambda value: visible_text(value) if isinstance(value, str) else value,
                                 undefined=jinja2.StrictUndefined)
        env.filters["details"] = lambda details: details_text({k: v for k, v in details.items()
                                                               if k not in _HIDDEN_DETAILS})
        self.templates = Jinja2Templates(env=env)

    # -- accounts ---------------------------------------------------------------------------------------------------

    def login_form(self, request: Request) -> Response:
        return self._page(request, "login.html", {"error": None, "next": _safe_next(request.query_params.get("next"))})

    async def login(self, request: Request) -> Response:
        _same_origin(request)
        form = await request.form()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        target = _safe_next(str(form.get("next", "/")))
        client = request.client.host if request.client else "unknown"
        wait = self.limiter.retry_after(client, name)
        if wait > 0:
            return self._page(request, "login.html", {"error": f"Too many failed logins: try again in "
                                                               f"{wait / 60:.0f} min.", "next": target},
                              status_code=429, headers={"Retry-After": str(int(wait) + 1)})
        user = await run_in_threadpool(authenticate, self.store, name, password)
        if user is None:
            self.limiter.failed(client, name)
            return self._page(request, "login.html", {"error": "Wrong user name or password.", "next": target},
                              status_code=401)
        self.limiter.succeeded(name)
        request.session.clear()  # a fresh session: nothing set before login carries over
        request.session.update({"user": user["name"], "role": user["role"], "csrf": secrets.token_urlsafe(32),
                                "since": time.time()})
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request) -> Response:
        await self._check_csrf(request)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # -- inbox ------------------------------------------------------------------------------------------------------

    def inbox(self, request: Request) -> Response:
        filters = _filters(request)
        offset = _whole(request.query_params.get("offset", "0"), "offset")
        since = _now()  # the event stream sends what is stored from here on
        rows = self.store.inbox(**filters, limit=PAGE_SIZE, offset=offset)
        return self._page(request, "inbox.html", {
            "rows": rows, "filters": filters, "offset": offset, "page_size": PAGE_SIZE, "since": since,
            "total": self.store.count(**filters), "devices": self.store.devices(), "types": list(SEVERITY),
            "statuses": STATUSES, "query": _query(filters)})

    async def events(self, request: Request) -> Response:
        """Server-sent events: each newly stored alert matching the filters, as its inbox summary."""
        filters = _filters(request)
        since = _parse_time(request.query_params.get("since") or _now(), "since")

        async def stream():
            seen: dict[str, datetime] = {}
            cursor, quiet_since = since, time.monotonic()
            yield "retry: 1000\n\n"
            while True:
                look_from = (cursor - timedelta(seconds=LATE_COMMIT_S)).isoformat(timespec="microseconds")
                rows = await run_in_threadpool(self.store.received_since, look_from)
                for received_text, summary in rows:
                    received = datetime.fromisoformat(received_text)
                    if summary["id"] in seen or received < since:
                        continue
                    seen[summary["id"]] = received
                    cursor = max(cursor, received)
                    if all(value is None or summary[key] == value for key, value in
                           (("device", filters["device"]), ("type", filters["kind"]), ("status", filters["status"]))):
                        quiet_since = time.monotonic()
                        yield f"event: alert\ndata: {json.dumps(_clean(summary))}\n\n"
                for alert_id in [k for k, at in seen.items() if at < cursor - timedelta(seconds=2 * LATE_COMMIT_S)]:
                    del seen[alert_id]
                if time.monotonic() - quiet_since > KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def api_alerts(self, request: Request) -> Response:
        """GET /api/alerts?status=&device=&type=&limit=: newest first, limit 1..10,000 (default 100)."""
        limit = _whole(request.query_params.get("limit", "100"), "limit")
        if not 1 <= limit <= MAX_LIST:
            raise HeartSightError(f"limit must be between 1 and {MAX_LIST:,}, got {limit}")
        rows = self.store.list_alerts(**_filters(request), limit=limit)
        return _json({"alerts": [_clean(row) for row in rows], "count": len(rows)})

    # -- one alert --------------------------------------------------------------------------------------------------

    def alert(self, request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        alert = self._alert(alert_id)
        verdicts = self.store.adjudications(alert_id)
        latest = verdicts[-1] if verdicts else None
        return self._page(request, "alert.html", {
            "alert": alert, "verdicts": verdicts, "latest": latest, "labels": LABELS.get(alert["type"], ()),
            "actions": ACTIONS, "neighbours": self.store.neighbours(alert_id),
            "exportable": latest is not None and latest["action"] in EXPORTED_ACTIONS,
            "unit": _unit(alert)})

    def api_alert(self, request: Request) -> Response:
        """The excerpt in real units (s, mV), its saliency trace, beat marks and the verdicts: what the plot draws."""
        alert = self._alert(request.path_params["alert_id"])
        signal = alert["signal"]
        fs, start = signal["fs"], signal["start_sample"]
        beats = alert["details"].get("beats", [])
        return _json({
            "id": alert["id"], "device": alert["device"], "type": alert["type"], "label": alert["label"],
            "confidence": alert["confidence"], "time": alert["time"], "model": alert["model"], "fs": fs,
            "unit": _unit(alert), "start_s": start / fs, "event_s": (alert["sample_index"] - start) / fs,
            "signal": plain_values(decode_array(signal)), "trace": plain_values(decode_array(alert["trace"])),
            "beats": [[(sample - start) / fs, label] for sample, label in beats
                      if isinstance(sample, int) and (label is None or isinstance(label, str))],
            "verdicts": self.store.adjudications(alert["id"])})

    async def adjudicate(self, request: Request) -> Response:
        form = await self._check_csrf(request)
        alert_id = request.path_params["alert_id"]
        action = str(form.get("action", ""))
        label = str(form.get("label", "")) or None if action == "relabel" else None
        await run_in_threadpool(self.store.adjudicate, alert_id, request.session["user"], action, label,
                                str(form.get("note", ""))[:2000])
        return RedirectResponse(f"/alerts/{quote(alert_id)}", status_code=303)

    # -- devices ----------------------------------------------------------------------------------------------------

    def devices(self, request: Request) -> Response:
        rows = [{"device": device, "alerts": self.store.count(device=device),
                 "unreviewed": self.store.count(device=device, status="unreviewed"),
                 "states": self.store.device_state(device)} for device in self.store.devices()]
        return self._page(request, "devices.html", {"rows": rows})

    def device(self, request: Request) -> Response:
        device = request.path_params["device"]
        timeline = self._timeline(device)
        return self._page(request, "device.html", {"device": device, "timeline": timeline,
                                                   "states": self.store.device_state(device)})

    def api_timeline(self, request: Request) -> Response:
        return _json(self._timeline(request.path_params["device"]))

    # -- audit and export -------------------------------------------------------------------------------------------

    def audit(self, request: Request) -> Response:
        if request.session.get("role") != "admin":
            raise HTTPException(403, "The whole audit log is for admins; each alert's page shows its own.")
        entries = list(reversed(self.store.adjudications()))
        return self._page(request, "audit.html", {"entries": entries})

    def api_fhir_observation(self, request: Request) -> Response:
        """The Observation of a confirmed or relabelled alert (409 for one not, or not yet, judged so)."""
        alert = self._alert(request.path_params["alert_id"])
        verdicts = self.store.adjudications(alert["id"])
        if not verdicts or verdicts[-1]["action"] not in EXPORTED_ACTIONS:
            raise HTTPException(409, "Only confirmed or relabelled alerts are exported to FHIR; judge this one first.")
        return _json(to_fhir_observation(alert, verdicts[-1]), media_type="application/fhir+json")

    def api_fhir_bundle(self, request: Request) -> Response:
        """A Bundle of the Observations of every confirmed or relabelled alert (of ?device=, if given)."""
        device = request.query_params.get("device") or None
        judged = []
        for status in ("confirmed", "relabelled"):
            for row in self.store.list_alerts(device=device, status=status, limit=MAX_LIST):
                judged.append((self.store.alert(row["id"]), self.store.adjudications(row["id"])[-1]))
        return _json(confirmed_bundle(judged), media_type="application/fhir+json")

    # -- helpers ----------------------------------------------------------------------------------------------------

    def error(self, request: Request, exc: Exception) -> Response:
        """Errors name the problem: JSON for the API, a page otherwise. A HeartSightError is the request's fault."""
        status = exc.status_code if isinstance(exc, HTTPException) else 400
        message = exc.detail if isinstance(exc, HTTPException) else str(exc)
        if request.url.path.startswith(("/api/", "/events")) or "user" not in request.session:
            return _json({"error": message}, status_code=status)
        return self._page(request, "error.html", {"message": message}, status_code=status)

    def _alert(self, alert_id: str) -> dict:
        try:
            return self.store.alert(alert_id)
        except HeartSightError:
            raise HTTPException(404, f"No alert {alert_id} in this store.") from None

    def _timeline(self, device: str) -> dict:
        if device not in self.store.devices():
            raise HTTPException(404, f"No device {device} has sent alerts to this store.")
        return device_timeline(self.store, device)

    def _page(self, request: Request, name: str, context: dict, status_code: int = 200,
              headers: dict | None = None) -> Response:
        session = request.session
        return self.templates.TemplateResponse(request, name, {
            **context, "user": session.get("user"), "role": session.get("role"), "csrf": session.get("csrf", "")},
            status_code=status_code, headers=headers)

    async def _check_csrf(self, request: Request):
        _same_origin(request)
        form = await request.form()
        token = str(form.get("csrf", ""))
        if not token or not hmac.compare_digest(token, request.session.get("csrf", "")):
            raise HTTPException(403, "This form has expired or did not come from this app (CSRF check); reload the "
                                     "page and send it again.")
        return form


class _RequireLogin:
    """No route answers without a session but the login page and the static files."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC) or scope.get("session", {}).get("user"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith(("/api/", "/events")) or scope["method"] != "GET":
            response = _json({"error": "log in first (POST username and password to /login)"}, status_code=401)
        else:
            query = scope.get("query_string", b"").decode("latin-1")
            response = RedirectResponse(f"/login?next={quote(path + ('?' + query if query else ''))}", status_code=303)
        await response(scope, receive, send)


class _SecurityHeaders:
    """What browsers need to keep device text inert and the app unframed, on every response."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + self.HEADERS
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))  # patient data stays out of caches
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _same_origin(request: Request) -> None:
    """A state-changing request whose Origin (or Referer) names another site is refused."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if (parts.scheme, parts.netloc) != (request.url.scheme, request.url.netloc):
            raise HTTPException(403, f"A form from {parts.scheme}://{parts.netloc} may not post to this app.")


def _filters(request: Request) -> dict:
    params = request.query_params
    return {"device": params.get("device") or None, "kind": params.get("type") or None,
            "status": params.get("status") or None}


def _query(filters: dict) -> str:
    return "&".join(f"{'type' if key == 'kind' else key}={quote(value)}" for key, value in filters.items() if value)


def _whole(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HeartSightError(f"{name} must be a whole number, got {text!r}") from None


def _parse_time(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HeartSightError(f"{name} must be an ISO 8601 time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _safe_next(target: str | None) -> str:
    """Where to go after login: a path of this app only, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _unit(alert: dict) -> str:
    return "PPG (sensor units)" if alert["type"] == "hr_out_of_range" else "mV"


def _clean(row: dict) -> dict:
    """A summary with its text as a page may show it."""
    return {k: visible_text(v) if isinstance(v, str) else v for k, v in row.items()}


def _json(content, status_code: int = 200, media_type: str = "application/json") -> Response:
    """ASCII JSON, so that text no UTF-8 can encode (lone surrogates in stores made before the checks) still goes out
    escaped; NaN from such stores is refused by name."""
    try:
        body = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = json.dumps({"error": "this alert holds NaN or an infinite number, which JSON cannot carry: it was "
                                    "stored before HeartSight refused them"})
        status_code = 422
    return Response(body, status_code=status_code, media_type=media_type)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
