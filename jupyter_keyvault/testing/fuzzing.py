"""The schemathesis settings both fuzz suites use (tests/test_openapi_fuzz.py on a local vault,
tests/test_backends.py on a hub-backed one): one statement of what openapi.json promises."""

from __future__ import annotations

from typing import Any

# Statuses every operation may answer to a schema-valid request: auth, absent names, conflicts,
# size and rate limits. A 422 for a valid request means openapi.json and the handlers disagree.
VALID_REQUEST_STATUSES: list[Any] = ["2XX", "3XX", 401, 403, 404, 409, 413, 429]

# The rules JSON Schema cannot state, and the operations they apply to (each answered with a 422):
# PUT: "no sk-ant- key under provider openai", "no whitespace in an API key", "at most max_value_bytes";
# POST test: "a stored credential without a provider cannot be tested".
SEMANTIC_422 = [
    ("/keyvault/api/credentials/{name}", "PUT"),
    ("/keyvault/api/credentials/{name}/test", "POST"),
]


def schemathesis_config(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "checks": {
            # jupyter_server (not this extension) answers a request without credentials with 403, and this
            # check insists on 401 for a missing Authorization header; the suites test that case themselves.
            "missing_required_header": {"enabled": False},
            "positive_data_acceptance": {"expected-statuses": VALID_REQUEST_STATUSES},
        },
        "operations": [
            {"include-path": path, "include-method": method,
             "checks": {"positive_data_acceptance": {"expected-statuses": [*VALID_REQUEST_STATUSES, 422]}}}
            for path, method in SEMANTIC_422
        ],
    }
    config.update(extra or {})
    return config
