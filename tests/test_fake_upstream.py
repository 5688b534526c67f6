"""Tests for the fake OpenAI/Anthropic upstream, driven by the real SDKs."""

import base64
import json
import struct
import subprocess
import sys
import threading
import time

import anthropic
import httpx2
import openai
import pytest

from jupyter_keyvault.testing.fake_upstream import EMBEDDING, REPLY_TEXT, FakeUpstream

KEY = "sk-test-fake-upstream-key-1234"
BAD_KEY = "sk-wrong-0123456789abcdef-SECRET"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
CLAUDE = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": CHAT["messages"]}


@pytest.fixture
def fake():
    with FakeUpstream(valid_keys={KEY}) as server:
        yield server


@pytest.fixture
def oai(fake):
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key=KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def claude(fake):
    client = anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0)
    yield client
    client.close()


def test_lifecycle_and_urls():
    server = FakeUpstream(valid_keys={KEY})
    with pytest.raises(RuntimeError):
        _ = server.url  # not started yet
    assert server.start() is server
    url = server.url
    try:
        assert url.startswith("http://127.0.0.1:")
        assert server.port > 0
        assert server.openai_base_url == server.url + "/v1"
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/v1/models", timeout=2)


# -- OpenAI ------------------------------------------------------------------


def test_openai_models_list(fake, oai):
    models = oai.models.list()
    ids = [m.id for m in models.data]
    assert len(ids) >= 2
    assert all(m.object == "model" and m.owned_by for m in models.data)
    (request,) = fake.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert fake.received_keys() == [KEY]


def test_openai_chat_non_streaming(fake, oai):
    completion = oai.chat.completions.create(**CHAT)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == REPLY_TEXT
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json()["messages"] == CHAT["messages"]
    assert request.headers["content-type"].startswith("application/json")


def test_openai_chat_streaming_is_not_buffered(fake, oai):
    list(oai.chat.completions.create(**CHAT, stream=True))  # warm up the SDK and the connection
    fake.chunk_interval = 0.1
    fake.n_chunks = 5
    started = time.monotonic()
    arrivals, deltas, usage, finish = [], [], None, None
    stream = oai.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            arrivals.append(time.monotonic() - started)
            deltas.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish

    assert len(deltas) == 5
    assert "".join(deltas) == REPLY_TEXT
    assert finish == "stop"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # Each chunk is flushed on its own: arrivals are spread by ~chunk_interval.
    assert all(gap >= 0.07 for gap in gaps), gaps
    assert arrivals[0] < arrivals[-1] - 0.3, arrivals


