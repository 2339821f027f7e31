"""The house rules, checked on the source tree (``ast``, no imports): data flows one way, no
import circle inside ``framepipe/``, small modules, and samplers and shot detection never
open files or touch a decoding library (their source hands them what they need)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "framepipe"
MAX_LINES = 450
FILE_LIBRARIES = ("av", "decord", "open3d", "cv2", "PIL", "imageio")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every module named by an import anywhere in ``path`` (also inside functions and
    ``TYPE_CHECKING`` blocks: a lazy import is still an arrow)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for imp in _imports(path, name):
            # the longest framepipe module that the imported name lies in
            parts = imp.split(".")
            while parts and ".".join(parts) not in mods:
                parts.pop()
            target = ".".join(parts)
            if target and target != name and target != "framepipe":
                deps.add(target)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_of(module: str) -> str:
    """Modules inside a package count as the package; ``framepipe.x`` is its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_circle_between_modules() -> None:
    # a package's __init__ re-exports its modules: arrows into __init__ from its own
    # modules would be circles too, and are counted.
    assert _cycles(_graph()) == []


def test_no_import_circle_between_stages() -> None:
    """Stages (top-level modules and packages) form a one-way graph as well."""
    stage_graph: dict[str, set[str]] = {}
    for mod, deps in _graph().items():
        a = _package_of(mod)
        stage_graph.setdefault(a, set()).update(_package_of(d) for d in deps if _package_of(d) != a)
    assert _cycles(stage_graph) == []


def test_the_data_flow_runs_one_way() -> None:
    """A lower stage never imports a higher one (discover -> sources -> shots -> clips ->
    samplers -> read_clips -> prompt/generate -> answering -> output -> engine -> runs ->
    cli)."""
    order = [
        "sources",
        "shots",
        "clips",
        "samplers",
        "read_clips",
        "generate",
        "answering",
        "engine",
        "runs",
        "cli",
    ]
    rank = {f"framepipe.{s}": k for k, s in enumerate(order)}
    graph = _graph()
    backwards = []
    for mod, deps in graph.items():
        a = _package_of(mod)
        for d in deps:
            b = _package_of(d)
            if a in rank and b in rank and rank[b] > rank[a]:
                backwards.append(f"{mod} -> {d}")
    assert backwards == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_is_small(name: str) -> None:
    lines = _modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


def test_samplers_and_shots_never_open_files_or_decode() -> None:
    bad = []
    for name, path in _modules().items():
        if not name.startswith(("framepipe.samplers", "framepipe.shots")):
            continue
        src = path.read_text(encoding="utf-8")
        for imp in _imports(path, name):
            if imp.split(".")[0] in FILE_LIBRARIES or imp.startswith("framepipe.sources"):
                if imp.startswith("framepipe.sources") and _only_for_typing(src, imp):
                    continue
                bad.append(f"{name} imports {imp}")
        tree = ast.parse(src)
        for node in ast.walk(tree):
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if is_call and node.func.id == "open":  # type: ignore[attr-defined]
                bad.append(f"{name} calls open()")
    assert bad == []


def _only_for_typing(src: str, imp: str) -> bool:
    """Whether every import of ``imp`` in ``src`` sits under ``if TYPE_CHECKING:``."""
    tree = ast.parse(src)
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                guarded.add(id(sub))
    for node in ast.walk(tree):
        is_it = isinstance(node, ast.ImportFrom) and node.module and imp.startswith(node.module)
        if is_it and id(node) not in guarded:
            return False
    return True


def test_the_checks_see_a_circle_and_a_backward_arrow() -> None:
    """The checks above can fail: a made-up graph with a circle is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_name_is_imported_across_modules() -> None:
    """A name (or module) starting with ``_`` belongs to its module: no other module of
    framepipe imports it."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (
                node.level or "framepipe" in (node.module or "")
            ):
                parts = (node.module or "").split(".")
                names = [a.name for a in node.names]
                if any(_private(p) for p in parts) or any(_private(n) for n in names):
                    found.append(f"{name}:{node.lineno} from {node.module} import {names}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("framepipe.") and any(
                        _private(p) for p in a.name.split(".")
                    ):
                        found.append(f"{name}:{node.lineno} import {a.name}")
    assert found == []


ENGINE_NAMES = ("local", "ray")


def test_runs_never_branch_on_the_engine() -> None:
    """The runs hand any engine the same work (``framepipe/runs/``): they name no engine
    module and compare nothing with an engine's name."""
    found = []
    for name, path in _modules().items():
        if not name.startswith("framepipe.runs"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for imp in _imports(path, name):
            if imp.startswith(("framepipe.engine.local", "framepipe.engine.ray")):
                found.append(f"{name} imports {imp}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                if any(c in ENGINE_NAMES for c in consts):
                    found.append(f"{name}:{node.lineno} compares with an engine's name")
            if isinstance(node, ast.match_case):
                consts = [c.value for c in ast.walk(node.pattern) if isinstance(c, ast.Constant)]
                if any(c in ENGINE_NAMES for c in consts):
                    found.append(f"{name}:{node.lineno} matches an engine's name")
    assert found == []
