"""The workspace's pages: server-rendered HTML in the NHS.UK design system, forms that work
without JavaScript, times in Europe/London.

Every route is in ``ACCESS`` (who may use it); ``SignedIn`` (outermost middleware) turns the
session cookie into the request's identity, which the platform's ``AccessControl`` then
checks against that table like a bearer token's. A provider user asking for another
provider's concern, meeting, action, file or profile gets 404, as for one that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import UploadFile
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from services.workspace import auth, charts, public, store, uploads
from services.workspace.commands import Owner, Refused
from shared.identity import (
    ICB_STAFF,
    LAY_MEMBER,
    OPERATOR,
    PROVIDER_USER,
    QUALITY_LEAD,
    QUALITY_TEAM,
    ROLES,
    Access,
    Identity,
    RouteKey,
    allow,
)

if TYPE_CHECKING:
    from services.workspace.app import WorkspaceRuntime

LONDON = ZoneInfo("Europe/London")
HERE = Path(__file__).parent
READERS = (*ICB_STAFF, PROVIDER_USER)
COMMISSIONER = (QUALITY_TEAM, QUALITY_LEAD)
SIGN_IN = Access(public=True, note="signing in (no session yet)")
STATIC = Access(public=True, note="static files: the NHS.UK frontend's CSS, JS and images")

ACCESS: dict[RouteKey, Access] = {
    ("GET", "/sign-in"): SIGN_IN,
    ("POST", "/sign-in"): SIGN_IN,
    ("GET", "/oidc/login"): SIGN_IN,
    ("GET", "/oidc/callback"): SIGN_IN,
    ("GET", "/nhsuk"): STATIC,
    ("GET", "/assets"): STATIC,
    ("GET", "/static"): STATIC,
    ("POST", "/sign-out"): allow(*ROLES),
    ("GET", "/"): allow(*READERS),
    ("GET", "/overview/open-concerns"): allow(*READERS),
    ("GET", "/concerns"): allow(*READERS),
    ("GET", "/concerns/{concern_id}"): allow(*READERS),
    ("POST", "/concerns/{concern_id}/actions"): allow(*COMMISSIONER),
    ("POST", "/concerns/{concern_id}/close"): allow(QUALITY_LEAD),
    ("POST", "/concerns/{concern_id}/comments"): allow(*COMMISSIONER, LAY_MEMBER, PROVIDER_USER),
    ("GET", "/meetings/{meeting_id}"): allow(*READERS),
    ("POST", "/meetings/{meeting_id}/outcome"): allow(*COMMISSIONER),
    ("POST", "/meetings/{meeting_id}/reschedule"): allow(*COMMISSIONER),
    ("POST", "/meetings/{meeting_id}/cancel"): allow(*COMMISSIONER),
    ("GET", "/reviews"): allow(*COMMISSIONER, LAY_MEMBER),
    ("POST", "/reviews/{concern_id}/confirm"): allow(*COMMISSIONER),
    ("POST", "/reviews/{concern_id}/dismiss"): allow(*COMMISSIONER),
    ("POST", "/actions/{action_id}/complete"): allow(*COMMISSIONER, PROVIDER_USER),
    ("GET", "/evidence/{file_id}"): allow(*READERS),
    ("GET", "/providers/{ods_code}"): allow(*READERS),
    ("GET", "/operations"): allow(OPERATOR),
    # A member of the public's reference and contact details (kept by intake, read there).
    ("GET", "/public-feedback/{feedback_id}"): allow(*COMMISSIONER),
    ("GET", "/operations/quarantine"): allow(OPERATOR),
    ("GET", "/operations/quarantine/{submission_id}"): allow(OPERATOR),
    ("POST", "/operations/quarantine/{submission_id}/resubmit"): allow(OPERATOR),
    ("GET", "/operations/feeds"): allow(OPERATOR),
    # Every service's dead letters: each service answers for its own queues (GET
    # /v1/dead-letters), the workspace for its own.
    ("GET", "/operations/dead-letters"): allow(OPERATOR),
    # Reports are quality-monitor's: listed and passed on from its API as the person (a
    # provider user sees its own providers' only: quality-monitor checks).
    ("GET", "/reports"): allow(*READERS),
    ("GET", "/reports/{report_id}/{fmt}"): allow(*READERS),
    ("GET", "/operations/deliveries"): allow(OPERATOR),
    ("POST", "/operations/deliveries/{notification_id}/retry"): allow(OPERATOR),
    # The public's door: the feedback page anyone may use (public.py).
    **public.ACCESS,
}
# Paths a browser without a session may reach (everything else sends it to sign in).
OPEN_PREFIXES = ("/sign-in", "/oidc/", "/nhsuk/", "/assets/", "/static/", "/health",
                 public.PREFIX)
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self';"
     b" script-src 'self'; font-src 'self'; connect-src 'self'; frame-ancestors 'none';"
     b" base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


# -- formatting -------------------------------------------------------------------------------
def london(value: datetime | None, with_time: bool = True) -> str:
    if value is None:
        return ""
    local = value.astimezone(LONDON)
    return local.strftime("%-d %B %Y, %H:%M" if with_time else "%-d %B %Y")


def long_date(value: date | None) -> str:
    return value.strftime("%-d %B %Y") if value else ""


def severity_tag(severity: str) -> str:
    return {"serious": "nhsuk-tag--red", "high": "nhsuk-tag--orange",
            "moderate": "nhsuk-tag--yellow", "low": "nhsuk-tag--grey"}.get(severity, "")


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(london=london, long_date=long_date, severity_tag=severity_tag,
                       label=lambda s: str(s or "").replace("_", " "))
    return env


# -- the session --------------------------------------------------------------------------------
class SignedIn:
    """ASGI middleware: the session cookie's person becomes the request's identity; without
    one, a page sends the browser to sign in. Security headers go on every response."""

    def __init__(self, app: ASGIApp, runtime: WorkspaceRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        cookie = _cookie(headers.get("cookie", ""), auth.COOKIE)
        session = await auth.load_session(self.runtime.pool, cookie, self.runtime.clock()) \
            if cookie else None
        if session is not None:
            state = scope.setdefault("state", {})
            state["identity"] = session.identity
            state["session"] = session
        elif not path.startswith(OPEN_PREFIXES) and "authorization" not in headers \
                and "text/html" in headers.get("accept", ""):
            # A browser (it asks for HTML) goes to sign in; a script gets AccessControl's 401.
            target = path + (f"?{scope['query_string'].decode()}" if scope.get("query_string")
                             else "")
            response = RedirectResponse(f"/sign-in?next={quote(target)}", status_code=303)
            await response(scope, receive, send)
            return

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                # A response with a stricter policy of its own (a report's HTML) keeps it.
                own = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in SECURITY_HEADERS if h[0] not in own)]
            await send(message)

        await self.app(scope, receive, secured)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def session_of(request: Request) -> auth.Session:
    session = request.state.session
    assert isinstance(session, auth.Session)
    return session


def scope_of(who: Identity) -> list[str] | None:
    """The providers a person's pages are limited to (None: all of them)."""
    return sorted(who.ods_codes) if who.provider_scoped else None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# -- pages --------------------------------------------------------------------------------------
