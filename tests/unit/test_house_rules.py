"""The house rules of issue 13, read from the source: no import cycles at load time (and none at
all among `shared/`'s modules, not even for types or inside a function), every module importable,
nothing in `shared/` importing `services/`, one clock (no wall-clock read outside
shared/clock.py), one shape for every service folder, and a rule map (the top README's "Where each
rule lives") that names only files that exist."""
from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services")
WALL_CLOCK = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
              ("date", "today"), ("time", "time"), ("time", "time_ns")}
CLOCK_MODULE = "shared.clock"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not MODULES[module].name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(name: str) -> list[str]:
    """The project modules an import of ``name`` loads (the module and its packages)."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in MODULES]


def _imported_by(module: str, node: ast.AST) -> set[str]:
    """The project modules one import statement loads (none for any other node)."""
    if isinstance(node, ast.Import):
        return {t for alias in node.names for t in _targets(alias.name)}
    if isinstance(node, ast.ImportFrom):
        base = _resolve(module, node)
        return {*_targets(base),
                *(t for alias in node.names  # `from pkg import submodule`
                  for t in _targets(f"{base}.{alias.name}") if t != base)}
    return set()


def _load_time_imports(module: str) -> set[str]:
    """Imports executed when ``module`` loads: module level, not inside a function and not
    under ``if TYPE_CHECKING``."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_imported_by(module, node))
            elif isinstance(node, ast.If) and not _is_type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    found.discard(module)
    return found


GRAPH = {m: _load_time_imports(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _package_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycle_at_load_time() -> None:
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    graph = {m: {t for t in targets if t not in _package_parents(m)} for m, targets in GRAPH.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _every_import(module: str, source: str) -> set[str]:
    """The project modules ``source`` imports anywhere: at load time, inside a function, or
    under ``if TYPE_CHECKING``."""
    found = {t for node in ast.walk(ast.parse(source)) for t in _imported_by(module, node)}
    found.discard(module)
    return found


def _graph_among(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Who imports whom among these modules (their package's ``__init__`` left out)."""
    return {m: {t for t in _every_import(m, source) if t in sources and t not in _package_parents(m)}
            for m, source in sources.items()}


SHARED_SOURCES = {m: p.read_text() for m, p in MODULES.items() if m.split(".")[0] == "shared"}


def test_shared_modules_never_import_one_another_in_a_circle() -> None:
    # Stricter than at load time: a circle closed by an import for types only, or by one
    # inside a function, still ties the modules together (shared/http.py once imported the
    # runtime that imported it, for a type).
    assert _cycles(_graph_among(SHARED_SOURCES)) == []


@pytest.mark.parametrize(("module", "planted"), [
    ("shared.http", "\nif TYPE_CHECKING:\n    from shared.runtime import ServiceRuntime\n"),
    ("shared.metrics", "\ndef later() -> object:\n    from shared import runtime\n    return runtime\n"),
    ("shared.scheduler", "\nimport shared.outbox\n"),
])
def test_a_circle_among_shared_modules_is_seen(module: str, planted: str) -> None:
    sources = {**SHARED_SOURCES, module: SHARED_SOURCES[module] + planted}
    cycles = _cycles(_graph_among(sources))
    assert len(cycles) == 1 and module in cycles[0], cycles


# `python -m services.<name>` runs the service: importing it is running it.
IMPORTABLE = sorted(m for m in MODULES if m.split(".")[-1] != "__main__")


@pytest.mark.parametrize("module", IMPORTABLE)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_shared_never_imports_services() -> None:
    offenders = {m: sorted(t for t in targets if t.startswith("services"))
                 for m, targets in GRAPH.items() if m.startswith("shared")}
    assert {m: t for m, t in offenders.items() if t} == {}


def _all_imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(_resolve(module, node))
    return names


def test_shared_never_imports_services_even_lazily() -> None:
    offenders = {m: sorted(n for n in _all_imports(m) if n.split(".")[0] == "services")
                 for m in MODULES if m.startswith("shared")}
    assert {m: t for m, t in offenders.items() if t} == {}


def _wall_clock_reads(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else (
                owner.attr if isinstance(owner, ast.Attribute) else None)
            if (name, node.func.attr) in WALL_CLOCK:
                lines.append(node.lineno)
    return lines


def test_the_wall_clock_is_read_in_one_place() -> None:
    reads = {m: _wall_clock_reads(p.read_text()) for m, p in MODULES.items() if m != CLOCK_MODULE}
    assert {m: lines for m, lines in reads.items() if lines} == {}
    assert _wall_clock_reads(MODULES[CLOCK_MODULE].read_text()), "shared/clock.py is the clock"


@pytest.mark.parametrize("source", ["datetime.now(UTC)", "datetime.datetime.now()",
                                    "time.time()", "date.today()", "datetime.utcnow()"])
def test_the_clock_check_sees_a_wall_clock_read(source: str) -> None:
    assert _wall_clock_reads(source) == [1]


# One shape for every service folder (issue 13, item 5): a folder under services/ with an
# app.py is a service, and holds the same files, each in the same role (the top README's
# "Layout" says which).
SERVICE_SHAPE = ("app.py", "store.py", "http.py", "cli.py", "config.py", "migrations/", "README.md")


def _service_folders(services: Path) -> list[Path]:
    return sorted(p for p in services.iterdir() if (p / "app.py").is_file())


def _missing_from_shape(folder: Path) -> list[str]:
    return [part for part in SERVICE_SHAPE
            if not ((folder / part.rstrip("/")).is_dir() if part.endswith("/")
                    else (folder / part).is_file())]


def _rule_map_links(readme: str) -> list[str]:
    """The files the top README's "Where each rule lives" section links to."""
    section = readme.split("\n### Where each rule lives\n", 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    return [target.split("#", 1)[0] for target in re.findall(r"\]\(([^)\s]+)\)", section)
            if "://" not in target]


def test_there_are_five_services() -> None:
    assert [p.name for p in _service_folders(ROOT / "services")] == [
        "escalation", "intake", "notification", "quality_monitor", "workspace"]


@pytest.mark.parametrize("folder", _service_folders(ROOT / "services"), ids=lambda p: p.name)
def test_every_service_folder_has_one_shape(folder: Path) -> None:
    assert _missing_from_shape(folder) == []


def test_a_service_folder_missing_a_part_is_seen(tmp_path: Path) -> None:
    folder = tmp_path / "services" / "svc"
    (folder / "migrations").mkdir(parents=True)
    for name in SERVICE_SHAPE[:-1]:
        if not name.endswith("/"):
            (folder / name).write_text("")
    assert _service_folders(tmp_path / "services") == [folder]
    assert _missing_from_shape(folder) == ["README.md"]
    (folder / "README.md").write_text("")
    (folder / "migrations").rmdir()
    (folder / "migrations").write_text("")  # a file is not the migrations folder
    assert _missing_from_shape(folder) == ["migrations/"]


def test_the_rule_map_links_only_to_files_that_exist() -> None:
    links = _rule_map_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(links) >= 20, links  # the section was found and read
    assert [link for link in links if not (ROOT / link).is_file()] == []


def test_the_rule_map_check_reads_the_links() -> None:
    readme = ("## Layout\n[a](shared/a.py)\n### Where each rule lives\n\n| r | [x](services/x.py)"
              " [y](y.yaml#top) |\n[web](https://example.org)\n## Next\n[b](b.py)\n")
    assert _rule_map_links(readme) == ["services/x.py", "y.yaml"]
