"""The public's door (issue 19): the feedback page a patient, carer or member of the public
uses, without signing in, to give feedback to the commissioner or escalate a complaint about
a provider. ``/feedback`` (plain English), ``/feedback/easy-read`` (the easy read version) and
``/feedback/sent`` (the confirmation with the acknowledgement reference).

The page is a door into intake like any feed's: each submission is posted to intake's
``POST /v1/submissions`` as the public's door feed (its API key, ``public_feed_key``), as the
kind ``public_feedback``, and is then validated, redacted, de-duplicated and monitored like
every other. The workspace keeps none of it: the contact details a person gives go to intake,
which withholds them from every event.

Abuse limits: a CSRF token bound to a cookie of the browser (HMAC-signed, no server state),
a honeypot field, a body of at most ``MAX_FORM_BYTES``, field lengths, and rate limits per
client address and for the whole page (``shared.ratelimit``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.workspace import store
from services.workspace.config import WorkspaceSettings
from shared.identity import Access, RouteKey
from shared.ratelimit import RateLimiter

if TYPE_CHECKING:
    from services.workspace.app import WorkspaceRuntime

log = logging.getLogger(__name__)
LONDON = ZoneInfo("Europe/London")

PUBLIC_FORM = Access(public=True, note="the public feedback page: no sign-in (a CSRF token,"
                                       " a honeypot, size and rate limits)")
ACCESS: dict[RouteKey, Access] = {
    ("GET", "/feedback"): PUBLIC_FORM,
    ("POST", "/feedback"): PUBLIC_FORM,
    ("GET", "/feedback/easy-read"): PUBLIC_FORM,
    ("GET", "/feedback/sent"): PUBLIC_FORM,
}
PREFIX = "/feedback"
FORM_COOKIE = "carewatch_form"
TOKEN_HOURS = 4
MAX_FORM_BYTES = 64 * 1024
MAX_DESCRIPTION = 5_000
MAX_OUTCOME = 2_000
HONEYPOT = "website"
# Letters only, no vowels and none that read as another (I, L, O, S, U): a reference holds
# no digits, so it can never look like a phone number, an NHS number, a postcode or a date
# (intake refuses a record id that does), and spells no word.
REFERENCE_LETTERS = "BCDFGHJKMNPQRTVWXYZ"

PURPOSES = [
    ("feedback", "Give feedback about a service", ""),
    ("concern", "Tell us about a worry or concern", "For example, about safety or the care"
                                                    " someone is getting."),
    ("complaint_escalation", "Ask us to look at a complaint",
     "You complained to the service and you are not happy with their answer, or they have"
     " not answered."),
    ("compliment", "Say thank you", ""),
]
RELATIONSHIPS = [
    ("patient", "I am the patient"),
    ("carer", "I look after the patient (I am their carer)"),
    ("relative_or_friend", "I am a relative or friend of the patient"),
    ("member_of_public", "I am a member of the public"),
    ("prefer_not_to_say", "I prefer not to say"),
]
# What it is about, in plain English, and the KO41a subject area it is recorded as.
SUBJECTS = [
    ("treatment", "The treatment or care someone got", "Clinical treatment"),
    ("care", "Being looked after, like help with food, washing or pain", "Patient care"),
    ("appointments", "Getting an appointment", "Appointments"),
    ("waiting", "Waiting times", "Waiting times"),
    ("staff", "How staff behaved", "Values and behaviours (staff)"),
    ("communication", "Being told things, or being listened to", "Communications"),
    ("medicines", "Medicines or prescriptions", "Prescribing"),
    ("discharge", "Going into or leaving hospital", "Admissions, discharges and transfers"),
    ("dignity", "Privacy, dignity or respect", "Privacy, dignity and wellbeing"),
    ("buildings", "Buildings, cleanliness or parking", "Facilities"),
    ("other", "Something else", "Other"),
]
COMPLAINED = [("yes", "Yes"), ("no", "No"), ("not_sure", "I'm not sure")]
CONTACT_BY = [("none", "Do not contact me"), ("email", "By email"), ("phone", "By phone")]
NEEDS = [("easy_read", "Easy read"), ("large_print", "Large print"),
         ("british_sign_language", "British Sign Language"),
         ("interpreter", "An interpreter"), ("braille", "Braille")]
YES_NO = [("yes", "Yes"), ("no", "No")]


# -- tokens and references (pure) ----------------------------------------------------------------
def _mac(secret: str, *parts: str) -> str:
    return hmac.new(secret.encode(), "|".join(parts).encode(), hashlib.sha256).hexdigest()


def issue_token(secret: str, cookie: str, now: float) -> str:
    """A form's CSRF token: a fresh nonce and when it was issued, signed with the browser's
    form cookie. Only a page this site served to that browser holds one."""
    issued, nonce = str(int(now)), secrets.token_urlsafe(16)
    return f"{issued}.{nonce}.{_mac(secret, 'form', cookie, issued, nonce)[:32]}"


def check_token(secret: str, token: str, cookie: str | None, now: float) -> str | None:
    """The token's nonce if this browser's cookie signed it less than TOKEN_HOURS ago."""
    parts = token.split(".")
    if not cookie or len(parts) != 3 or len(token) > 200 or not parts[0].isdigit():
        return None
    issued, nonce, mac = parts
    if not hmac.compare_digest(mac, _mac(secret, "form", cookie, issued, nonce)[:32]):
        return None
    return nonce if 0 <= now - int(issued) <= TOKEN_HOURS * 3600 else None


def reference_for(secret: str, nonce: str) -> str:
    """The acknowledgement reference of one form (the same form sent twice has the same one,
    so intake counts the second as a duplicate): ``CW-`` and eight letters."""
    digest = int(_mac(secret, "reference", nonce), 16)
    letters = ""
    for _ in range(8):
        digest, n = divmod(digest, len(REFERENCE_LETTERS))
        letters += REFERENCE_LETTERS[n]
    return f"CW-{letters[:4]}-{letters[4:]}"


def sent_signature(secret: str, reference: str) -> str:
    return _mac(secret, "sent", reference)[:24]


# -- the form (pure) ----------------------------------------------------------------------------
Errors = list[tuple[str, str]]


@dataclass
class Answers:
    """What was typed into the form, as typed (to show it again with the errors)."""

    values: dict[str, str] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)

    def get(self, name: str) -> str:
        return self.values.get(name, "")


def read_answers(pairs: list[tuple[str, str]]) -> Answers:
    answers = Answers()
    for name, value in pairs:
        if name == "needs":
            answers.needs.append(value)
        else:
            answers.values[name] = value.strip() if name not in ("description",
                                                                 "outcome_wanted") else value
    return answers


def _choice(answers: Answers, name: str, options: Sequence[tuple[str, ...]], errors: Errors,
            message: str | None) -> str | None:
    value = answers.get(name)
    if value in {o[0] for o in options}:
        return value
    if message:
        errors.append((name, message))
    return None


def happened_on(answers: Answers, today: date, errors: Errors) -> date | None:
    """The optional date it happened (day, month, year fields)."""
    parts = [answers.get(f"happened-{p}") for p in ("day", "month", "year")]
    if not any(parts):
        return None
    try:
        day, month, year = (int(p) for p in parts)
        when = date(year, month, day)
    except ValueError:
        errors.append(("happened-day", "Enter a real date, like 27 3 2026, or leave it blank"))
        return None
    if when > today:
        errors.append(("happened-day", "The date must be today or in the past"))
    elif when.year < 1900:
        errors.append(("happened-day", "Enter a year after 1900"))
    else:
        return when
    return None


def submission_of(answers: Answers, providers: dict[str, str], reference: str,
                  today: date) -> tuple[dict[str, Any] | None, Errors]:
    """The ``public_feedback`` submission the answers make, or what is wrong with them (in
    the order the questions are asked, for the error summary)."""
    errors: Errors = []
    ods = answers.get("provider")
    if ods not in providers:
        errors.append(("provider", "Select the service your feedback is about"))
    purpose = _choice(answers, "purpose", PURPOSES, errors, "Select what you would like to do")
    relationship = _choice(answers, "relationship", RELATIONSHIPS, errors,
                           "Select who you are")
    subject = _choice(answers, "subject", SUBJECTS, errors, "Select what it is about")
    when = happened_on(answers, today, errors)
    description = answers.get("description").strip()
    if not description:
        errors.append(("description", "Tell us what happened"))
    elif len(description) > MAX_DESCRIPTION:
        errors.append(("description", f"What happened must be {MAX_DESCRIPTION:,} characters"
                                      " or fewer"))
    outcome = answers.get("outcome_wanted").strip()
    if len(outcome) > MAX_OUTCOME:
        errors.append(("outcome_wanted", f"What you would like to happen must be"
                                         f" {MAX_OUTCOME:,} characters or fewer"))
    complained = _choice(answers, "complained", COMPLAINED, errors, None)
    share = _choice(answers, "share_feedback", YES_NO, errors,
                    "Select yes if we can share what you wrote with the service")
    contact_by = _choice(answers, "contact_by", CONTACT_BY, errors,
                         "Select if and how we should contact you")
    contact: dict[str, str] = {}
    name = answers.get("name")
    if len(name) > 200:
        errors.append(("name", "Your name must be 200 characters or fewer"))
    email, phone = answers.get("email"), answers.get("phone")
    if contact_by == "email":
        if not email:
            errors.append(("email", "Enter your email address, or choose another way"))
        elif len(email) > 254 or not _looks_like_email(email):
            errors.append(("email", "Enter an email address like name@example.com"))
        else:
            contact["email"] = email
    if contact_by == "phone":
        digits = sum(c.isdigit() for c in phone)
        if not phone:
            errors.append(("phone", "Enter your phone number, or choose another way"))
        elif not (9 <= digits <= 15) or any(c not in "0123456789 +()-" for c in phone) \
                or len(phone) > 24 or "+" in phone[1:]:
            errors.append(("phone", "Enter a phone number, like 01632 960 001 or"
                                    " 07700 900 982"))
        else:
            contact["phone"] = phone
    share_identity = answers.get("share_identity") == "yes"
    needs = [n for n in dict.fromkeys(answers.needs) if n in {o[0] for o in NEEDS}]
    if errors:
        return None, errors
    if contact and name:
        contact["name"] = name
    body: dict[str, Any] = {
        "kind": "public_feedback", "version": 1, "ods_code": ods, "record_id": reference,
        "received_on": today.isoformat(), "purpose": purpose, "relationship": relationship,
        "subject_area": next(s[2] for s in SUBJECTS if s[0] == subject),
        "description": description, "consent_share_feedback": share == "yes",
        "consent_share_identity": share_identity and bool(contact),
        "contact_by": contact_by if contact else "none", "communication_needs": needs,
    }
    if outcome:
        body["outcome_wanted"] = outcome
    if when:
        body["happened_on"] = when.isoformat()
    if complained:
        body["complained_to_provider"] = complained
    if contact:
        body["contact"] = contact
    return body, []


def _looks_like_email(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain.strip(".") and not any(
        c.isspace() for c in value) and "@" not in local)


# Where intake's reasons (dotted paths of the submission) point in the form.
REASON_FIELDS = {"ods_code": "provider", "purpose": "purpose", "relationship": "relationship",
                 "subject_area": "subject", "description": "description",
                 "outcome_wanted": "outcome_wanted", "happened_on": "happened-day",
                 "contact.email": "email", "contact.phone": "phone", "contact.name": "name",
                 "contact_by": "contact_by"}


def errors_of_reasons(reasons: list[dict[str, Any]]) -> Errors:
    """Intake's reasons for refusing a submission, as form errors (intake checks again what
    the form checked; anything else is said without a field)."""
    out: Errors = []
    for r in reasons:
        target = REASON_FIELDS.get(str(r.get("loc", "")), "")
        out.append((target, f"This could not be accepted: {r.get('msg', 'invalid')}"))
    return out


def client_address(request: Request, trusted_proxies: frozenset[str]) -> str:
    """The client's address: the connection's, or X-Forwarded-For's first address when the
    connection comes from a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for", "")
    if peer in trusted_proxies and forwarded:
        return forwarded.split(",")[0].strip()[:64] or peer
    return peer


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes (not read further)."""
    body = b""
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return body


# -- intake -------------------------------------------------------------------------------------
NOT_SENT = ("Your feedback has not been sent yet because of a problem on our side. Your"
            " answers are still below: send them again in a few minutes. If someone is in"
            " danger now, call 999. For urgent medical help, call 111.")


class IntakeUnavailable(Exception):
    """Intake could not take the submission now (unreachable, no key, over its limit)."""


@dataclass
class Intake:
    """intake's HTTP API, called as the public's door feed."""

    base_url: str
    key: str | None
    _providers: tuple[float, list[dict[str, str]]] | None = None

    def _headers(self) -> dict[str, str]:
        if not self.key:
            raise IntakeUnavailable("the workspace has no key of the public's door"
                                    " (CAREWATCH_WORKSPACE_PUBLIC_FEED_KEY)")
        return {"Authorization": f"Bearer {self.key}"}

    async def providers(self) -> list[dict[str, str]]:
        """The providers to choose from (kept for 5 minutes; while intake cannot be reached,
        the last list it gave, so a person can still fill the form in)."""
        if self._providers and time.monotonic() - self._providers[0] < 300:
            return self._providers[1]
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
                response = await client.get("/v1/public/providers", headers=self._headers())
            if response.status_code != 200:
                raise IntakeUnavailable(
                    f"intake answered {response.status_code}: {response.text[:500]}")
        except (httpx.HTTPError, IntakeUnavailable) as exc:
            if self._providers:
                log.warning("public feedback page: the providers from %s ago, because %s",
                            f"{time.monotonic() - self._providers[0]:.0f} s", exc)
                return self._providers[1]
            if isinstance(exc, IntakeUnavailable):
                raise
            raise IntakeUnavailable(f"intake could not be reached: {exc}") from exc
        rows = sorted(response.json(), key=lambda r: (r["provider_type"], r["name"]))
        self._providers = (time.monotonic(), rows)
        return rows

    async def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Post one submission; (status, intake's answer)."""
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as client:
                response = await client.post(
                    "/v1/submissions", content=json.dumps(body).encode(),
                    headers={**self._headers(), "Content-Type": "application/json",
                             "Idempotency-Key": f"public:{body['record_id']}"})
        except httpx.HTTPError as exc:
            raise IntakeUnavailable(f"intake could not be reached: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {"detail": response.text[:500]}
        if response.status_code in (401, 403, 429) or response.status_code >= 500:
            raise IntakeUnavailable(f"intake answered {response.status_code}: {answer}")
        return response.status_code, answer


TYPE_NAMES = {"acute": "Hospitals", "mental_health": "Mental health services",
              "community": "Community services", "ambulance": "Ambulance services",
              "specialist": "Specialist hospitals", "gp_practice": "GP surgeries",
              "care_home": "Care homes", "voluntary": "Voluntary and community services"}


def provider_groups(rows: list[dict[str, str]]) -> list[tuple[str, list[dict[str, str]]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(TYPE_NAMES.get(row["provider_type"], "Other services"), []).append(row)
    return sorted(groups.items())


# -- pages --------------------------------------------------------------------------------------
def add_public_pages(runtime: WorkspaceRuntime, render: Callable[..., HTMLResponse],
                     clock: Callable[[], float] = time.time) -> None:
    """The public's routes on the workspace's app (declared in ``ACCESS``)."""
    api = runtime.http.api
    settings: WorkspaceSettings = runtime.workspace
    secret = settings.form_secret or secrets.token_urlsafe(32)
    intake = Intake(settings.intake_url.rstrip("/"), settings.public_feed_key)
    per_client = RateLimiter(settings.public_client_per_hour / 3600,
                             settings.public_client_burst, time.monotonic)
    overall = RateLimiter(settings.public_total_per_second, settings.public_total_burst,
                          time.monotonic)
    proxies = frozenset(p.strip() for p in settings.trusted_proxies.split(",") if p.strip())
    counter = runtime.metrics.counter(
        "carewatch_public_feedback_total", "Posts to the public feedback page, by outcome.",
        ["outcome"])

    def count(outcome: str) -> None:
        counter.labels(runtime.name, outcome).inc()

    def page(request: Request, template: str, status: int = 200,
             headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        response = render(request, template, status, public=True,
                          commissioner=runtime.settings.commissioner_name, **context)
        response.headers["cache-control"] = "no-store"
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def with_cookie(request: Request, response: Response, cookie: str) -> Response:
        if request.cookies.get(FORM_COOKIE) != cookie:
            response.set_cookie(FORM_COOKIE, cookie, max_age=TOKEN_HOURS * 3600, httponly=True,
                                samesite="lax", secure=not settings.insecure_cookies,
                                path=PREFIX)
        return response

    def unavailable(request: Request, why: str) -> HTMLResponse:
        log.warning("public feedback page: %s", why)
        return page(request, "public/unavailable.html", 503, headers={"Retry-After": "300"},
                    title="Sorry, there is a problem with the service")

    async def form_page(request: Request, easy: bool, answers: Answers | None = None,
                        errors: Errors | None = None, status: int = 200,
                        token: str | None = None,
                        headers: dict[str, str] | None = None) -> Response:
        """The form; with ``token``, the same form again (sent once more, it has the same
        reference, so intake counts a second arrival as a duplicate)."""
        try:
            providers = await intake.providers()
        except IntakeUnavailable as exc:
            return unavailable(request, str(exc))
        cookie = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(32)
        if len(cookie) > 100:
            cookie = secrets.token_urlsafe(32)
        template = "public/easy_read.html" if easy else "public/form.html"
        title = "Tell us what you think about a health or care service" if easy else \
            "Give feedback or ask us to look at a complaint"
        response = page(request, template, status, headers=headers, title=title,
                        errors=errors or [], answers=answers or Answers(),
                        groups=provider_groups(providers),
                        form_token=token or issue_token(secret, cookie, clock()),
                        purposes=PURPOSES, relationships=RELATIONSHIPS, subjects=SUBJECTS,
                        complained=COMPLAINED, contact_by=CONTACT_BY, needs=NEEDS,
                        max_description=MAX_DESCRIPTION, max_outcome=MAX_OUTCOME)
        return with_cookie(request, response, cookie)

    @api.get(PREFIX, include_in_schema=False)
    async def feedback_form(request: Request) -> Response:
        return await form_page(request, easy=False)

    @api.get(f"{PREFIX}/easy-read", include_in_schema=False)
    async def easy_read_form(request: Request) -> Response:
        return await form_page(request, easy=True)

    @api.post(PREFIX, include_in_schema=False)
    async def send_feedback(request: Request) -> Response:
        client = client_address(request, proxies)
        if not overall.take("page") or not per_client.take(client):
            count("rate_limited")
            wait = max(per_client.retry_after(client), overall.retry_after("page"))
            return page(request, "public/unavailable.html", 429,
                        headers={"Retry-After": str(wait)}, title="Too many attempts",
                        wait_minutes=max(1, -(-wait // 60)))
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        body = await read_limited(request.stream(), MAX_FORM_BYTES)
        if body is None or media != "application/x-www-form-urlencoded":
            count("refused")
            return page(request, "public/unavailable.html", 413 if body is None else 415,
                        title="Your feedback is too long" if body is None
                        else "Sorry, there is a problem with the service", too_long=True)
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=60,
                              strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            count("refused")
            return page(request, "public/unavailable.html", 400,
                        title="Sorry, there is a problem with the service")
        answers = read_answers(pairs)
        easy = answers.get("version") == "easy-read"
        nonce = check_token(secret, answers.get("form_token"), request.cookies.get(FORM_COOKIE),
                            clock())
        if nonce is None:
            count("csrf")
            return await form_page(request, easy, answers, [("", (
                "For your security, this form has expired. Check your answers and send it"
                " again."))], status=403)
        reference = reference_for(secret, nonce)
        if answers.get(HONEYPOT):
            # Filled by a robot (people do not see the field): nothing is sent, and the robot
            # is shown what a person would be.
            count("honeypot")
            await store.audit(runtime.pool, at=runtime.clock(), actor="public",
                              action="public feedback", target=reference,
                              outcome="refused: the honeypot field was filled")
            return sent_redirect(reference, easy)
        today = runtime.clock().astimezone(LONDON).date()
        try:
            providers = {p["ods_code"]: p["name"] for p in await intake.providers()}
        except IntakeUnavailable as exc:
            count("unavailable")
            return unavailable(request, str(exc))
        submission, errors = submission_of(answers, providers, reference, today)
        if submission is None:
            count("invalid")
            return await form_page(request, easy, answers, errors, status=400)
        try:
            status, answer = await intake.submit(submission)
        except IntakeUnavailable as exc:
            # Nothing was accepted, and the workspace keeps no one's words or contact details
            # (they go to intake, which redacts and withholds them): the person's answers stay
            # on their page, under the same form token, to send again.
            count("unavailable")
            log.warning("public feedback page: not sent: %s", exc)
            return await form_page(request, easy, answers, [("", NOT_SENT)], status=503,
                                   token=answers.get("form_token"),
                                   headers={"Retry-After": "300"})
        outcome = str(answer.get("outcome", status))
        await store.audit(runtime.pool, at=runtime.clock(), actor="public",
                          action="public feedback", target=reference,
                          outcome=f"{outcome} by intake",
                          detail={"submission_id": answer.get("submission_id"),
                                  "provider": submission["ods_code"]})
        if status not in (200, 202):
            count("rejected")
            return await form_page(request, easy, answers,
                                   errors_of_reasons(answer.get("reasons", [])), status=400)
        count(outcome)
        return sent_redirect(reference, easy)

    def sent_redirect(reference: str, easy: bool) -> Response:
        query = {"ref": reference, "sig": sent_signature(secret, reference)}
        if easy:
            query["version"] = "easy-read"
        return RedirectResponse(f"{PREFIX}/sent?{urlencode(query)}", status_code=303)

    @api.get(f"{PREFIX}/sent", include_in_schema=False)
    async def sent(request: Request, ref: str = "", sig: str = "",
                   version: str = "") -> Response:
        if len(ref) > 20 or not hmac.compare_digest(sig.encode(),
                                                    sent_signature(secret, ref).encode()):
            return page(request, "public/unavailable.html", 404, title="Page not found",
                        not_found=True)
        easy = version == "easy-read"
        return page(request, "public/sent.html", reference=ref, easy=easy,
                    title="We have your feedback" if easy else "Feedback sent")