def test_openai_streaming_wire_format(fake):
    fake.n_chunks = 3
    body = {**CHAT, "stream": True}
    response = httpx2.post(
        fake.openai_base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 3  # no usage chunk unless stream_options.include_usage
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("usage" not in c for c in chunks)


def test_openai_wrong_key_is_echoed_in_error(fake):
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key=BAD_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as excinfo:
        client.chat.completions.create(**CHAT)
    client.close()
    error = excinfo.value
    assert error.status_code == 401
    assert BAD_KEY in str(error)  # the fake echoes the presented key like OpenAI
    assert error.code == "invalid_api_key"
    assert error.body["type"] == "invalid_request_error"
    assert fake.received_keys() == [BAD_KEY]


def test_openai_missing_key(fake):
    response = httpx2.get(fake.openai_base_url + "/models")
    assert response.status_code == 401
    assert "didn't provide an API key" in response.json()["error"]["message"]


def test_valid_keys_can_change_while_running(fake):
    new_key = "sk-test-rotated"
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key=new_key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    fake.valid_keys.add(new_key)
    assert client.models.list().data
    client.close()


def test_openai_embeddings(oai):
    default = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # SDK asks for base64
    assert [d.index for d in default.data] == [0, 1]
    assert default.data[0].embedding == pytest.approx(EMBEDDING, rel=1e-6)
    floats = oai.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float")
    assert floats.data[0].embedding == list(EMBEDDING)
    assert floats.usage.prompt_tokens > 0


def test_embeddings_base64_is_little_endian_float32(fake):
    response = httpx2.post(
        fake.openai_base_url + "/embeddings",
        json={"model": "m", "input": "x", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    assert struct.unpack(f"<{len(EMBEDDING)}f", raw) == pytest.approx(EMBEDDING, rel=1e-6)


# -- Anthropic ---------------------------------------------------------------


def test_anthropic_models_list(fake, claude):
    models = list(claude.models.list())
    assert len(models) >= 2
    assert all(m.type == "model" and m.display_name for m in models)
    (request,) = fake.requests
    assert "anthropic-version" in request.headers
    assert fake.received_keys() == [KEY]  # this SDK sends it as a bearer token


def test_anthropic_x_api_key_header(fake):
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    models = httpx2.get(fake.url + "/v1/models", headers=headers).json()
    assert models["has_more"] is False
    assert models["first_id"] == models["data"][0]["id"] and models["data"][0]["type"] == "model"

    bad = httpx2.post(fake.url + "/v1/messages", json=CLAUDE, headers={**headers, "x-api-key": BAD_KEY})
    assert bad.status_code == 401
    assert bad.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": f"invalid x-api-key {BAD_KEY}"},
    }
    assert fake.received_keys() == [KEY, BAD_KEY]


def test_anthropic_messages_create(fake, claude):
    message = claude.messages.create(**CLAUDE)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == REPLY_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.json()["max_tokens"] == 64


def test_anthropic_messages_stream(fake, claude):
    with claude.messages.stream(**CLAUDE) as stream:  # warm up the SDK and the connection
        stream.get_final_message()
    fake.chunk_interval = 0.1
    fake.n_chunks = 4
    arrivals, pieces = [], []
    started = time.monotonic()
    with claude.messages.stream(**CLAUDE) as stream:
        for text in stream.text_stream:
            arrivals.append(time.monotonic() - started)
            pieces.append(text)
        final = stream.get_final_message()
    assert len(pieces) == 4
    assert "".join(pieces) == REPLY_TEXT
    assert final.content[0].text == REPLY_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(gap >= 0.07 for gap in gaps), arrivals


def test_anthropic_raw_stream_events(fake, claude):
    fake.n_chunks = 2
    names = [event.type for event in claude.messages.create(**CLAUDE, stream=True)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_wrong_key_is_echoed_in_error(fake):
    client = anthropic.Anthropic(base_url=fake.url, api_key=BAD_KEY, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as excinfo:
        client.messages.create(**CLAUDE)
    client.close()
    assert excinfo.value.status_code == 401
    assert BAD_KEY in str(excinfo.value)
    assert excinfo.value.body["error"]["type"] == "authentication_error"


# -- connections, delay, records ---------------------------------------------


def test_keep_alive_reuses_connections(fake, oai):
    for _ in range(20):
        oai.models.list()
    assert len(fake.requests) == 20
    assert 1 <= fake.connections_opened <= 2


def test_connection_counter_counts_new_connections(fake):
    for _ in range(5):
        with httpx2.Client() as client:  # a fresh pool each time: no reuse
            assert client.get(fake.url + "/echo-headers").status_code == 200
    assert fake.connections_opened == 5
    fake.reset()
    assert fake.connections_opened == 0 and fake.requests == []


def test_delay_slows_requests_without_blocking_the_server(fake, oai):
    fake.delay = 0.4
    started = time.monotonic()
    oai.models.list()
    assert time.monotonic() - started >= 0.4

    # Concurrent delayed requests overlap, so the loop is not blocked.
    def call():
        with httpx2.Client() as client:
            client.get(fake.url + "/echo-headers")

    threads = [threading.Thread(target=call) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.2, elapsed


def test_echo_headers_needs_no_auth_and_is_recorded(fake):
    headers = {"X-Custom-Thing": "yes", "x-goog-api-key": "g-1"}
    response = httpx2.get(fake.url + "/echo-headers?a=1", headers=headers)
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["x-custom-thing"] == "yes"
    assert echoed["x-goog-api-key"] == "g-1"
    (request,) = fake.requests
    assert (request.path, request.query) == ("/echo-headers", "a=1")
    assert fake.received_keys() == ["g-1"]


def test_unknown_path_is_json_404(fake):
    response = httpx2.post(fake.url + "/v2/nothing", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert fake.requests[0].path == "/v2/nothing"


def test_script_mode_prints_url_and_serves():
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_keyvault.testing.fake_upstream", "--port", "0", "--key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        ok = httpx2.get(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["object"] == "list"
        assert httpx2.get(url + "/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
