"""The package's shape, checked with plain `ast`: no import circles, modules under 450 lines, no private name taken
from another module, the core never imports the UI, every module declares `__all__`, and the top-level API works."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlhf_lab"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every import in a file, at any depth (function bodies and `if TYPE_CHECKING:` blocks too), as (absolute
    module, imported names, line); relative imports are resolved against the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path) if path.is_relative_to(PACKAGE) else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def internal_edges(path: Path) -> set[str]:
    """The rlhf_lab modules a file imports (`from pkg import submodule` counts as importing the submodule)."""
    edges = set()
    for module, names, _ in imports(path):
        if not module.startswith("rlhf_lab"):
            continue
        subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        edges.update(subs or ([module] if module in MODULES else []))
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (a list of modules, first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles():
    graph = {name: internal_edges(path) - {name} for name, path in MODULES.items()}
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_circles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (one concept per module, ~400 lines)"


def private_uses(path: Path) -> list[str]:
    """Private names (a leading underscore, dunders aside) that `path` imports from an rlhf_lab module, or reads as
    an attribute of an rlhf_lab module it imported."""
    found, aliases = [], set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name.startswith("rlhf_lab")}
    for module, names, line in imports(path):
        if module.startswith("rlhf_lab"):
            found += [f"{path.name}:{line} {module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
            aliases |= {n for n in names if f"{module}.{n}" in MODULES}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and ast.unparse(node.value) in aliases):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_private_name_crosses_a_module():
    files = [*MODULES.values(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]
    found = [use for path in files for use in private_uses(path)]
    assert not found, f"private names used across modules (make them public or move them): {found}"


def test_private_use_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from rlhf_lab.core.seeding import _x\nimport rlhf_lab.core.seeding as s\ns._y()\n")
    assert len(private_uses(bad)) == 2


def test_the_core_never_imports_the_ui():
    offenders = [name for name, path in MODULES.items() if not name.startswith("rlhf_lab.ui")
                 and any(m.startswith("rlhf_lab.ui") for m in internal_edges(path))]
    assert not offenders


@pytest.mark.parametrize("name", sorted(n for n, p in MODULES.items() if p.name != "__init__.py"))
def test_every_module_declares_its_public_names(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_top_level_api():
    import rlhf_lab

    assert 20 <= len(rlhf_lab.__all__) <= 64  # curated: what the lessons and README use, not every public name
    for name in rlhf_lab.__all__:
        assert getattr(rlhf_lab, name) is not None
    from rlhf_lab import PPOTrainer, lessons

    assert PPOTrainer.__module__ == "rlhf_lab.train.ppo" and lessons.__name__ == "rlhf_lab.teach.lessons"
    with pytest.raises(AttributeError):
        rlhf_lab.not_a_name


def lesson_imports(source: str) -> set[str]:
    """The modules a notebook's code imports names from with `from rlhf_lab... import` (IPython magics skipped)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return {node.module for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlhf_lab")}


@pytest.mark.parametrize("lesson", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_lessons_import_only_the_curated_api(lesson):
    """Lessons use `from rlhf_lab import ...` (and the UI layer's `rlhf_lab.ui`): moving a module never breaks one."""
    import json

    cells = json.loads(lesson.read_text())["cells"]
    used = set().union(*(lesson_imports("".join(c["source"])) for c in cells if c["cell_type"] == "code"))
    allowed = {"rlhf_lab", "rlhf_lab.ui"}
    assert used <= allowed, f"{lesson.name} imports from {sorted(used - allowed)}"


def test_the_lesson_import_check_can_fail():
    assert lesson_imports("from rlhf_lab.train.kto import KTOTrainer\n%pip install x\nfrom rlhf_lab import lessons") \
        == {"rlhf_lab.train.kto", "rlhf_lab"}
