"""The package's layering, checked on its source: each layer imports only the layers below it.

entry points  dbt_celery.run, .cli, .progress, .conformance, .tasks, __init__
celery        dbt_celery.celery.*   the only layer that calls Celery's task API
dbt           dbt_celery.dbt.*      the only layer that imports dbt
core          dbt_celery.core.*     records, policy, plan, store: neither dbt nor Celery
errors        dbt_celery.errors
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dbt_celery"
THIRD_PARTY_DBT = ("dbt.", "dbt_common", "dbt_adapters")
THIRD_PARTY_CELERY = ("celery", "kombu")
# For each layer, the dbt_celery layers it must not import.
FORBIDDEN = {
    "errors": ("core", "dbt", "celery", "entry"),
    "core": ("dbt", "celery", "entry"),
    "dbt": ("celery", "entry"),
    "celery": ("entry",),
    "entry": (),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("core", "dbt", "celery"):
        return parts[1]
    return "errors" if module == "dbt_celery.errors" else "entry"


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if node.module == "dbt_celery"}
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_the_layers_below_it(module):
    own = layer(module)
    for imported in imports(MODULES[module]):
        if imported.startswith("dbt_celery."):
            assert layer(imported) not in FORBIDDEN[own], f"{module} ({own}) imports {imported}"
        if (imported == "dbt" or imported.startswith(THIRD_PARTY_DBT)) and own != "dbt":
            pytest.fail(f"{module} imports dbt ({imported}); only dbt_celery.dbt may")
        if imported.split(".")[0] in THIRD_PARTY_CELERY and own in ("errors", "core", "dbt"):
            pytest.fail(f"{module} imports {imported}; the {own} layer knows no Celery")


def test_only_the_celery_layer_calls_the_task_api():
    for module, path in MODULES.items():
        if layer(module) == "celery":
            continue
        source = path.read_text()
        for call in ("apply_async(", "AsyncResult(", "GroupResult(", ".retry(", "send_task("):
            assert call not in source, f"{module} calls {call}: that belongs in dbt_celery.celery"


def test_there_are_no_import_cycles():
    graph = networkx.DiGraph()
    for module, path in MODULES.items():
        for imported in imports(path):
            target = imported if imported in MODULES else imported.rsplit(".", 1)[0]
            if target in MODULES and target != module and target != "dbt_celery":
                graph.add_edge(module, target)
    assert list(networkx.simple_cycles(graph)) == []


def test_importing_the_package_imports_neither_dbt_nor_a_celery_app():
    import subprocess
    import sys

    code = (
        "import sys, dbt_celery\n"
        "dbt = any(m == 'dbt' or m.startswith('dbt.') for m in sys.modules)\n"
        "state = sys.modules.get('celery._state')\n"
        "apps = len(list(state._get_active_apps())) if state else 0\n"
        "print(dbt, apps)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "0"]  # a Django or Flask app stays the current one
