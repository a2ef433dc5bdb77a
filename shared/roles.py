"""The roles of carewatch's people and service accounts, and who may do what: plain strings
with no imports, so that a command's module (services/*/cli.py) names the roles it checks
without loading ``shared.identity`` (asyncpg, starlette). ``shared.identity`` re-exports
them."""

from __future__ import annotations

QUALITY_TEAM = "quality_team"
QUALITY_LEAD = "quality_lead"
LAY_MEMBER = "lay_member"
PROVIDER_USER = "provider_user"
OPERATOR = "operator"
ROLES = (QUALITY_TEAM, QUALITY_LEAD, LAY_MEMBER, PROVIDER_USER, OPERATOR)
# The commissioner's people: they see every provider.
ICB_STAFF = (QUALITY_TEAM, QUALITY_LEAD, LAY_MEMBER)
# The commissioner's people and provider users (each for its own providers).
READERS = (*ICB_STAFF, PROVIDER_USER)

# Who may act, by what they do (each service's CLI and HTTP surface check these; with
# CAREWATCH_TOKEN the audit trail records that account, or the local operator without one).
# escalation: meetings, their outcomes, action plans, the rota.
PLANNERS = (QUALITY_TEAM, QUALITY_LEAD)
# escalation: close a concern.
CLOSERS = (QUALITY_LEAD,)
# quality-monitor: confirm or dismiss a possible serious risk; record or decide a rebase.
DECIDERS = (QUALITY_TEAM, QUALITY_LEAD)
# quality-monitor: make a report now.
REPORT_MAKERS = (QUALITY_TEAM, QUALITY_LEAD)
# intake's quarantine (raw bodies: personal data), notification's retries.
OPERATORS = (OPERATOR,)
# notification: mute alerts for a while.
SILENCERS = (OPERATOR, QUALITY_LEAD)