def add_pages(runtime: WorkspaceRuntime) -> None:
    api = runtime.http.api
    runtime.http.without_index()  # `/` is the overview here
    runtime.http.declare(ACCESS)
    api.add_middleware(SignedIn, runtime=runtime)
    settings = runtime.workspace
    env = templates()
    oidc = auth.Oidc(settings)
    escalation = Owner("escalation", settings.escalation_url, settings.token)
    monitor = Owner("quality-monitor", settings.monitor_url, settings.token)
    intake = Owner("intake", settings.intake_url, settings.token)
    notification = Owner("notification", settings.notification_url, settings.token)
    if settings.assets_dir.is_dir():
        api.mount("/nhsuk", StaticFiles(directory=settings.assets_dir), name="nhsuk")
        api.mount("/assets", StaticFiles(directory=settings.assets_dir / "assets"), name="assets")
    api.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        html = env.get_template(template).render(
            request=request, session=session, who=session.identity if session else None,
            oidc=oidc if oidc.enabled else None, oidc_label=settings.oidc_label,
            live_interval=settings.live_interval, **context)
        return HTMLResponse(html, status_code=status)

    public.add_public_pages(runtime, render)

    def not_found(request: Request) -> HTMLResponse:
        return render(request, "error.html", 404, title="Page not found",
                      message="If you typed the web address, check it is correct.")

    async def form(request: Request) -> dict[str, Any] | None:
        """The posted form, or None when its CSRF token is not this session's."""
        data = await request.form(max_files=1, max_fields=30)
        fields = {k: v for k, v in data.multi_items()}
        token = fields.get("csrf_token")
        if not isinstance(token, str) or not auth.csrf_ok(session_of(request), token):
            return None
        return fields

    def csrf_refused(request: Request) -> HTMLResponse:
        return render(request, "error.html", 403, title="Your form has expired",
                      message="Go back, reload the page and try again.")

    async def audit(request: Request, action: str, target: str, outcome: str,
                    detail: dict[str, Any] | None = None) -> None:
        who = session_of(request).identity.account
        await store.audit(runtime.pool, at=runtime.clock(), actor=who, action=action,
                          target=target, outcome=outcome, detail=detail)

    async def read(work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        async with runtime.pool.acquire() as conn:
            return await work(conn)

    def home_of(who: Identity) -> str:
        return "/operations" if who.roles == frozenset({OPERATOR}) else "/"

    # -- signing in ---------------------------------------------------------------------------
    def set_cookie(response: Response, session_id: str) -> None:
        response.set_cookie(auth.COOKIE, session_id, max_age=auth.SESSION_HOURS * 3600,
                            httponly=True, samesite="lax", secure=not settings.insecure_cookies,
                            path="/")

    @api.get("/sign-in", include_in_schema=False)
    async def sign_in_page(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "sign_in.html", next=auth.safe_next(next), errors=[])

    @api.post("/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        data = await request.form(max_files=0, max_fields=5)
        name = str(data.get("email", "")).strip().lower()[:200]
        password = str(data.get("password", ""))[:1024]
        next_path = auth.safe_next(str(data.get("next", "/")))
        person = await auth.check_password(runtime.pool, name, password) \
            if name and password else None
        now = runtime.clock()
        if person is None:
            await store.audit(runtime.pool, at=now, actor=name or "(blank)", action="sign in",
                              target="password", outcome="refused")
            return render(request, "sign_in.html", 401, next=next_path, email=name, errors=[
                ("email", "Enter a correct email address and password")])
        session_id = await auth.open_session(runtime.pool, person["name"], "password", now)
        await store.audit(runtime.pool, at=now, actor=person["name"], action="sign in",
                          target="password", outcome="signed in")
        roles = frozenset(person["roles"])
        target = "/operations" if roles == {OPERATOR} and next_path == "/" else next_path
        response = RedirectResponse(target, status_code=303)
        set_cookie(response, session_id)
        return response

    @api.get("/oidc/login", include_in_schema=False)
    async def oidc_login(request: Request, next: str = "/") -> Response:
        if not oidc.enabled:
            return not_found(request)
        url = await oidc.start(runtime.pool, next, runtime.clock())
        return RedirectResponse(url, status_code=303)

    @api.get("/oidc/callback", include_in_schema=False)
    async def oidc_callback(request: Request, code: str = "", state: str = "",
                            error: str = "") -> Response:
        if not oidc.enabled:
            return not_found(request)
        now = runtime.clock()
        try:
            if error or not code or not state:
                raise auth.OidcError(f"the identity provider said: {error or 'no code'}")
            person, next_path = await oidc.finish(runtime.pool, code, state, now)
        except auth.OidcError as exc:
            await store.audit(runtime.pool, at=now, actor="(unknown)", action="sign in",
                              target="oidc", outcome=f"refused: {exc}")
            return render(request, "sign_in.html", 401, next="/", errors=[("", str(exc))])
        session_id = await auth.open_session(runtime.pool, person["name"], "oidc", now)
        await store.audit(runtime.pool, at=now, actor=person["name"], action="sign in",
                          target="oidc", outcome="signed in")
        response = RedirectResponse(next_path, status_code=303)
        set_cookie(response, session_id)
        return response

    @api.post("/sign-out", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        if await form(request) is None:
            return csrf_refused(request)
        cookie = _cookie(request.headers.get("cookie", ""), auth.COOKIE)
        if cookie:
            await auth.end_session(runtime.pool, cookie)
        await audit(request, "sign out", "", "signed out")
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(auth.COOKIE, path="/")
        return response

    # -- overview -----------------------------------------------------------------------------
    async def open_concerns(conn: asyncpg.Connection, who: Identity) -> list[dict[str, Any]]:
        return await store.with_next_meeting(conn, await store.search_concerns(
            conn, scope_of(who), status="open", limit=25))

    @api.get("/", include_in_schema=False)
    async def overview(request: Request) -> HTMLResponse:
        who = session_of(request).identity
        now = runtime.clock()
        today = now.astimezone(LONDON).date()
        monday = today - timedelta(days=today.weekday())
        week_start = datetime.combine(monday, time(0), LONDON)
        scope = scope_of(who)

        async def work(conn: asyncpg.Connection) -> dict[str, Any]:
            meetings = await store.meetings_between(conn, scope, week_start,
                                                    week_start + timedelta(days=7))
            replies = await store.replies_of(conn, [m["meeting_id"] for m in meetings])
            for m in meetings:
                m["rsvp"] = store.rsvp_summary(store.rsvps(m, replies.get(m["meeting_id"], {})))
            return {
                "counts": await store.open_by_severity(conn, scope),
                "concerns": await open_concerns(conn, who),
                "meetings": meetings,
                "overdue": await store.overdue_actions(conn, scope, today),
                # Possible risks name providers side by side: the commissioner's people only.
                "reviews": await store.review_queue(conn, None, 10)
                if not who.provider_scoped else [],
            }
        return render(request, "overview.html", title="Overview", week_start=monday,
                      **await read(work))

    @api.get("/overview/open-concerns", include_in_schema=False)
    async def open_concerns_fragment(request: Request) -> HTMLResponse:
        """The overview's open concerns, for the page's script to refresh in place."""
        who = session_of(request).identity
        concerns = await read(lambda conn: open_concerns(conn, who))
        return render(request, "_open_concerns.html", concerns=concerns)

    # -- concerns -------------------------------------------------------------------------------
    @api.get("/concerns", include_in_schema=False)
    async def search(request: Request, provider: str = "", severity: str = "", status: str = "",
                     since: str = "", until: str = "") -> HTMLResponse:
        who = session_of(request).identity
        errors = []
        dates: dict[str, datetime | None] = {}
        for name, value in (("since", since), ("until", until)):
            try:
                day = date.fromisoformat(value) if value else None
            except ValueError:
                errors.append((name, "Enter a real date"))
                day = None
            dates[name] = datetime.combine(day, time(0), LONDON) if day else None
        if dates["until"] is not None:
            dates["until"] += timedelta(days=1)
        severity = severity if severity in store.SEVERITIES else ""
        status = status if status in ("open", "resolved", "closed") else ""
        concerns = await read(lambda conn: store.search_concerns(
            conn, scope_of(who), provider=provider.strip()[:10] or None,
            severity=severity or None, status=status or None, since=dates["since"],
            until=dates["until"], limit=200))
        return render(request, "concerns.html", title="Concerns", concerns=concerns,
                      errors=errors, filters={"provider": provider, "severity": severity,
                                              "status": status, "since": since, "until": until},
                      severities=store.SEVERITIES)

    async def concern_page(request: Request, concern_id: str, status: int = 200,
                           errors: list[tuple[str, str]] | None = None) -> HTMLResponse:
        who = session_of(request).identity
        cid = _uuid(concern_id)
        concern = await read(lambda conn: store.get_concern(conn, cid)) if cid else None
        if concern is None or not who.may_see(concern["ods_code"]):
            return not_found(request)
        parts = await read(lambda conn: store.concern_parts(conn, concern["concern_id"]))
        # The evidence a page at a time, latest first: never the whole of a big concern.
        per_page = runtime.settings.evidence_listed
        pages = max(1, -(-concern["evidence_count"] // per_page))
        asked = request.query_params.get("evidence_page", "1")
        page = int(asked) if asked.isdigit() else 0
        if not 1 <= page <= pages:
            status, page = 400, 1
            errors = [*(errors or []), ("evidence_page", "The page of evidence must be a whole"
                                        f" number from 1 to {pages}")]
        evidence = await read(lambda conn: store.evidence_page(
            conn, concern["concern_id"], page, per_page))
        return render(request, "concern.html", status, title=f"Concern: {concern['theme']}",
                      concern=concern, errors=errors or [], today=runtime.clock().date(),
                      pending_review=store.pending_review(concern), evidence=evidence,
                      **parts)

    @api.get("/concerns/{concern_id}", include_in_schema=False)
    async def concern_view(request: Request, concern_id: str) -> HTMLResponse:
        return await concern_page(request, concern_id)

    async def visible_concern(request: Request, concern_id: str) -> dict[str, Any] | None:
        cid = _uuid(concern_id)
        concern = await read(lambda conn: store.get_concern(conn, cid)) if cid else None
        if concern is None or not session_of(request).identity.may_see(concern["ods_code"]):
            return None
        return concern

    async def concern_form(request: Request, concern_id: str
                           ) -> tuple[dict[str, Any], dict[str, Any]] | Response:
        """A form posted about a concern the person may see, with a valid CSRF token (or the
        page that says why not)."""
        fields = await form(request)
        if fields is None:
            return csrf_refused(request)
        concern = await visible_concern(request, concern_id)
        if concern is None:
            return not_found(request)
        return fields, concern

    async def command(request: Request, action: str, target: str, path: str,
                      body: dict[str, Any], owner: Owner = escalation
                      ) -> tuple[dict[str, Any] | None, str | None]:
        """Send a command to its owner (escalation unless said) for the signed-in person;
        audit it either way."""
        who = session_of(request).identity
        try:
            result = await owner.send(who, path, body)
        except Refused as refused:
            await audit(request, action, target, f"refused ({refused.status}): {refused}", body)
            return None, str(refused)
        await audit(request, action, target, "done", body)
        return result, None

    @api.post("/concerns/{concern_id}/actions", include_in_schema=False)
    async def add_action(request: Request, concern_id: str) -> Response:
        posted = await concern_form(request, concern_id)
        if isinstance(posted, Response):
            return posted
        fields, concern = posted
        action, errors = action_fields(fields, "")
        if errors:
            return await concern_page(request, concern_id, 400, errors)
        result, refused = await command(request, "add remedial action", concern_id,
                                        f"/v1/concerns/{concern['concern_id']}/actions", action)
        if refused:
            return await concern_page(request, concern_id, 409, [("", refused)])
        assert result is not None
        who = session_of(request).identity
        async with runtime.pool.acquire() as conn, conn.transaction():
            await store.action(conn, concern["concern_id"], concern["ods_code"], result,
                               runtime.clock())
            await store.timeline(conn, concern["concern_id"], concern["ods_code"],
                                 runtime.clock(), store.Entry("Remedial action agreed",
                                                              action["description"]),
                                 actor=f"{who.account} (via workspace)")
        return RedirectResponse(f"/concerns/{concern_id}#actions", status_code=303)

    @api.post("/concerns/{concern_id}/close", include_in_schema=False)
    async def close(request: Request, concern_id: str) -> Response:
        posted = await concern_form(request, concern_id)
        if isinstance(posted, Response):
            return posted
        fields, concern = posted
        reason = str(fields.get("reason", "")).strip()
        if not reason:
            return await concern_page(request, concern_id, 400,
                                      [("reason", "Enter why the concern can be closed")])
        _, refused = await command(request, "close concern", concern_id,
                                   f"/v1/concerns/{concern['concern_id']}/close",
                                   {"reason": reason[:4000]})
        if refused:
            return await concern_page(request, concern_id, 409, [("reason", refused)])
        async with runtime.pool.acquire() as conn:
            await store.closed_now(conn, concern["concern_id"], reason, runtime.clock())
        return RedirectResponse(f"/concerns/{concern_id}", status_code=303)

    @api.post("/concerns/{concern_id}/comments", include_in_schema=False)
    async def add_comment(request: Request, concern_id: str) -> Response:
        posted = await concern_form(request, concern_id)
        if isinstance(posted, Response):
            return posted
        fields, concern = posted
        body = str(fields.get("comment", "")).strip()
        if not body or len(body) > 4000:
            return await concern_page(request, concern_id, 400, [
                ("comment", "Enter a comment of at most 4,000 characters")])
        who = session_of(request).identity
        meeting_id = _uuid(str(fields.get("meeting_id", "")))
        async with runtime.pool.acquire() as conn:
            await store.comment(conn, concern_id=concern["concern_id"], meeting_id=meeting_id,
                                ods_code=concern["ods_code"], author=who.account,
                                role=sorted(who.roles)[0], body=body, at=runtime.clock())
        await audit(request, "comment", concern_id, "done", {"length": len(body)})
        back = f"/meetings/{meeting_id}" if meeting_id else f"/concerns/{concern_id}"
        return RedirectResponse(f"{back}#comments", status_code=303)

    # -- meetings ---------------------------------------------------------------------------------
    async def meeting_page(request: Request, meeting_id: str, status: int = 200,
                           errors: list[tuple[str, str]] | None = None) -> HTMLResponse:
        who = session_of(request).identity
        mid = _uuid(meeting_id)
        meeting = await read(lambda conn: store.get_meeting(conn, mid)) if mid else None
        if meeting is None or not who.may_see(meeting["ods_code"]):
            return not_found(request)
        concern = await read(lambda conn: store.get_concern(conn, meeting["concern_id"]))
        on_agenda = await read(lambda conn: store.concerns_of_meeting(conn,
                                                                      meeting["meeting_id"]))
        parts = await read(lambda conn: store.concern_parts(conn, meeting["concern_id"]))
        comments = [c for c in parts["comments"] if c["meeting_id"] == meeting["meeting_id"]]
        replies = await read(lambda conn: store.replies_of(conn, [meeting["meeting_id"]]))
        attendees = store.rsvps(meeting, replies.get(meeting["meeting_id"], {}))
        return render(request, "meeting.html", status, title=meeting["title"], meeting=meeting,
                      concern=concern, on_agenda=on_agenda, actions=parts["actions"],
                      comments=comments, attendees=attendees,
                      rsvp=store.rsvp_summary(attendees),
                      errors=errors or [], started=meeting["starts_at"] <= runtime.clock())

    @api.get("/meetings/{meeting_id}", include_in_schema=False)
    async def meeting_view(request: Request, meeting_id: str) -> HTMLResponse:
        return await meeting_page(request, meeting_id)

    async def open_meeting(request: Request, meeting_id: str
                           ) -> tuple[dict[str, Any], dict[str, Any]] | Response:
        """A form posted about a meeting the person may see, with a valid CSRF token (or the
        page that says why not)."""
        fields = await form(request)
        if fields is None:
            return csrf_refused(request)
        mid = _uuid(meeting_id)
        meeting = await read(lambda conn: store.get_meeting(conn, mid)) if mid else None
        if meeting is None or not session_of(request).identity.may_see(meeting["ods_code"]):
            return not_found(request)
        return fields, meeting

    @api.post("/meetings/{meeting_id}/outcome", include_in_schema=False)
    async def outcome(request: Request, meeting_id: str) -> Response:
        posted = await open_meeting(request, meeting_id)
        if isinstance(posted, Response):
            return posted
        fields, meeting = posted
        text = str(fields.get("outcome", "")).strip()
        errors = [] if text else [("outcome", "Enter what the meeting decided")]
        actions = []
        for n in ("1", "2"):
            if any(str(fields.get(f"{k}{n}", "")).strip() for k in ("description", "owner")):
                action, problems = action_fields(fields, n)
                errors += problems
                actions.append(action)
        if errors:
            return await meeting_page(request, meeting_id, 400, errors)
        result, refused = await command(request, "record meeting outcome", meeting_id,
                                        f"/v1/meetings/{meeting_id}/outcome",
                                        {"outcome": text[:4000], "actions": actions})
        if refused:
            return await meeting_page(request, meeting_id, 409, [("outcome", refused)])
        assert result is not None
        who = session_of(request).identity
        now = runtime.clock()
        async with runtime.pool.acquire() as conn, conn.transaction():
            await store.held(conn, meeting["meeting_id"], text)
            # The plan belongs to the agenda's first open concern (escalation's answer says
            # which); the outcome goes on the timeline of every concern on the agenda.
            for added in result.get("actions", []):
                await store.action(conn, uuid.UUID(str(added.get("concern_id")
                                                       or meeting["concern_id"])),
                                   meeting["ods_code"], added, now)
            for on_agenda in await store.concerns_of_meeting(conn, meeting["meeting_id"]):
                await store.timeline(conn, on_agenda["concern_id"], meeting["ods_code"], now,
                                     store.Entry("Meeting outcome recorded", text),
                                     actor=f"{who.account} (via workspace)")
        return RedirectResponse(f"/meetings/{meeting_id}", status_code=303)

    @api.post("/meetings/{meeting_id}/reschedule", include_in_schema=False)
    async def reschedule(request: Request, meeting_id: str) -> Response:
        posted = await open_meeting(request, meeting_id)
        if isinstance(posted, Response):
            return posted
        fields, meeting = posted
        reason = str(fields.get("reschedule_reason", "")).strip()
        errors = [] if reason else [("reschedule_reason", "Enter why the meeting moves")]
        to, problem = london_time(str(fields.get("to", "")).strip())
        if problem:
            errors.append(("to", problem))
        if errors:
            return await meeting_page(request, meeting_id, 400, errors)
        body: dict[str, Any] = {"reason": reason[:4000]}
        if to is not None:
            body["to"] = to.isoformat()
        result, refused = await command(request, "reschedule meeting", meeting_id,
                                        f"/v1/meetings/{meeting_id}/reschedule", body)
        if refused:
            return await meeting_page(request, meeting_id, 409, [("to", refused)])
        assert result is not None
        async with runtime.pool.acquire() as conn:
            await store.meeting_changed(
                conn, meeting["meeting_id"],
                starts_at=datetime.fromisoformat(str(result["starts_at"])),
                ends_at=datetime.fromisoformat(str(result["ends_at"])))
        return RedirectResponse(f"/meetings/{meeting_id}", status_code=303)

    @api.post("/meetings/{meeting_id}/cancel", include_in_schema=False)
    async def cancel(request: Request, meeting_id: str) -> Response:
        posted = await open_meeting(request, meeting_id)
        if isinstance(posted, Response):
            return posted
        fields, meeting = posted
        reason = str(fields.get("cancel_reason", "")).strip()
        if not reason:
            return await meeting_page(request, meeting_id, 400, [
                ("cancel_reason", "Enter why the meeting is cancelled")])
        _, refused = await command(request, "cancel meeting", meeting_id,
                                   f"/v1/meetings/{meeting_id}/cancel", {"reason": reason[:4000]})
        if refused:
            return await meeting_page(request, meeting_id, 409, [("cancel_reason", refused)])
        async with runtime.pool.acquire() as conn:
            await store.meeting_changed(conn, meeting["meeting_id"],
                                        cancelled=f"cancelled by the quality team: {reason}")
        return RedirectResponse(f"/meetings/{meeting_id}", status_code=303)

    # -- the review of possible serious risks ------------------------------------------------
    @api.get("/reviews", include_in_schema=False)
    async def reviews(request: Request) -> HTMLResponse:
        queue = await read(lambda conn: store.review_queue(conn, None, 200))
        return render(request, "reviews.html", title="Review queue", reviews=queue)

    async def decide(request: Request, concern_id: str, decision: str) -> Response:
        posted = await concern_form(request, concern_id)
        if isinstance(posted, Response):
            return posted
        fields, concern = posted
        reason = str(fields.get("review_reason", "")).strip()
        if decision == "dismissed" and not reason:
            return await concern_page(request, concern_id, 400, [
                ("review_reason", "Enter why this is not a serious risk")])
        verb = "confirm" if decision == "confirmed" else "dismiss"
        _, refused = await command(request, f"{verb} possible risk", concern_id,
                                   f"/v1/reviews/{concern['concern_id']}/{verb}",
                                   {"reason": reason[:4000] or None}, owner=monitor)
        if refused:
            return await concern_page(request, concern_id, 409, [("review_reason", refused)])
        async with runtime.pool.acquire() as conn:
            await store.review_decided(conn, concern["concern_id"], decision, reason,
                                       runtime.clock())
        return RedirectResponse(f"/concerns/{concern_id}", status_code=303)

    @api.post("/reviews/{concern_id}/confirm", include_in_schema=False)
    async def confirm(request: Request, concern_id: str) -> Response:
        return await decide(request, concern_id, "confirmed")

    @api.post("/reviews/{concern_id}/dismiss", include_in_schema=False)
    async def dismiss(request: Request, concern_id: str) -> Response:
        return await decide(request, concern_id, "dismissed")

    # -- actions and evidence ---------------------------------------------------------------------
    @api.post("/actions/{action_id}/complete", include_in_schema=False)
    async def complete(request: Request, action_id: str) -> Response:
        fields = await form(request)
        if fields is None:
            return csrf_refused(request)
        who = session_of(request).identity
        aid = _uuid(action_id)
        action = await read(lambda conn: store.get_action(conn, aid)) if aid else None
        if action is None or not who.may_see(action["ods_code"]):
            return not_found(request)
        concern_id = str(action["concern_id"])
        note = str(fields.get("evidence", "")).strip()
        upload = fields.get("file")
        checked = None
        data = b""
        if isinstance(upload, UploadFile) and upload.filename:
            data = await upload.read(settings.upload_limit + 1)
            checked = uploads.check(upload.filename, data, settings.upload_limit)
            if checked.problems:
                await audit(request, "upload evidence", action_id,
                            f"refused: {'; '.join(checked.problems)}")
                return await concern_page(request, concern_id, 400,
                                          [("file", p) for p in checked.problems])
        if not note and checked is None:
            return await concern_page(request, concern_id, 400, [
                ("evidence", "Describe the evidence of completion or upload a file")])
        digest = hashlib.sha256(data).hexdigest() if checked else ""
        evidence = note or "See the uploaded file"
        if checked:
            evidence += f" (file {checked.filename}, sha256 {digest[:16]})"
        result, refused = await command(request, "complete action", action_id,
                                        f"/v1/actions/{action_id}/complete",
                                        {"evidence": evidence[:4000]})
        if refused:
            return await concern_page(request, concern_id, 409, [("evidence", refused)])
        assert result is not None
        now = runtime.clock()
        async with runtime.pool.acquire() as conn, conn.transaction():
            if checked is not None:
                assert checked.content_type is not None
                await store.evidence_file(conn, action=action, filename=checked.filename,
                                          content_type=checked.content_type, data=data,
                                          sha256=digest, by=who.account, at=now)
            await store.action(conn, action["concern_id"], action["ods_code"], result, now)
            await store.timeline(conn, action["concern_id"], action["ods_code"], now,
                                 store.Entry("Remedial action completed", evidence),
                                 actor=f"{who.account} (via workspace)")
        return RedirectResponse(f"/concerns/{concern_id}#actions", status_code=303)

    @api.get("/evidence/{file_id}", include_in_schema=False)
    async def evidence(request: Request, file_id: str) -> Response:
        who = session_of(request).identity
        fid = _uuid(file_id)
        row = await read(lambda conn: store.get_file(conn, fid)) if fid else None
        if row is None or not who.may_see(row["ods_code"]):
            return not_found(request)
        await audit(request, "download evidence", file_id, "done")
        return Response(bytes(row["data"]), media_type=row["content_type"], headers={
            "content-disposition": f'attachment; filename="{row["filename"]}"',
            "cache-control": "private, no-store"})

    # -- providers --------------------------------------------------------------------------------
    @api.get("/providers/{ods_code}", include_in_schema=False)
    async def provider(request: Request, ods_code: str) -> HTMLResponse:
        who = session_of(request).identity
        ods = ods_code.upper()[:10]
        found = await read(lambda conn: store.get_provider(conn, ods))
        if found is None or not who.may_see(ods):
            return not_found(request)
        now = runtime.clock()
        first = charts.window_start(now.astimezone(LONDON).date(), 12)
        since = datetime.combine(first, time(0), LONDON)

        async def work(conn: asyncpg.Connection) -> dict[str, Any]:
            return {"concerns": await store.search_concerns(conn, None, provider=ods, limit=100),
                    "measures": await store.measure_concerns(conn, ods),
                    **await store.provider_parts(conn, ods, since)}
        parts = await read(work)
        chart = charts.monthly_bars(parts["monthly"], first, 12,
                                    title=f"Concerns raised each month: {found['name']}")
        spc, funnels = charts.measure_signals(parts.pop("measures"))
        return render(request, "provider.html", title=found["name"], provider=found,
                      chart=chart, spc=spc, funnels=funnels, **parts)

    # -- the public's contact details ---------------------------------------------------------------
    @api.get("/public-feedback/{feedback_id}", include_in_schema=False)
    async def public_contact(request: Request, feedback_id: str) -> Response:
        """Read from intake as the workspace, on the person's behalf: intake checks their
        roles and records the read as ``person (via workspace)``; nothing is kept here."""
        fid = _uuid(feedback_id)
        if fid is None:
            return not_found(request)
        try:
            found = await intake.ask(session_of(request).identity, f"/v1/public-feedback/{fid}")
        except Refused as refused:
            await audit(request, "read public contact details", feedback_id,
                        f"refused ({refused.status}): {refused}")
            if refused.status == 404:
                return not_found(request)
            return render(request, "error.html", 503, title="Contact details not available",
                          message=str(refused))
        await audit(request, "read public contact details", feedback_id, "done")
        response = render(request, "public_contact.html", title="Reference and contact details",
                          items=found.get("items", []))
        response.headers["cache-control"] = "private, no-store"
        return response

    # -- operations -------------------------------------------------------------------------------
    @api.get("/operations", include_in_schema=False)
    async def operations(request: Request) -> HTMLResponse:
        checks = await runtime.operations.readiness()
        try:
            depths = await runtime.operations.dead_letter_depths()
        except Exception as exc:
            depths = {f"(could not read the broker: {type(exc).__name__})": 0}
        recent = await read(lambda conn: conn.fetch(
            "SELECT at, actor, action, target, outcome FROM workspace.audit_log"
            " ORDER BY entry_id DESC LIMIT 20"))
        return render(request, "operations.html", title="Operations", checks=checks,
                      depths=depths, audit=[dict(r) for r in recent])

    # The quarantine and the feeds are intake's: asked of its API each time (no event
    # carries them), as the signed-in operator via the workspace.
    async def ask(owner: Owner, request: Request, path: str,
                  params: dict[str, Any] | None = None) -> tuple[Any, str | None]:
        """Read from the service that owns it, for the signed-in person: (answer, None), or
        (None, why it was refused) to show on the page."""
        try:
            return await owner.ask(session_of(request).identity, path, params), None
        except Refused as refused:
            return None, str(refused)

    async def ask_intake(request: Request, path: str, params: dict[str, Any] | None = None
                         ) -> tuple[Any, str | None]:
        return await ask(intake, request, path, params)

    @api.get("/operations/quarantine", include_in_schema=False)
    async def quarantine(request: Request, status: str = "open") -> HTMLResponse:
        status = status if status in ("open", "resubmitted", "discarded", "expired") else "open"
        rows, problem = await ask_intake(request, "/v1/quarantine",
                                         {"status": status, "limit": 200})
        for row in rows or []:
            row["received_at"] = datetime.fromisoformat(row["received_at"])
            row["reasons"] = reasons_text(row["reasons"])
        return render(request, "quarantine.html", title="Quarantine", rows=rows or [],
                      shown=status, errors=[("", problem)] if problem else [])

    async def quarantined_page(request: Request, submission_id: str, status: int = 200,
                               errors: list[tuple[str, str]] | None = None,
                               outcome: dict[str, Any] | None = None) -> HTMLResponse:
        sid = _uuid(submission_id)
        if sid is None:
            return not_found(request)
        row, problem = await ask_intake(request, f"/v1/quarantine/{sid}")
        if row is None:
            return not_found(request) if problem and "no quarantined" in problem else render(
                request, "error.html", 503, title="intake could not answer", message=problem)
        row["received_at"] = datetime.fromisoformat(row["received_at"])
        row["reasons"] = reasons_text(row["reasons"])
        return render(request, "quarantined.html", status, title="Rejected submission",
                      row=row, errors=errors or [], outcome=outcome)

    @api.get("/operations/quarantine/{submission_id}", include_in_schema=False)
    async def quarantined(request: Request, submission_id: str) -> HTMLResponse:
        return await quarantined_page(request, submission_id)

    @api.post("/operations/quarantine/{submission_id}/resubmit", include_in_schema=False)
    async def resubmit(request: Request, submission_id: str) -> Response:
        if await form(request) is None:
            return csrf_refused(request)
        if _uuid(submission_id) is None:
            return not_found(request)
        result, refused = await command(request, "resubmit quarantined", submission_id,
                                        f"/v1/quarantine/{submission_id}/resubmit", {},
                                        owner=intake)
        if refused:
            return await quarantined_page(request, submission_id, 409, [("", refused)])
        assert result is not None
        result["reasons"] = reasons_text(result.get("reasons", []))
        return await quarantined_page(request, submission_id, outcome=result)

    async def deliveries_page(request: Request, status: int = 200,
                              errors: list[tuple[str, str]] | None = None) -> HTMLResponse:
        rows, problem = await ask(notification, request, "/v1/notifications",
                                  {"status": "failed", "limit": 200})
        rows = rows or []
        if problem:
            errors = [*(errors or []), ("", problem)]
        for row in rows:
            row["created_at"] = datetime.fromisoformat(row["created_at"])
        return render(request, "deliveries.html", status, title="Failed deliveries",
                      rows=rows, errors=errors or [])

    @api.get("/operations/deliveries", include_in_schema=False)
    async def deliveries(request: Request) -> HTMLResponse:
        return await deliveries_page(request)

    @api.post("/operations/deliveries/{notification_id}/retry", include_in_schema=False)
    async def retry_delivery(request: Request, notification_id: str) -> Response:
        if await form(request) is None:
            return csrf_refused(request)
        if _uuid(notification_id) is None:
            return not_found(request)
        _, refused = await command(request, "retry delivery", notification_id,
                                   f"/v1/notifications/{notification_id}/retry", {},
                                   owner=notification)
        if refused:
            return await deliveries_page(request, 409, [("", refused)])
        return RedirectResponse("/operations/deliveries", status_code=303)

    # -- reports: the CQRM packs, the quarterly Q&P report, "you said, we did" ----------------
    @api.get("/reports", include_in_schema=False)
    async def reports(request: Request, kind: str = "") -> HTMLResponse:
        params = {"kind": kind} if kind in REPORT_KINDS else None
        rows, problem = await ask(monitor, request, "/v1/reports", params)
        rows = rows or []
        for row in rows:
            row["kind_name"] = REPORT_KINDS.get(row.get("kind", ""), row.get("kind", ""))
        return render(request, "reports.html", title="Reports", rows=rows, kind=kind,
                      kinds=REPORT_KINDS, errors=[("", problem)] if problem else [])

    @api.get("/reports/{report_id}/{fmt}", include_in_schema=False)
    async def report_file(request: Request, report_id: str, fmt: str) -> Response:
        rid = _uuid(report_id)
        if rid is None or fmt not in ("html", "pdf", "csv", "xlsx"):
            return not_found(request)
        try:
            body, media_type = await monitor.file(session_of(request).identity,
                                                  f"/v1/reports/{rid}/{fmt}")
        except Refused as refused:
            if refused.status == 404:
                return not_found(request)
            return render(request, "reports.html", status=502, title="Reports", rows=[],
                          kind="", kinds=REPORT_KINDS, errors=[("", str(refused))])
        headers = {"Content-Security-Policy": REPORT_HTML_POLICY} if fmt == "html" else {
            "Content-Disposition": f'attachment; filename="report-{rid}.{fmt if fmt != "csv" else "zip"}"'}
        return Response(body, media_type=media_type, headers=headers)

    # Each service's dead letters, from the service itself (its queues, and the errors its
    # consumers recorded in its own tables), the workspace's own read here.
    dead_letter_owners = {"intake": intake, "quality_monitor": monitor,
                          "escalation": escalation, "notification": notification}

    @api.get("/operations/dead-letters", include_in_schema=False)
    async def dead_letters_page(request: Request) -> HTMLResponse:
        who = session_of(request).identity

        async def of(service: str) -> dict[str, Any]:
            try:
                if service == runtime.name:
                    found = await runtime.operations.dead_letters(DEAD_LETTERS_SHOWN)
                else:
                    found = await dead_letter_owners[service].ask(
                        who, "/v1/dead-letters", {"limit": DEAD_LETTERS_SHOWN})
            except Refused as refused:
                return {"service": service, "queues": [], "problem": str(refused)}
            except Exception as exc:  # the broker, for the workspace's own
                return {"service": service, "queues": [],
                        "problem": f"could not read the broker: {type(exc).__name__}"}
            return dead_letter_view(found)
        services = list(await asyncio.gather(*(of(name) for name in (
            *dead_letter_owners, runtime.name))))
        await audit(request, "list dead letters", "", "done",
                    {"messages": sum(q["depth"] or 0 for s in services for q in s["queues"])})
        return render(request, "dead_letters.html", title="Dead letters", services=services,
                      errors=[("", f"{s['service']}: {s['problem']}") for s in services
                              if s.get("problem")])

    @api.get("/operations/feeds", include_in_schema=False)
    async def feeds(request: Request) -> HTMLResponse:
        rows, problem = await ask_intake(request, "/v1/feeds")
        return render(request, "feeds.html", title="Provider feeds", rows=rows or [],
                      errors=[("", problem)] if problem else [])


# A report's HTML is self-contained (its styles inline, its charts as data: images): it may
# load nothing, run nothing and be framed by nothing.
REPORT_HTML_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline';"
                      " frame-ancestors 'none'")
REPORT_KINDS = {"cqrm_pack": "CQRM pack", "quality_performance": "Quality & Performance report",
                "you_said_we_did": "You said, we did"}


DEAD_LETTERS_SHOWN = 20  # messages shown per dead-letter queue


def dead_letter_view(found: dict[str, Any]) -> dict[str, Any]:
    """A service's answer to ``GET /v1/dead-letters`` with its times read (pure)."""
    for queue in found.get("queues", []):
        for m in queue["messages"]:
            for key, holder in (("dead_lettered_at", m), *(("at", e) for e in m["errors"])):
                value = holder.get(key)
                holder[key] = datetime.fromisoformat(value) if isinstance(value, str) else None
    return {"service": found.get("service", ""), "queues": found.get("queues", [])}


def reasons_text(reasons: list[dict[str, Any]]) -> list[str]:
    """intake's refusal reasons as lines (pure)."""
    return [f"{r.get('loc') or 'the message'}: {r.get('msg', '')}" for r in reasons or []]


def london_time(value: str) -> tuple[datetime | None, str | None]:
    """A ``datetime-local`` field's value, read as UK time (None: left blank), or what is
    wrong with it (pure)."""
    if not value:
        return None, None
    try:
        naive = datetime.fromisoformat(value)
    except ValueError:
        return None, "Enter the new start as a date and time, like 2027-03-31T10:00"
    if naive.tzinfo is not None:
        return naive, None
    return naive.replace(tzinfo=LONDON), None


def action_fields(fields: dict[str, Any], n: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A remedial action from a form (``description<n>``, ``owner<n>``, ``due_on<n>``) and
    what is wrong with it (pure)."""
    description = str(fields.get(f"description{n}", "")).strip()
    owner = str(fields.get(f"owner{n}", "")).strip()
    due = str(fields.get(f"due_on{n}", "")).strip()
    errors = []
    if not description:
        errors.append((f"description{n}", "Enter what the action is"))
    if not owner:
        errors.append((f"owner{n}", "Enter who owns the action"))
    try:
        due_on = date.fromisoformat(due).isoformat()
    except ValueError:
        errors.append((f"due_on{n}", "Enter the date the action is due, like 2027-03-31"))
        due_on = ""
    return {"description": description[:4000], "owner": owner[:200], "due_on": due_on}, errors
