"""Which way each submission of a batch goes: intake's decisions, pure code over plain data
(no database, no broker), used by ``admission.Admissions``, which loads the receipts and the
registry, parses, takes the urgent lane's rate limit and stores what these decide.

- A submission seen before (its receipt) or earlier in the same batch is a *replay*
  (``first_copies``).
- Otherwise it is stored when it parsed, came on a routing key its kind may use
  (``lane_problem``; the feed within the urgent lane's rate limit: ``rate_limited``), its feed
  may submit for its provider (``authorise``), and no reply was asked to a queue other than
  the feed's own (``reply_refusal``); else it is quarantined with every reason that applies
  (``classify``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from services.intake import store
from services.intake.validation import Parsed, reason
from shared.events import ProviderRef, RejectionReason
from shared.ratelimit import RateLimiter
from shared.submissions import PUBLIC_KINDS, URGENT_KINDS


def authorise(feed_user: str | None, ods_code: str, registry: store.Registry,
              kind: str | None = None) -> ProviderRef | RejectionReason:
    """The provider a feed may submit for, or why it may not: the ODS code must be a
    registered provider, and the feed known, not revoked and registered for that code. The
    public's kinds come only from the public's door, which may submit them for any
    registered provider and may submit nothing else."""
    provider = registry.providers.get(ods_code)
    if provider is None:
        return reason("ods_code", f"unknown ODS code {ods_code}", "unknown_provider")
    if not feed_user:
        return reason("", "the message has no user_id: feeds must identify themselves",
                      "unauthenticated")
    public_door = feed_user in registry.public_feeds
    if kind in PUBLIC_KINDS or public_door:
        if kind in PUBLIC_KINDS and public_door:
            return provider
        return reason("kind", f"feed {feed_user!r} may not submit {kind}: the public's kinds"
                      f" ({', '.join(sorted(PUBLIC_KINDS))}) come from the public's door"
                      " only, which submits nothing else", "forbidden")
    if feed_user not in registry.active_feeds or (feed_user, ods_code) not in registry.grants:
        return reason("ods_code", f"feed {feed_user!r} is not registered to submit for"
                      f" {ods_code}", "forbidden")
    return provider


def reply_queue_of(feed_user: str, namespace: str) -> str:
    """A feed's own reply queue: the only queue intake sends its replies to."""
    return f"{namespace}.replies.{feed_user}"


def reply_refusal(reply_to: str | None, feed_user: str | None,
                  namespace: str) -> RejectionReason | None:
    """Why a message's ``reply_to`` cannot be honoured, or None (none asked, or the feed's
    own reply queue). Any other queue is refused: replies through the default exchange could
    otherwise be written into any queue of the virtual host (carewatch's own, another
    deployment's, another feed's)."""
    if not reply_to:
        return None
    if feed_user and reply_to == reply_queue_of(feed_user, namespace):
        return None
    own = reply_queue_of(feed_user, namespace) if feed_user else "(an authenticated feed's)"
    return RejectionReason(loc="reply_to", type="reply_to", msg=(
        f"replies go only to the feed's own reply queue {own}; not to {reply_to[:255]!r}"))


def reply_queue(reply_to: str | None, feed_user: str | None, namespace: str) -> str | None:
    """The queue a rejection may be sent back to: the feed's own reply queue, or None."""
    if not reply_to or reply_refusal(reply_to, feed_user, namespace) is not None:
        return None
    return reply_to


def urgent_routing_key(routing_key: str | None) -> bool:
    """Whether ``routing_key`` is one the urgent lane takes (``submission.<urgent kind>.*``,
    the bindings of ``Topology.submission_lanes``)."""
    parts = (routing_key or "").split(".")
    return len(parts) == 3 and parts[0] == "submission" and parts[1] in URGENT_KINDS


def lane_problem(routing_key: str | None, kind: str) -> RejectionReason | None:
    """Why a submission may not come on this routing key: a routine kind sent on an urgent
    kind's key would jump the queue that serious complaints take. Refused (quarantined, with
    this reason), not re-routed: the feed is told to fix its routing key."""
    if not urgent_routing_key(routing_key) or kind in URGENT_KINDS:
        return None
    return reason(
        "kind", type_="wrong_routing_key",
        msg=f"a {kind} was sent with the routing key {routing_key!r}, which is for the kinds"
            f" that report risk ({', '.join(sorted(URGENT_KINDS))}): publish it with"
            f" 'submission.{kind}.v1'")


def rate_limited(feed_user: str | None, limiter: RateLimiter) -> RejectionReason:
    return reason(
        "", type_="rate_limited",
        msg=f"feed {feed_user!r} sent more than {limiter.burst} submissions at once (or more"
            f" than {limiter.rate:g} a second) on the urgent routing keys: this one is kept in"
            " the quarantine, not monitored; send it again later, or send bulk loads with"
            " routing key 'submission.<kind>.v1.bulk'")


@dataclass(frozen=True)
class Store:
    """Stored as feedback (unless the provider's record was accepted before: a duplicate)."""

    row: store.FeedbackRow
    provider: ProviderRef


@dataclass(frozen=True)
class Quarantine:
    """Quarantined with ``reasons``; ``valid`` is the submission when it parsed (its ODS code,
    kind and record id go in ``feedback.rejected``)."""

    reasons: list[RejectionReason]
    valid: Parsed | None


def first_copies(sids: Sequence[uuid.UUID],
                 earlier: Collection[uuid.UUID]) -> tuple[dict[uuid.UUID, int], list[int]]:
    """The index of each submission's first copy in the batch, in order, and the indexes of
    the replays: copies of a submission with a receipt (``earlier``) or earlier in the batch."""
    first: dict[uuid.UUID, int] = {}
    replays: list[int] = []
    for n, sid in enumerate(sids):
        if sid in earlier or sid in first:
            replays.append(n)
        else:
            first[sid] = n
    return first, replays


def classify(sid: uuid.UUID, parsed: Parsed | list[RejectionReason], *, feed_user: str | None,
             reply_to: str | None, registry: store.Registry, namespace: str,
             lane: RejectionReason | None = None,
             new_id: Callable[[], uuid.UUID] = uuid.uuid4) -> Store | Quarantine:
    """Store or quarantine one submission (not a replay) from ``feed_user``, which asked for
    replies to ``reply_to``: ``parsed`` is the validated submission or why it is invalid;
    ``lane`` why its routing key may not carry it (a routine kind on an urgent key, a feed
    over the urgent lane's rate limit), checked before who may submit for whom."""
    refused_reply = reply_refusal(reply_to, feed_user, namespace)
    if not isinstance(parsed, Parsed):
        return Quarantine([*parsed, *([refused_reply] if refused_reply else [])], None)
    sub = parsed.submission
    provider = lane or authorise(feed_user, sub.ods_code, registry, sub.kind)
    if isinstance(provider, ProviderRef) and refused_reply is None:
        return Store(store.FeedbackRow(
            feedback_id=new_id(), submission_id=sid, ods_code=sub.ods_code,
            provider_record_id=sub.record_id, kind=sub.kind, version=sub.version,
            occurred_on=sub.occurred_on(), theme=sub.theme(), content=parsed.content,
            redactions=parsed.redactions, feed_user=feed_user,
            withheld=parsed.withheld), provider)
    reasons = [provider] if isinstance(provider, RejectionReason) else []
    if refused_reply is not None:
        reasons.append(refused_reply)
    return Quarantine(reasons, parsed)
