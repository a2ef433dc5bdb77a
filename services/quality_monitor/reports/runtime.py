"""Wiring the reports once: the monitor's rules, the reports' settings, the organisation
named on every report, the clock and the outbox."""

from __future__ import annotations

from services.quality_monitor.config import load_rules
from services.quality_monitor.reports.config import ReportSettings
from services.quality_monitor.reports.service import OutboxFactory, Reports
from shared.clock import Clock, utc_now
from shared.settings import Settings, get_settings


def reports_for(settings: Settings, outbox_for: OutboxFactory | None = None,
                clock: Clock = utc_now, report_settings: ReportSettings | None = None
                ) -> Reports:
    return Reports(load_rules(settings.monitor_rules_file), report_settings or ReportSettings(),
                   settings.commissioner_name, clock, outbox_for)


def reports_for_cli() -> tuple[Reports, Settings]:
    """The reports as the CLI makes them: the outbox of quality-monitor (the running service
    publishes what a command writes there)."""
    from shared.outbox import Outbox
    from shared.topology import Topology

    settings = get_settings()
    exchange = Topology(settings.namespace, settings.delivery_limit).events_exchange
    return reports_for(settings, lambda conn: Outbox(conn, "monitor", exchange,
                                                     "carewatch/quality_monitor")), settings
