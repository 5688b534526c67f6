"""The layering the README's "Architecture" section states, checked on the source: no import
circles, lower layers never import higher ones, and each process's packages import only
what that process runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "jupyter_keyvault"

# Higher layers may import lower ones, never the reverse (README, "Architecture").
CORE = {"cache", "store", "providers", "scrub", "nbscrub", "kernel_auth", "envguard", "ratelimit", "dotenv", "oauth",
        "_version"}
FORBIDDEN = {
    # layer: (internal packages it must not import, third-party roots it must not import)
    "store": ({"providers", "scrub", "nbscrub", "oauth", "settings", "vaults", "web", "server", "kernel", "hub",
               "cli", "testing"}, {"tornado", "jupyter_server", "jupyterhub", "aiohttp"}),
    "cache": ({"store", "providers", "scrub", "settings", "vaults", "web", "server", "kernel", "hub", "cli",
               "testing"}, {"tornado", "jupyter_server", "jupyterhub", "aiohttp"}),
    "scrub": ({"settings", "vaults", "web", "server", "kernel", "hub", "cli"}, {"tornado", "jupyter_server"}),
    "providers": ({"settings", "vaults", "web", "server", "kernel", "hub", "cli"}, {"tornado", "jupyter_server"}),
    "isolation": ({"settings", "vaults", "web", "server", "kernel", "hub", "cli", "store", "scrub"},
                  {"tornado", "jupyter_server", "jupyterhub"}),
    "vaults": ({"web", "server", "kernel", "hub", "cli"}, {"tornado", "jupyter_server", "jupyterhub"}),
    "web": ({"settings", "server", "kernel", "hub", "cli"}, {"jupyter_server", "jupyterhub"}),
    "kernel": ({"web", "server", "hub", "cli", "vaults"}, {"tornado", "jupyter_server", "jupyterhub"}),
    "server": ({"hub", "kernel", "cli"}, {"jupyterhub"}),
    "hub": ({"server", "kernel", "cli"}, {"jupyter_server"}),
    "cli": ({"server", "hub", "web", "kernel"}, {"tornado", "jupyter_server"}),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking_block(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (never runs) and `if __name__ == "__main__":` (runs only as a program,
    a different module object from the one other modules import)."""
    if not isinstance(node, ast.If):
        return False
    test = ast.unparse(node.test)
    return "TYPE_CHECKING" in test or test in ("__name__ == '__main__'", '__name__ == "__main__"')


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """Absolute names imported by a module at run time (function-level imports included,
    `if TYPE_CHECKING:` blocks excluded)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if candidate in modules else target)
            visit(child)

    visit(ast.parse(path.read_text("utf-8")))
    return found


def source_files() -> list[Path]:
    files = sorted((ROOT / PACKAGE).rglob("*.py")) + sorted((ROOT / "keyvault").rglob("*.py"))
    return [f for f in files if "migrations" not in f.parts and "labextension" not in f.parts]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = source_files()
    modules = {module_name(f) for f in files}
    return {module_name(f): runtime_imports(f, modules) for f in files}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def test_given_the_package_when_its_import_graph_is_walked_then_it_has_no_cycles(graph):
    internal = {m: {i for i in deps if i in graph and i != m} for m, deps in graph.items()}
    cycles, state, stack = [], {}, []

    def walk(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(internal[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[node] = "done"

    for module in sorted(internal):
        if module not in state:
            walk(module)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_given_a_layer_when_its_imports_are_listed_then_none_reaches_a_higher_layer(graph, layer):
    internal_forbidden, external_forbidden = FORBIDDEN[layer]
    violations = []
    for module, deps in graph.items():
        if layer_of(module) != layer:
            continue
        for dep in deps:
            if dep.startswith(PACKAGE + ".") and layer_of(dep) in internal_forbidden:
                violations.append(f"{module} imports {dep}")
            if dep.split(".")[0] in external_forbidden:
                violations.append(f"{module} imports {dep}")
    assert violations == []


def test_given_the_core_layers_when_listed_then_each_exists_as_a_module_or_package():
    """The rules above name real layers: a renamed package must update them, not escape them."""
    for name in CORE | set(FORBIDDEN):
        assert (ROOT / PACKAGE / name).is_dir() or (ROOT / PACKAGE / f"{name}.py").is_file(), name


def test_given_a_check_that_should_fail_when_a_cycle_is_planted_then_the_walker_finds_it(tmp_path):
    """The cycle check itself can fail: two modules importing each other are reported."""
    pkg = tmp_path / "jupyter_keyvault" / "store"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .a import x\n")
    modules = {"jupyter_keyvault.store.a", "jupyter_keyvault.store.b"}
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        deps = {m: runtime_imports(tmp_path / (m.replace(".", "/") + ".py"), modules) for m in modules}
    finally:
        ROOT = saved
    assert "jupyter_keyvault.store.b" in deps["jupyter_keyvault.store.a"]
    assert "jupyter_keyvault.store.a" in deps["jupyter_keyvault.store.b"]
