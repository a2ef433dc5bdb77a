"""quality-monitor's rules as configuration (YAML), not code: thresholds, windows, severities."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.quality_monitor.spc import DEFAULT_MODE, SpcOptions
from shared.events import Severity

DEFAULT_RULES = Path(__file__).parent / "rules.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImmediateRules(_Strict):
    risk_score_threshold: int = Field(default=15, ge=1, le=25)


class ClusterRule(_Strict):
    """``count`` items of ``kinds`` about ``theme`` on one provider within ``window_days``."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kinds: list[str] = Field(min_length=1)
    theme: str = Field(min_length=1)
    count: int = Field(ge=2)
    window_days: int = Field(ge=1, le=366)
    severity: Severity = Severity.MODERATE
    per_site: bool = False

    def matches(self, kind: str, theme: str | None) -> bool:
        return kind in self.kinds and theme is not None and theme.lower() == self.theme.lower()


MetricName = Literal["fft_negative", "fft_positive", "complaints", "gp_alerts"]


class MetricRules(_Strict):
    severity: Severity = Severity.MODERATE
    enabled: bool = True


def _default_metrics() -> dict[MetricName, MetricRules]:
    return {"fft_negative": MetricRules(), "fft_positive": MetricRules(),
            "complaints": MetricRules(), "gp_alerts": MetricRules(severity=Severity.HIGH)}


class SpcRules(_Strict):
    # nhsr: identical to NHSRplotthedots 0.2.x; carewatch: the reading before issue 16
    # (see services/quality_monitor/spc.py for the difference and why nhsr is the default).
    mode: Literal["nhsr", "carewatch"] = DEFAULT_MODE  # type: ignore[assignment]
    min_points: int = Field(default=12, ge=2)
    fix_after_points: int | None = Field(default=None, ge=2)
    screen_outliers: bool = True
    resolve_after_common_cause_points: int = Field(default=3, ge=1)
    # Propose a rebase (for a person to accept) after a run of this many points on one side
    # of the mean reaching the latest month; null: never propose.
    propose_rebase_after_run: int | None = Field(default=9, ge=7)
    metrics: dict[MetricName, MetricRules] = Field(default_factory=lambda: _default_metrics())
    # Targets for the assurance icons: metric -> setting (or 'all') -> target value.
    targets: dict[MetricName, dict[str, float]] = Field(
        default_factory=lambda: _default_targets())

    @model_validator(mode="after")
    def _baseline_not_below_minimum(self) -> SpcRules:
        if self.fix_after_points is not None and self.fix_after_points < self.min_points:
            raise ValueError("fix_after_points must be at least min_points")
        return self

    @property
    def options(self) -> SpcOptions:
        return SpcOptions.mode(self.mode, min_points=self.min_points,
                               fix_after=self.fix_after_points,
                               screen_outliers=self.screen_outliers)

    def target(self, metric: str, setting: str) -> float | None:
        by_setting = self.targets.get(metric, {})  # type: ignore[call-overload]
        value = by_setting.get(setting, by_setting.get("all"))
        return None if value is None else float(value)

    def metric(self, name: str) -> MetricRules | None:
        rules = self.metrics.get(name)  # type: ignore[call-overload]
        return rules if rules is not None and rules.enabled else None


def _default_targets() -> dict[MetricName, dict[str, float]]:
    # Approximate England-wide FFT results by setting (NHS England's monthly FFT publication,
    # 2023-24: % of responses good or very good, and poor or very poor), as a starting
    # point for the assurance icons. Set your own: targets are configuration.
    positive = {"inpatient": 94.0, "day_case": 96.0, "a_and_e": 80.0, "outpatient": 94.0,
                "maternity": 93.0, "mental_health": 87.0, "community": 95.0, "ambulance": 92.0,
                "gp": 91.0, "dental": 95.0}
    negative = {"inpatient": 3.0, "day_case": 2.0, "a_and_e": 12.0, "outpatient": 3.0,
                "maternity": 3.0, "mental_health": 6.0, "community": 2.0, "ambulance": 4.0,
                "gp": 5.0, "dental": 2.0}
    return {"fft_positive": positive, "fft_negative": negative}


class FunnelRules(_Strict):
    min_providers: int = Field(default=5, ge=3)
    winsorise: float = Field(default=0.1, ge=0, lt=0.5)
    overdispersion: bool = True
    # FunnelPlotR: when phi <= 1 ("no overdispersion") draw the unadjusted limits.
    phi_fallback: bool = True
    severity: Severity = Severity.HIGH
    resolve_after_periods: int = Field(default=2, ge=1)


class VisitRules(_Strict):
    inadequate: Severity = Severity.HIGH
    requires_improvement: Severity = Severity.MODERATE


class ServiceChangeRules(_Strict):
    minimum_consultation_weeks: int = Field(default=12, ge=0)
    must_inform: list[Literal["patients", "scrutiny", "healthwatch"]] = Field(
        default_factory=lambda: ["healthwatch", "scrutiny"])  # type: ignore[arg-type]
    severity: Severity = Severity.MODERATE


class ComplaintHandlingRules(_Strict):
    acknowledge_within_working_days: int = Field(default=3, ge=1)
    respond_within_months: int = Field(default=6, ge=1)
    window_months: int = Field(default=3, ge=1)
    min_complaints: int = Field(default=5, ge=1)
    late_acknowledgement_share: float = Field(default=0.2, gt=0, le=1)
    overdue_response_share: float = Field(default=0.2, gt=0, le=1)
    acknowledgement_severity: Severity = Severity.LOW
    response_severity: Severity = Severity.MODERATE


class ScheduleRules(_Strict):
    poll_seconds: float = Field(default=60, gt=0)
    month_close_days: int = Field(default=3, ge=0, le=27)
    daily_review_at: time = time(6, 0)


class MonitorRules(_Strict):
    """Every rule's thresholds. Defaults equal the shipped ``rules.yaml``."""

    immediate: ImmediateRules = ImmediateRules()
    clusters: list[ClusterRule] = Field(default_factory=list)
    spc: SpcRules = SpcRules()
    funnel: FunnelRules = FunnelRules()
    visits: VisitRules = VisitRules()
    service_change: ServiceChangeRules = ServiceChangeRules()
    complaint_handling: ComplaintHandlingRules = ComplaintHandlingRules()
    schedule: ScheduleRules = ScheduleRules()

    @model_validator(mode="after")
    def _unique_cluster_names(self) -> MonitorRules:
        names = [c.name for c in self.clusters]
        if len(names) != len(set(names)):
            raise ValueError("cluster rule names must be unique")
        return self

    def clusters_for(self, kind: str, theme: str | None) -> list[ClusterRule]:
        return [c for c in self.clusters if c.matches(kind, theme)]


def load_rules(path: str | Path | None = None) -> MonitorRules:
    """The rules in ``path`` (default: the shipped ``rules.yaml``)."""
    source = Path(path) if path else DEFAULT_RULES
    try:
        data = yaml.safe_load(source.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"quality-monitor rules file not found: {source}") from exc
    return MonitorRules.model_validate(data or {})
