import json

from jupyter_keyvault.testing.pytest_plugin import VALID_OPENAI_KEY


async def test_given_a_valid_key_when_put_then_listed_without_value_and_test_is_ok(jp_fetch, keyvault_app, fake_upstream):
    resp = await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", method="PUT",
                          body=json.dumps({"value": VALID_OPENAI_KEY}))
    assert resp.code == 201
    assert VALID_OPENAI_KEY not in resp.body.decode()
    resp = await jp_fetch("keyvault", "api", "credentials", "OPENAI_API_KEY", "test", method="POST", body="")
    result = json.loads(resp.body)
    assert result["ok"] is True, result
    assert fake_upstream.received_keys() == [VALID_OPENAI_KEY]
