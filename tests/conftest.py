"""Shared test set-up: every test runs with a private HOME and Jupyter dirs, no keyring."""

from __future__ import annotations

import os
import tempfile

import pytest

# Isolate before anything imports jupyter_core (paths are read at import time in places).
_ISOLATED = tempfile.mkdtemp(prefix="keyvault-tests-")
for _var, _sub in {
    "HOME": "home",
    "JUPYTER_DATA_DIR": "data",
    "JUPYTER_CONFIG_DIR": "config",
    "JUPYTER_RUNTIME_DIR": "runtime",
    "IPYTHONDIR": "ipython",
}.items():
    os.environ[_var] = os.path.join(_ISOLATED, _sub)
    os.makedirs(os.environ[_var], exist_ok=True)
os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
for _var in ("KEYVAULT_MASTER_KEY", "KEYVAULT_PASSPHRASE", "KEYVAULT_NEW_MASTER_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_var, None)

pytest_plugins = [
    "pytest_jupyter.jupyter_server",
    "jupyter_keyvault.testing.pytest_plugin",
    "jupyter_keyvault.testing.postgres",
]


@pytest.fixture
def canary() -> str:
    """A unique, provider-shaped secret to search for wherever it must not appear."""
    import secrets

    return "sk-proj-CANARY" + secrets.token_hex(20)


@pytest.fixture
def jp_fetch(jp_fetch):
    """pytest-jupyter's jp_fetch, with a body labelled as JSON unless the test says otherwise, as every
    real client (the browser, the SDKs, requests' json=) labels it: the REST API refuses unlabelled bodies."""

    async def fetch(*parts, **kwargs):
        headers = dict(kwargs.get("headers") or {})
        if kwargs.get("body") and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        kwargs["headers"] = headers
        return await jp_fetch(*parts, **kwargs)

    return fetch


@pytest.fixture
def rest(server_url, jp_serverapp):
    """An async client of /keyvault/api/ on the test server, with its token; 4xx answers are returned."""
    import httpx

    token = jp_serverapp.identity_provider.token

    async def call(method: str, path: str, body=None) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            return await client.request(method, server_url + "keyvault/api/" + path,
                                        headers={"Authorization": f"token {token}"}, json=body)

    return call


@pytest.fixture
def http(jp_asyncio_loop):
    """An async HTTP client for the test server's proxy routes (no Jupyter token of its own)."""
    import httpx2

    client = httpx2.AsyncClient(timeout=30)
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


@pytest.fixture
def proxy_token(jp_fetch):
    """Store VALID_OPENAI_KEY as OPENAI_API_KEY through the REST API and return a new vault access
    token (kvt1) for it."""
    import json

    from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY

    async def create(token_name: str = "ci") -> str:
        await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                       body=json.dumps({"value": VALID_OPENAI_KEY, "provider": "openai"}))
        created = await jp_fetch("keyvault", "api", "tokens", method="POST", body=json.dumps(
            {"name": token_name, "credentials": ["OPENAI_API_KEY"]}))
        return json.loads(created.body)["token"]

    return create


@pytest.fixture(params=["automaton", "regex"])
def engine(request, monkeypatch):
    """Run a scrubber test on the compiled Aho–Corasick engine and on the regex fallback."""
    from jupyter_keyvault import scrub

    if request.param == "regex":
        monkeypatch.setattr(scrub, "ahocorasick_rs", None)
    else:  # a dependency (pyproject.toml): missing, the compiled engine's tests fail rather than skip
        assert scrub.ahocorasick_rs is not None, "ahocorasick-rs is a dependency (pyproject.toml)"
    return request.param


# scripts/test.sh installs chromium, PostgreSQL and configurable-http-proxy, so there a skip for a
# missing real part would hide an unproven "Must show": KEYVAULT_STRICT_SKIPS=1 turns it into a failure.
_EXPECTED_SKIP_REASONS = ("root reads through permission bits", "external server")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("KEYVAULT_STRICT_SKIPS") != "1":
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(expected in reason for expected in _EXPECTED_SKIP_REASONS):
        report.outcome = "failed"
        report.longrepr = f"skipped where every real part is installed (KEYVAULT_STRICT_SKIPS=1): {reason}"


# Test tiers. `pytest -m "not (e2e or browser or hub or postgres)"` is the fast tier (under a
# minute); scripts/test.sh runs everything. A test is marked by the real parts it starts: by the
# fixtures it uses, else by its module (which starts the part itself).
_MARKER_FIXTURES = {
    "postgres": {"postgres_cluster", "postgres_url"},
    "e2e": {"server_kernel"},
}
_MARKER_MODULES = {
    "browser": {"test_browser_oauth_tokens", "test_browser_panel", "test_browser_sidebar"},
    "hub": {"test_hub_e2e", "test_hub_lifetimes", "test_hub_per_user_e2e", "test_hub_harness", "test_hub_service_postgres",
            "test_hub_replicas"},
    "postgres": {"test_hub_service_postgres", "test_store_sql_concurrency", "test_hub_replicas"},
    "e2e": {"test_binder", "test_examples_ui", "test_install", "test_kernel_e2e", "test_scrub_kernel",
            "test_terminal_env", "test_widgets_kernel", "test_widgets_oauth_kernel", "test_openapi_fuzz",
            "test_store_durability", "test_faults", "test_proxy", "test_cli", "test_scrub_iopub_channels",
            "test_tokens", "test_proxy_headers", "test_proxy_uploads", "test_proxy_encoding", "test_realtime",
            "test_client_matrix", "test_jupyter_ai", "test_lifetimes_e2e", "test_proxy_caches", "test_proxy_session"},
}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        for marker, fixtures in _MARKER_FIXTURES.items():
            if fixtures & set(getattr(item, "fixturenames", ())):
                item.add_marker(marker)
        for marker, modules in _MARKER_MODULES.items():
            if module in modules:
                item.add_marker(marker)
