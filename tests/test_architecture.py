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


# Never needed by a local-mode server's load: the hub service and its client, the SQL store, the
# kernel side, test tools; and what jupyter_keyvault.lazy defers to first use.
NOT_IN_SERVER_LOAD = ("jupyter_keyvault.hub", "jupyter_keyvault.vaults.hub", "jupyter_keyvault.kernel",
                      "jupyter_keyvault.testing", "jupyter_keyvault.store.sql", "sqlalchemy", "authlib", "openai",
                      "anthropic", "ipywidgets", "schemathesis", "hypothesis", "jupyterhub")


def test_given_a_local_server_when_the_extension_loads_then_what_it_needs_only_later_is_not_imported(tmp_path):
    """The extension's load in a real ServerApp (settings, handlers, the vault opened): the modules
    kept lazy for the server's memory (benchmarks/bench_rss.py) stay out of the process."""
    import base64
    import json
    import os
    import subprocess
    import sys

    from jupyter_keyvault.lazy import LAZY_IN_SERVER

    code = f"""
import json, sys
from jupyter_server.serverapp import ServerApp
app = ServerApp(jpserver_extensions={{"jupyter_keyvault": True}}, root_dir={str(tmp_path)!r})
app.config.KeyVault.vault_path = {str(tmp_path / "vault.db")!r}
app.initialize(argv=[], find_extensions=False, new_httpserver=False)
assert "keyvault_manager" in app.web_app.settings, "the extension did not load"
print(json.dumps(sorted(sys.modules)))
"""
    env = {**os.environ, "KEYVAULT_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "jupyter_keyvault.server.proxy" in loaded  # the proxy's handlers are registered all the same
    for name in (*LAZY_IN_SERVER, *NOT_IN_SERVER_LOAD):
        assert [m for m in loaded if m == name or m.startswith(name + ".")] == [], name
