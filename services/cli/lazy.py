"""A command group whose sub-commands are imported only when one of them runs.

``carewatch --help`` lists every command from a table of names and one-line helps; the
module behind a command (and matplotlib, FastAPI, asyncpg, aio_pika with it) is imported
only when that command is invoked, so a call pays only for what it uses.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import typer
from typer.core import TyperGroup


@dataclass(frozen=True)
class Lazy:
    """A command or group: ``module:attribute`` (a ``typer.Typer`` or a function)."""

    target: str
    help: str


class LazyGroup(TyperGroup):
    """A Typer group whose lazy commands are named in ``lazy`` (set by ``lazy_app``)."""

    lazy: dict[str, Lazy]
    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        spec = self.lazy[cmd_name]
        if self._listing:  # the help of the whole group: a name and a line are enough
            return typer.core.TyperCommand(cmd_name, help=spec.help)
        return load(cmd_name, spec)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def load(name: str, spec: Lazy) -> Any:
    """The click command behind a lazy entry."""
    module, _, attribute = spec.target.partition(":")
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        target.info.help = target.info.help or spec.help
        # Click's plain help: no rich import, no `<bool>` metavars, paragraphs re-wrapped.
        target.rich_markup_mode = None
        group = typer.main.get_group(target)
        group.name = name
        return group
    single = typer.Typer(add_completion=False, rich_markup_mode=None)
    single.command(name, help=spec.help if not target.__doc__ else None)(target)
    return typer.main.get_command(single)


def lazy_app(lazy: dict[str, Lazy], **kwargs: Any) -> typer.Typer:
    """A ``typer.Typer`` whose commands in ``lazy`` load on use."""
    group_class = type("CarewatchGroup", (LazyGroup,), {"lazy": lazy})
    return typer.Typer(cls=group_class, **kwargs)


def modules(*names: str) -> tuple[ModuleType, ...]:
    """``names`` as modules that load when one of their attributes is first read
    (importlib's LazyLoader): a command module names what its commands use without paying
    for it when only its ``--help`` is asked for. Already imported modules come as they are."""
    return tuple(_lazy(name) for name in names)


def _lazy(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
