"""Imports inside ``adapter/`` flow one way: parsers and engines meet only in ``adapter.plan``.

    schema  ◄──  plan  ◄──  query    (parse → plan → execute → format)
                       ◄──  engines  (plan → engine requests)

Every import is read with ``ast`` (those inside functions too: a lazy import is still a
dependency), so a cycle cannot hide behind a function-level ``import``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adapter

ROOT = Path(adapter.__file__).resolve().parent

# Modules with no adapter dependencies of their own, that any layer may use.
LEAVES = {"adapter.errors", "adapter.vectors", "adapter.safejson", "adapter.base64text"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def adapter_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every ``adapter.*`` import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "adapter"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "adapter":  # from adapter import safejson
                found += [(node.lineno, f"adapter.{a.name}") for a in node.names]
            elif node.module.startswith("adapter."):
                found.append((node.lineno, node.module))
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def forbidden(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``; None when it may."""
    if within(importer, "adapter.engines") and within(imported, "adapter.query"):
        return "engines may not import the query side (share types through adapter.plan)"
    if within(importer, "adapter.query") and within(imported, "adapter.engines"):
        return "the query side may not import an engine (it speaks to adapter.plan.engine.Engine)"
    if within(importer, "adapter.plan"):
        # The plan names tables by their TableSpec (the Engine protocol), nothing more.
        if not (within(imported, "adapter.plan") or within(imported, "adapter.schema") or imported in LEAVES):
            return "adapter.plan may import only itself, adapter.schema and leaf modules"
    if within(importer, "adapter.schema"):
        if not (within(imported, "adapter.schema") or imported in LEAVES):
            return "adapter.schema is the bottom layer: only itself and leaf modules"
    if importer in LEAVES and imported != importer and imported not in LEAVES:
        return "a leaf module imports no other adapter module"
    return None


def violations(root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        for line, imported in adapter_imports(path):
            reason = forbidden(importer, imported)
            if reason:
                out.append(f"{importer} ({path.relative_to(root.parent)}:{line}) imports {imported}: {reason}")
    return out


def test_imports_flow_one_way():
    problems = violations()
    assert not problems, "imports against the layering:\n  " + "\n  ".join(problems)


def test_the_plan_package_exists():
    # The rules above are vacuous if the walk finds nothing to check.
    names = {module_name(p) for p in ROOT.rglob("*.py")}
    assert {"adapter.plan.tree", "adapter.plan.engine", "adapter.query.planner", "adapter.engines.embedded"} <= names


@pytest.mark.parametrize("importer, imported", [
    ("adapter.engines.embedded", "adapter.query.planner"),
    ("adapter.query.executor", "adapter.engines.factory"),
    ("adapter.plan.tree", "adapter.query.haquery"),
    ("adapter.plan.engine", "adapter.runtime"),
    ("adapter.schema.parse", "adapter.plan.tree"),
    ("adapter.errors", "adapter.schema.model"),
])
def test_each_rule_refuses(importer, imported):
    assert forbidden(importer, imported)


def test_a_violation_is_named_with_its_place(tmp_path):
    # A function-level import counts, and the message names module, file, line and target.
    pkg = tmp_path / "adapter" / "engines"
    pkg.mkdir(parents=True)
    (tmp_path / "adapter" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("def f():\n    from adapter.query.planner import plan_ha_query\n")
    (problem,) = violations(tmp_path / "adapter")
    assert problem.startswith("adapter.engines.bad (adapter/engines/bad.py:2) imports adapter.query.planner")
