"""The reports' settings (``CAREWATCH_REPORTS_*``), beside the shared ones."""

from __future__ import annotations

from datetime import time

from pydantic_settings import BaseSettings, SettingsConfigDict

# quality-monitor's service account, as it reads escalation's API for the reports.
SERVICE_ACCOUNT = "quality-monitor"


class ReportSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREWATCH_REPORTS_", extra="ignore")

    # escalation's API (meetings, outcomes, action plans, the ladder, the watch list, visits)
    # and the token of quality-monitor's service account there (`carewatch users add
    # quality-monitor --service --role quality_team`, `carewatch tokens create
    # quality-monitor`). Unset: the reports say those sections are not available.
    escalation_url: str | None = "http://127.0.0.1:8083"
    token: str | None = None
    # Who receives them is notification's routing (the `reports` route, the
    # `report-distribution` group of services/notification/routing.yaml).
    # The scheduled run: the first working day of each month (CQRM packs) and quarter (the
    # Q&P report and "you said, we did"), at this London time. False: no scheduled reports.
    schedule: bool = True
    run_at: time = time(7, 0)
