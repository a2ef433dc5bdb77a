"""The fakes the handler tests put in place of a service's store (monkeypatched over the
module, so mypy never checks a handler's call against them) keep the real functions' shape:
every public name a fake shares with the module it replaces is async where the real one is,
and takes every parameter the real one takes, by the same name (a handler may pass any of
them by keyword). A test helper must not take a real function's name with another meaning."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from services.escalation import schedule as escalation_schedule
from services.escalation import store as escalation_store
from services.intake import store as intake_store
from services.notification import store as notification_store
from services.quality_monitor import review as monitor_review
from services.quality_monitor import store as monitor_store
from services.workspace import store as workspace_store
from tests.unit import test_intake_handlers, test_monitor_handlers, test_notification_handlers, test_workspace_handlers
from tests.unit.fake_escalation_store import FakeEscalationStore
from tests.unit.fakes import FakeSchedule

FAKES: list[tuple[type, ModuleType]] = [
    (test_intake_handlers.FakeStore, intake_store),
    (test_monitor_handlers.FakeStore, monitor_store),
    (test_monitor_handlers.FakeReview, monitor_review),
    (test_notification_handlers.FakeStore, notification_store),
    (test_workspace_handlers.FakeStore, workspace_store),
    (FakeEscalationStore, escalation_store),
    (FakeSchedule, escalation_schedule),
]


def mismatches(fake: type, real: ModuleType) -> list[str]:
    """How the fake's methods differ from the real module's functions of the same name."""
    found = []
    for name, member in vars(fake).items():
        method = member.__func__ if isinstance(member, staticmethod) else member
        function = getattr(real, name, None)
        if (name.startswith("_") or not inspect.isfunction(method)
                or not inspect.isfunction(function)):
            continue  # a fake's own helper, or a stand-in for a class
        if inspect.iscoroutinefunction(method) != inspect.iscoroutinefunction(function):
            found.append(f"{name}: async {inspect.iscoroutinefunction(function)} in the real one")
            continue
        problem = unaccepted(method, function, bound=not isinstance(member, staticmethod))
        if problem:
            found.append(f"{name}: {problem}")
    return found


def unaccepted(method: Callable[..., Any], function: Callable[..., Any], *, bound: bool) -> str:
    """The real function's parameters the fake does not take as the real one does ('' if
    none)."""
    fake_params = list(inspect.signature(method).parameters.values())[1 if bound else 0:]
    kinds = {p.kind for p in fake_params}
    positional = [p.name for p in fake_params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name for p in fake_params if p.kind is not p.POSITIONAL_ONLY}
    missing = []
    for i, p in enumerate(inspect.signature(function).parameters.values()):
        if p.kind is p.POSITIONAL_OR_KEYWORD:
            if not (positional[i:i + 1] == [p.name] or (
                    inspect.Parameter.VAR_POSITIONAL in kinds and len(positional) <= i
                    and inspect.Parameter.VAR_KEYWORD in kinds)):
                missing.append(p.name)
        elif p.kind is p.KEYWORD_ONLY:
            if p.name not in by_name and inspect.Parameter.VAR_KEYWORD not in kinds:
                missing.append(p.name)
    return f"does not take {missing} as the real one does" if missing else ""


@pytest.mark.parametrize(("fake", "real"), FAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_a_fake_keeps_the_shape_of_what_it_stands_in_for(fake: type, real: ModuleType) -> None:
    assert mismatches(fake, real) == []


def test_a_fake_of_another_shape_is_seen() -> None:
    real = ModuleType("real")

    async def load(conn: object, concern_id: int, limit: int = 10, *, at: str) -> None: ...

    def same(x: int) -> int:
        return x
    real.load, real.pure = load, same  # type: ignore[attr-defined]

    class Good:
        async def load(self, conn: object, concern_id: int, limit: int = 5, **at: Any) -> None: ...
        pure = staticmethod(same)

        def helper(self) -> None: ...

    class Bad:
        async def load(self, conn: object, cid: int) -> None: ...  # renamed, no limit, no at

        def pure(self) -> int:  # a helper taking a real function's name
            return 0

    class Sync:
        def load(self, conn: object, concern_id: int, limit: int, *, at: str) -> None: ...

    assert mismatches(Good, real) == []
    assert mismatches(Bad, real) == [
        "load: does not take ['concern_id', 'limit', 'at'] as the real one does",
        "pure: does not take ['x'] as the real one does"]
    assert mismatches(Sync, real) == ["load: async True in the real one"]
