"""Two and three replicas of the hub service on one real PostgreSQL, behind a real JupyterHub,
clients spread over them: exact daily quotas, a rate limit across replicas, an admin revoke
enforced elsewhere within the bound, no acknowledged usage lost when a replica is killed
mid-stream, graceful shutdown, a PostgreSQL restart (503, then recovery with counters intact),
and a refusal to run on a newer schema."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from jupyter_keyvault.testing.hub import http, missing_requirements

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or "")

SHARED = "sk-proj-REPLICASHARED" + secrets.token_hex(16)
PERSONAL = "sk-proj-REPLICAPERSONAL" + secrets.token_hex(16)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**CHAT, "stream": True}
STUDENTS = [f"s{i}" for i in range(8)]
REVOKE_BOUND = 1.0
TOKEN_CACHE = 3


@pytest.fixture(scope="module")
def cluster(postgres_cluster):
    return postgres_cluster


@pytest.fixture(scope="module")
def replicas(cluster):
    from jupyter_keyvault.testing.fake_upstream import FakeUpstream
    from jupyter_keyvault.testing.replicas import ServiceReplicas

    db_url = cluster.create_database()
    upstream = FakeUpstream(valid_keys=(SHARED, PERSONAL)).start()
    r = ServiceReplicas(3, db_url, admin_users=["carol"], extra_args=[
        f"--KeyVaultHubService.provider_base_urls=openai={upstream.openai_base_url}",
        f"--KeyVaultHubService.token_cache_seconds={TOKEN_CACHE}"])
    r.start()
    try:
        for name in ["alice", "bob", "erin", "frank", *STUDENTS]:
            r.hub.create_user(name)
        r.hub.create_group("class-a", STUDENTS)
        yield r, upstream, db_url
    finally:
        r.stop()
        upstream.stop()
        cluster.drop_database(db_url)


def call(r, i, user, method, path, body=None, timeout=30):
    return http(method, r.url(i) + path, token=r.hub.user_token(user), body=body, timeout=timeout)


def db_scalar(db_url, sql, **params):
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def test_health_endpoints_answer_without_a_token_and_say_nothing_but_their_state(replicas):
    r, _, _ = replicas
    for i in range(3):
        for probe in ("live", "ready"):
            res = http("GET", r.url(i) + f"health/{probe}")
            assert res.status == 200 and res.json() == {"status": "ok"}
            assert res.headers.get("Cache-Control") == "no-store"
        assert http("POST", r.url(i) + "health/ready", body={}).status == 405  # read-only
        assert http("GET", r.url(i) + "api/credentials").status == 401  # the API still needs a token


@pytest.mark.parametrize("spread", [2, 3])
def test_given_a_daily_quota_of_n_then_exactly_n_requests_succeed_over_all_replicas_and_the_rest_get_429(
        replicas, spread):
    r, _, db_url = replicas
    key, quota = f"COURSE{spread}", 17
    assert call(r, 0, "carol", "PUT", f"api/admin/shared/{key}", {"value": SHARED, "provider": "openai"}).status == 201
    assert call(r, 1, "carol", "PUT", f"api/admin/shared/{key}/grants/group/class-a").status == 201
    assert call(r, 2 % spread, "carol", "PUT", f"api/admin/limits/shared/{key}",
                {"requests_per_day": quota}).status == 200
    for user in STUDENTS:
        r.hub.user_token(user)
    time.sleep(0.5)  # the grant reached every replica (bound 1 s)

    def one(n):
        user = STUDENTS[n % len(STUDENTS)]
        return http("POST", r.url(n % spread) + "proxy/openai/v1/chat/completions", token=r.hub.user_token(user),
                    body=CHAT, headers={"X-KeyVault-Credential": key})

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(48)))
    statuses = [res.status for res in results]
    assert statuses.count(200) == quota, statuses
    assert statuses.count(429) == 48 - quota, [(res.status, res.text) for res in results if res.status not in (200, 429)]
    refused = next(res for res in results if res.status == 429)
    assert "daily request quota reached for shared key" in refused.text and refused.headers.get("Retry-After")
    assert db_scalar(db_url, "SELECT requests FROM keyvault_hub_counters WHERE kind='shared' AND subject=:s",
                     s=key) == quota
    assert db_scalar(db_url, "SELECT sum(requests) FROM keyvault_hub_usage WHERE credential=:s", s=key) == quota


def test_a_rate_limit_holds_across_replicas_within_its_window(replicas):
    r, upstream, _ = replicas
    assert call(r, 0, "alice", "PUT", "api/credentials/OPENAI_API_KEY", {"value": PERSONAL}).status == 201
    assert call(r, 1, "carol", "PUT", "api/admin/limits/user/alice", {"rate_per_minute": 6}).status == 200
    time.sleep(0.5)
    t0 = time.monotonic()
    statuses = [call(r, n % 3, "alice", "POST", "proxy/openai/v1/chat/completions", CHAT).status for n in range(15)]
    elapsed = time.monotonic() - t0
    # burst 6, then one more every 10 s
    assert statuses.count(200) == 6 + int(elapsed // 10), (statuses, elapsed)
    assert statuses.count(429) == 15 - statuses.count(200)
    assert {n % 3 for n, s in enumerate(statuses) if s == 429} == {0, 1, 2}  # every replica refuses
    assert call(r, 1, "carol", "PUT", "api/admin/limits/user/alice", {}).status == 200


def test_an_admin_revoke_on_replica_1_is_enforced_by_replica_2_within_the_bound(replicas):
    r, _, _ = replicas
    assert call(r, 0, "carol", "PUT", "api/admin/shared/SOLO", {"value": SHARED, "provider": "openai"}).status == 201
    assert call(r, 0, "carol", "PUT", "api/admin/shared/SOLO/grants/user/erin").status == 201
    time.sleep(0.5)
    use = {"X-KeyVault-Credential": "SOLO"}
    for _ in range(3):  # replica 2 has the grant cached now
        assert http("POST", r.url(1) + "proxy/openai/v1/chat/completions", token=r.hub.user_token("erin"),
                    body=CHAT, headers=use).status == 200
    assert call(r, 0, "carol", "DELETE", "api/admin/shared/SOLO/grants/user/erin").status == 204
    revoked_at = time.monotonic()
    while True:
        # A request sent within the bound may still pass; one sent after it must not (the time a
        # busy machine takes to answer is not the enforcement delay, so count from the send).
        waited = time.monotonic() - revoked_at
        status = http("POST", r.url(1) + "proxy/openai/v1/chat/completions", token=r.hub.user_token("erin"),
                      body=CHAT, headers=use).status
        if status == 401:
            break
        assert status == 200 and waited <= REVOKE_BOUND, (status, waited)
        # Paced: back to back, erin's requests passed the service's default 60 a minute within 0.2 s
        # whenever the revoke took that long to arrive, and a 429 hid the outcome.
        time.sleep(REVOKE_BOUND / 40)
    assert waited <= REVOKE_BOUND
    print(f"revoke enforced by another replica after {waited * 1000:.0f} ms")


def test_a_token_deleted_in_jupyterhub_stops_working_on_every_replica_within_the_token_cache_bound(replicas):
    r, _, _ = replicas
    made = r.hub.api("POST", "users/alice/tokens", {"note": "to revoke"}, expect=201).json()
    token = made["token"]
    for i in range(3):  # cached on every replica now
        assert http("GET", r.url(i) + "api/credentials", token=token).status == 200
    r.hub.api("DELETE", f"users/alice/tokens/{made['id']}", expect=204)
    deleted_at = time.monotonic()
    pending = {0, 1, 2}
    while pending:
        for i in sorted(pending):
            sent = time.monotonic() - deleted_at
            status = http("GET", r.url(i) + "api/credentials", token=token).status
            if status in (401, 403):
                pending.discard(i)
            else:  # still accepted: only while its cache entry may live (counted from the send)
                assert status == 200 and sent <= TOKEN_CACHE + 1, (i, status, sent)
        time.sleep(0.1)


def start_streams(r, i, user, count):
    """`count` streaming requests on replica i, each read in a thread; returns (threads, bodies, started)."""
    bodies: list[bytes] = [b""] * count
    started = threading.Semaphore(0)

    def read(n):
        req = urllib.request.Request(r.url(i) + "proxy/openai/v1/chat/completions", method="POST",
                                     data=__import__("json").dumps(STREAM).encode(),
                                     headers={"Authorization": f"token {r.hub.user_token(user)}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # nosec B310 - 127.0.0.1
                first = resp.read1(4096)
                started.release()
                bodies[n] = first + resp.read()
        except Exception as exc:  # noqa: BLE001 - a killed replica cuts the stream
            bodies[n] = repr(exc).encode()
            started.release()

    threads = [threading.Thread(target=read, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for _ in range(count):
        assert started.acquire(timeout=30)
    return threads, bodies


def test_sigterm_lets_streams_in_flight_finish_and_refuses_new_work(replicas):
    r, upstream, _ = replicas
    assert call(r, 1, "bob", "PUT", "api/credentials/OPENAI_API_KEY", {"value": PERSONAL}).status == 201
    upstream.chunk_interval, upstream.n_chunks = 0.15, 12
    try:
        threads, bodies = start_streams(r, 1, "bob", 3)
        r.signal(1, signal.SIGTERM)
        time.sleep(0.3)
        try:  # the listening socket is closed: new connections are refused (the Service sends them elsewhere)
            status = call(r, 1, "bob", "POST", "proxy/openai/v1/chat/completions", CHAT, timeout=5).status
        except OSError:
            status = None
        assert status in (None, 503)
        for t in threads:
            t.join(60)
        assert all(b"data: [DONE]" in body for body in bodies), bodies
        assert r.wait(1, 30) == 0
    finally:
        upstream.chunk_interval, upstream.n_chunks = 0.0, 3
        if r.procs[1].poll() is not None:
            r.start_replica(1)


def test_sigkill_of_a_replica_mid_stream_loses_no_acknowledged_usage_record(replicas):
    r, upstream, db_url = replicas
    assert call(r, 2, "frank", "PUT", "api/credentials/OPENAI_API_KEY", {"value": PERSONAL}).status == 201
    done = [call(r, n % 3, "frank", "POST", "proxy/openai/v1/chat/completions", CHAT).status for n in range(5)]
    assert done == [200] * 5
    upstream.chunk_interval, upstream.n_chunks = 0.3, 20
    try:
        threads, bodies = start_streams(r, 2, "frank", 3)  # admitted: their first bytes arrived
        r.signal(2, signal.SIGKILL)
        r.wait(2, 10)
        for t in threads:
            t.join(30)
        assert not any(b"data: [DONE]" in body for body in bodies)  # really cut mid-stream
    finally:
        upstream.chunk_interval, upstream.n_chunks = 0.0, 3
    counted = db_scalar(db_url, "SELECT sum(requests) FROM keyvault_hub_usage WHERE username='frank'")
    assert counted == 5 + 3  # every acknowledged request, the cut streams included
    assert db_scalar(db_url, "SELECT requests FROM keyvault_hub_counters WHERE kind='user' AND subject='frank'") == 8
    r.start_replica(2)
    assert call(r, 2, "frank", "POST", "proxy/openai/v1/chat/completions", CHAT).status == 200


def test_a_postgresql_restart_under_load_gives_clear_503s_then_recovers_with_counters_intact(replicas, cluster):
    if not cluster.can_crash:
        pytest.skip("the PostgreSQL server is not ours to restart")
    r, _, db_url = replicas
    assert call(r, 0, "carol", "PUT", "api/credentials/OPENAI_API_KEY", {"value": PERSONAL}).status == 201
    assert call(r, 0, "carol", "PUT", "api/admin/limits/user/carol", {"rate_per_minute": 100000}).status == 200
    before = db_scalar(db_url, "SELECT requests FROM keyvault_hub_counters WHERE kind='user' AND subject='carol'") or 0
    statuses: list[int] = []
    unavailable: list[str] = []
    stop = threading.Event()

    def load(i):
        while not stop.is_set():
            res = call(r, i, "carol", "POST", "proxy/openai/v1/chat/completions", CHAT, timeout=60)
            statuses.append(res.status)
            if res.status == 503:
                unavailable.append(res.text)
            time.sleep(0.02)

    workers = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(1)
        cluster.kill_server()
        deadline = time.monotonic() + 30
        while not unavailable and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert http("GET", r.url(0) + "health/ready").status == 503
        cluster.restart_after_crash()
        recovered_from = len(statuses)
        deadline = time.monotonic() + 30
        while 200 not in statuses[recovered_from:] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    clear = ("keyvault database is unavailable, retry shortly", "vault database is busy or unreachable")
    assert unavailable and all(any(c in text for c in clear) for text in unavailable), set(unavailable)
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    assert statuses[-1] == 200 and 200 in statuses[recovered_from:]
    for i in range(3):  # every replica recovered by itself
        assert call(r, i, "carol", "POST", "proxy/openai/v1/chat/completions", CHAT).status == 200
        assert http("GET", r.url(i) + "health/ready").status == 200
    counter = db_scalar(db_url, "SELECT requests FROM keyvault_hub_counters WHERE kind='user' AND subject='carol'")
    usage = db_scalar(db_url, "SELECT sum(requests) FROM keyvault_hub_usage WHERE username='carol'")
    ok = statuses.count(200) + 3
    # A 503 may come from a COMMIT whose answer was lost in the crash: counted, not acknowledged.
    assert ok <= counter - before <= ok + statuses.count(503)
    assert counter == usage  # the counter and the usage rows moved together


def test_a_replica_started_against_a_newer_schema_refuses_with_a_clear_message(cluster, tmp_path):
    import base64
    import os

    from jupyter_keyvault.hub.db import SCHEMA_VERSION, HubStore

    db_url = cluster.create_database()
    try:
        HubStore(db_url).close()
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE keyvault_hub_schema SET version = :v"), {"v": SCHEMA_VERSION + 1})
        engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "JUPYTERHUB_"))}
        env.update({"KEYVAULT_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                    "KEYVAULT_HUB_DB_URL": db_url, "HOME": str(tmp_path)})
        proc = subprocess.run([sys.executable, "-m", "jupyter_keyvault.hub"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert (f"schema version {SCHEMA_VERSION + 1}, newer than this version of jupyter-keyvault understands "
                f"({SCHEMA_VERSION}): this replica refuses to start") in proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr
        assert db_scalar(db_url, "SELECT version FROM keyvault_hub_schema") == SCHEMA_VERSION + 1
    finally:
        cluster.drop_database(db_url)
