"""The workspace's own settings (``CAREWATCH_WORKSPACE_*``), beside the shared ones."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]


class WorkspaceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREWATCH_WORKSPACE_", extra="ignore")

    # The workspace's service-account token (`carewatch users add workspace --service
    # --role operator`, then `carewatch tokens create workspace`): the commands it sends to
    # escalation and quality-monitor carry it, with X-Carewatch-On-Behalf-Of naming the
    # signed-in person.
    token: str | None = None
    escalation_url: str = "http://127.0.0.1:8083"
    # quality-monitor's API: the review of possible serious risks (confirm, dismiss).
    monitor_url: str = "http://127.0.0.1:8082"
    # intake's API: the operator's quarantine (list, show, resubmit) and feeds.
    intake_url: str = "http://127.0.0.1:8081"
    # notification's API: failed deliveries, and sending them again.
    notification_url: str = "http://127.0.0.1:8084"
    # Where people reach the workspace (the OIDC redirect URI is <public_url>/oidc/callback).
    public_url: str = "http://127.0.0.1:8085"
    # OpenID Connect (Entra ID: https://login.microsoftonline.com/<tenant>/v2.0). Unset: local
    # accounts only.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_label: str = "Sign in with your NHS account"
    # Plain-HTTP development only: without it, session cookies are Secure (HTTPS only).
    insecure_cookies: bool = False
    # Evidence files: at most this many bytes each.
    upload_limit: int = Field(default=5 * 1024 * 1024, ge=1024)
    # The NHS.UK frontend's built files (npm install puts them here; the Dockerfile too).
    assets_dir: Path = ROOT / "node_modules" / "nhsuk-frontend" / "dist" / "nhsuk"
    # How often the overview asks whether a new serious concern has arrived (seconds).
    live_interval: float = Field(default=3.0, gt=0)

    # -- the public's door (public.py): the feedback page anyone may use, without signing in.
    # The API key of the public's door feed (`carewatch feeds create public-door --public
    # --api-key`): the page posts each submission to intake (intake_url) as that feed.
    public_feed_key: str | None = None
    # Signs the form's CSRF tokens and derives acknowledgement references. Every replica needs
    # the same one; unset, each process draws its own (a form is then accepted only by the
    # process that served it).
    form_secret: str = ""
    # Per client (its address): this many submissions at once, then one every
    # 3600 / public_client_per_hour seconds; and for the whole page, per process.
    public_client_burst: int = Field(default=5, ge=1)
    public_client_per_hour: float = Field(default=20.0, gt=0)
    public_total_per_second: float = Field(default=2.0, gt=0)
    public_total_burst: int = Field(default=100, ge=1)
    # The client address is the connection's, or the first X-Forwarded-For address when the
    # connection comes from one of these proxies (comma-separated addresses).
    trusted_proxies: str = ""
