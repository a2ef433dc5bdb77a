"""One settings object for every carewatch process, read from ``CAREWATCH_*`` variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration by environment variables with the prefix ``CAREWATCH_``.

    Defaults suit the local services of a development machine.
    """

    model_config = SettingsConfigDict(env_prefix="CAREWATCH_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/carewatch"
    # Prefix of every exchange and queue name, so a test session (or a second stack)
    # can share a broker without touching anyone else's topology.
    namespace: str = "carewatch"
    # The RabbitMQ user each service publishes as, by service name (JSON), for the check
    # every consumer makes of an event's sender (shared/topology.py): unset, a service is
    # `carewatch-<service>` (deploy/rabbitmq/definitions.json) and the operator
    # `carewatch-admin`; '{"*": "guest"}' when every process shares one development user.
    broker_users: dict[str, str] = Field(default_factory=dict)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout: float = 10.0
    # notification's inbound SMTP endpoint for attendees' replies (iTIP REPLY); 0: any free
    # port; None: off.
    inbound_smtp_host: str = "127.0.0.1"
    inbound_smtp_port: int | None = 2526
    mail_from: str = "carewatch@icb.example.nhs.uk"

    commissioner_name: str = "NHS North Central London ICB"
    quality_team_email: str = "quality.team@icb.example.nhs.uk"
    quality_lead_name: str = "Commissioner Quality Lead"
    quality_lead_email: str = "quality.lead@icb.example.nhs.uk"
    lay_member_name: str = "Lay Member (Patient Voice)"
    lay_member_email: str = "lay.member@icb.example.nhs.uk"
    # Healthwatch joins insight visits; the Quality Surveillance Group (local authority, CQC,
    # Healthwatch, NHS England) is invited to a risk summit.
    healthwatch_name: str = "Healthwatch (local)"
    healthwatch_email: str = "enquiries@healthwatch.example.org.uk"
    qsg_local_authority_email: str = "safeguarding.adults@council.example.gov.uk"
    qsg_cqc_email: str = "enquiries@cqc.example.org.uk"
    qsg_nhs_england_email: str = "england.quality@nhs.example.uk"

    # Development mode: the services and `carewatch run` accept weak credentials (guest,
    # a password equal to its user name, none). `make run` sets it; nothing else should.
    dev_mode: bool = False
    # The RabbitMQ user of a development feed, and the providers (ODS codes, comma-separated)
    # `carewatch seed` registers it for: those only. Leave empty in production.
    dev_feed_user: str = ""
    dev_feed_ods: str = ""

    # The `carewatch` CLI's API token (from `carewatch tokens create`): commands that change
    # things record its account. Unset, they record the local operator (login@host).
    token: str | None = None

    # HTTP (health, readiness, metrics and each service's API). Left unset, each service
    # listens on its own default port (intake 8081, quality_monitor 8082, escalation 8083,
    # notification 8084); 0 picks a free port.
    http_host: str = "127.0.0.1"
    http_port: int | None = None

    escalation_policy_file: str | None = None
    # How often escalation looks for due reminders, overdue actions and re-visits.
    escalation_tick_seconds: float = Field(default=15.0, gt=0)
    monitor_rules_file: str | None = None
    prefetch_count: int = Field(default=200, ge=1)
    # Connections per process: group commit, the outbox relay and each background loop
    # need one or two each; keep replicas x services x pool under max_connections.
    db_pool_size: int = Field(default=6, ge=3)
    delivery_limit: int = Field(default=5, ge=1)
    # How many concurrently handled messages may share one transaction (1: one each).
    commit_batch_size: int = Field(default=100, ge=1)
    graceful_timeout: float = 15.0
    outbox_batch_size: int = Field(default=500, ge=1)
    outbox_poll_interval: float = 1.0
    # Consumers pause while more events than this wait in the service's outbox: the CPU then
    # goes to publishing what is stored, not to storing more (a deep outbox only adds delay).
    outbox_backlog_limit: int = Field(default=5000, ge=1)
    notification_max_attempts: int = Field(default=6, ge=1)
    notification_backoff_base: float = 2.0
    notification_backoff_cap: float = 300.0
    # Who is told of what (YAML); unset: services/notification/routing.yaml.
    notification_routing_file: str | None = None
    # Webhook signing secrets by webhook name, as JSON: '{"quality-team": "..."}'.
    notification_webhook_secrets: dict[str, str] = Field(default_factory=dict)
    notification_webhook_timeout: float = 10.0
    notification_send_concurrency: int = Field(default=4, ge=1)
    # How often the durable group timers are checked for groups due to be sent.
    notification_group_poll_interval: float = 1.0
    # intake: rejected submissions (raw bodies: personal data) are deleted this many days
    # after they were received, by a purge every ``quarantine_purge_interval`` seconds.
    quarantine_retention_days: int = Field(default=30, ge=1)
    quarantine_purge_interval: float = Field(default=600.0, gt=0)
    # intake: a member of the public's contact details (public feedback) are deleted this
    # many days after they were received, by the same purge.
    public_contact_retention_days: int = Field(default=365, ge=1)
    # intake: per-feed rate limits (submissions a second, and the burst allowed at once):
    # over HTTP (429 with Retry-After), and on the urgent routing keys over AMQP (over it,
    # quarantined with the reason rate_limited).
    feed_rate_per_second: float = Field(default=2000.0, gt=0)
    feed_rate_burst: int = Field(default=20_000, ge=1)
    urgent_rate_per_second: float = Field(default=1000.0, gt=0)
    urgent_rate_burst: int = Field(default=10_000, ge=1)
    # How many of a concern's evidence items a meeting agenda, a notification or the
    # workspace's concern page lists (the latest), before "and K more (total T)".
    evidence_listed: int = Field(default=10, ge=1)
    log_level: str = "INFO"
    # "json": one JSON object per line (event_id and submission_id on every line of a
    # message's handling); "text": readable lines for a terminal.
    log_format: str = "json"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
