"""A real JupyterHub whose users are system users: LocalProcessSpawner runs each server (and
its kernels) under the user's own uid, as production spawners do, beside the keyvault service.

From alice's kernel, notebook code tries every way to bob's personal key, bob's per-user master
key, the hub secret, the service's master key and a shared key: other users' files, every
process's environment and memory under /proc, the service's database, and direct mode. A control
runs the same scan as root (which can read everything) and finds them, so the scan can fail.

Users of one host share its loopback interface: alice's kernel also calls every port listening on
127.0.0.1 (bob's loopback lane and his server's own port among them) as bob's provider proxy, with
every credential she has; bob's own kernel, through the same lane, is the control.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

import pytest

from jupyter_keyvault.hub.peruser import derive_user_key, generate_secret, parse_hub_secret
from jupyter_keyvault.store.crypto import encode_master_key
from jupyter_keyvault.testing.fake_upstream import REPLY_TEXT, FakeUpstream
from jupyter_keyvault.testing.hub import UID_VENV_PYTHON, JupyterHubHarness, http, missing_requirements
from jupyter_keyvault.testing.live_server import free_port

pytestmark = [pytest.mark.hub, pytest.mark.e2e,
              pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates system users (useradd)"),
              pytest.mark.skipif(not os.access(UID_VENV_PYTHON, os.X_OK),
                                 reason="no environment for other uids: bash scripts/install-uid-venv.sh")]

SERVICE = "keyvault"
SUFFIX = secrets.token_hex(3)
ALICE, BOB, ADMIN = f"kva{SUFFIX}", f"kvb{SUFFIX}", f"kvadmin{SUFFIX}"
SHARED_CANARY = "sk-proj-UIDSHARED" + secrets.token_hex(20)
BOB_KEY = "sk-proj-UIDBOB" + secrets.token_hex(20)
ALICE_KEY = "sk-proj-UIDALICE" + secrets.token_hex(20)

# Search every readable file under the given roots and every process's environ and memory for
# the given byte strings; print the names of those found (never a value) and what was refused.
SCAN = r'''
import glob, json, os, re
def scan(needles, roots, max_region=1 << 26):
    found, refused, me = set(), 0, os.getpid()
    def look(data):
        for name, value in needles.items():
            if value in data:
                found.add(name)
    for root in roots:
        for path in glob.glob(root + "/**", recursive=True):
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        look(f.read(1 << 24))
            except OSError:
                refused += 1
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"python" not in f.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                look(f.read())
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
                for line in maps:
                    m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
                    if m and int(m.group(2), 16) - int(m.group(1), 16) <= max_region:
                        try:
                            mem.seek(int(m.group(1), 16))
                            look(mem.read(int(m.group(2), 16) - int(m.group(1), 16)))
                        except (OSError, ValueError, OverflowError):
                            pass
        except OSError:
            refused += 1
    return sorted(found), refused
'''


# Notebook code for alice's kernel: every port listening on 127.0.0.1 (she reads them in
# /proc/net/tcp), called as bob's provider proxy and as her own, with each credential she has.
# Answers come back hex-encoded: alice's server scrubs key-shaped text from outputs, which would
# hide a leaked key from the test.
LANE_ATTACK = r"""
import http.client, json, os, re, socket
from urllib.parse import urlsplit
import keyvault, openai
from jupyter_keyvault.kernel.identity import KernelIdentity, make_credential

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

def listening():
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if address == "0100007F" and state == "0A":  # 127.0.0.1, LISTEN
                ports.add(int(port, 16))
    return sorted(ports)

def speaks_http(port):
    # Kernels' ZeroMQ ports greet first, and not in HTTP: they are known at once, not after a timeout.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port)
            head = b""
            while len(head) < 5 and (chunk := s.recv(5 - len(head))):
                head += chunk
            return head == b"HTTP/"
    except OSError:
        return False

def post(port, path, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(CHAT), {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read(1 << 16)
    except (OSError, http.client.HTTPException) as exc:
        return None, type(exc).__name__.encode()
    finally:
        conn.close()

def through_client(port, prefix):
    # alice's own keyvault.openai() client, which signs each request as her kernel, sent elsewhere.
    other = client.with_options(base_url=f"http://127.0.0.1:{port}{prefix}v1", max_retries=0, timeout=10)
    try:
        raw = other.chat.completions.with_raw_response.create(**CHAT)
        return raw.status_code, raw.http_response.content
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.content
    except openai.APIConnectionError as exc:
        return None, type(exc).__name__.encode()

def other_kernels(mine):
    # Every kernel's id is in its command line (its connection file's name), which anyone can read.
    ids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ids.update(m.decode() for m in re.findall(rb"kernel-([A-Za-z0-9_-]+)\.json", f.read()))
        except OSError:
            pass
    return sorted(ids - {mine})

client = keyvault.openai()
me = client._client.auth._identity
own = client.chat.completions.create(**CHAT)
print("OWN", os.environ["KEYVAULT_PROXY_URL"], client.base_url, own.choices[0].message.content)
# One request signed by alice's kernel, served once on her own lane, then replayed everywhere.
signed = client._client.auth.headers()
lane = urlsplit(os.environ["KEYVAULT_PROXY_URL"])
print("FIRST USE", post(lane.port, lane.path + "keyvault/proxy/openai/v1/chat/completions", signed)[0])
others = other_kernels(me.kernel_id)
print("OTHER KERNELS", json.dumps(others))

results = []
with keyvault.env("OPENAI_API_KEY"):  # a vault token bound to this kernel, in OPENAI_API_KEY
    bearer = lambda token: {"Authorization": f"Bearer {token}"}
    attempts = {
        "no credential": dict,
        "replayed kvk1": lambda: signed,
        "kvt1 from the REST API": lambda: bearer(REST_TOKEN),
        "kvt1 from keyvault.env": lambda token=os.environ["OPENAI_API_KEY"]: bearer(token),
        **{f"kvk1 signed for kernel {kid}": (lambda kid=kid: bearer(
            make_credential(KernelIdentity(me.server_url, kid, me.session_key)))) for kid in others},
    }
    for port in listening():
        if not speaks_http(port):
            results.append({"port": port, "http": False})
            continue
        for target, user in (("bob", BOB), ("alice", ALICE)):
            prefix = f"/user/{user}/keyvault/proxy/openai/"
            for kind, headers in attempts.items():
                status, body = post(port, prefix + "v1/chat/completions", headers())
                results.append({"port": port, "http": True, "target": target, "kind": kind, "status": status,
                                "body": body.hex()})
            status, body = through_client(port, prefix)
            results.append({"port": port, "http": True, "target": target, "kind": "alice's keyvault.openai()",
                            "status": status, "body": body.hex()})
print("RESULTS", json.dumps(results))
"""


def lane_attack_code(rest_token: str) -> str:
    return f"BOB, ALICE, REST_TOKEN = {BOB!r}, {ALICE!r}, {rest_token!r}\n" + LANE_ATTACK


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from jupyter_keyvault.hub.config import keyvault_service_config

    for user in (ALICE, BOB):
        JupyterHubHarness.add_system_user(user)
    secret = generate_secret()
    upstream = FakeUpstream(valid_keys=(ALICE_KEY, BOB_KEY, SHARED_CANARY)).start()
    service_dir = tmp_path_factory.mktemp("kv-service")
    service_dir.chmod(0o700)
    service_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    (service_dir / "master.key").write_text(service_key)
    (service_dir / "master.key").chmod(0o600)
    service, roles, user_env = keyvault_service_config(
        port=free_port(), master_key_file=str(service_dir / "master.key"), name=SERVICE, data_dir=str(service_dir),
        extra_args=[f"--KeyVaultHubService.provider_base_urls=openai={upstream.openai_base_url}"])
    hub = JupyterHubHarness(
        system_users=True, services=[service], load_roles=roles, admin_users=[ADMIN],
        hub_env={"KEYVAULT_HUB_SECRET": secret},
        extra_config="""
            from jupyter_keyvault.peruser import configure_per_user_keys
            configure_per_user_keys(c)
        """,
        singleuser_config=f"c.KeyVault.provider_base_urls = {{'openai': {upstream.openai_base_url!r}}}")
    try:
        hub.start()
        for user, key in ((ALICE, ALICE_KEY), (BOB, BOB_KEY)):
            hub.create_user(user)
            hub.start_server(user)
            resp = hub.user_api(user, "PUT", "keyvault/api/credentials/OPENAI_API_KEY",
                                {"value": key, "provider": "openai"})
            assert resp.status == 201, resp.text
        shared = http("PUT", hub.service_url(SERVICE) + "api/admin/shared/CLASS_KEY", token=hub.user_token(ADMIN),
                      body={"value": SHARED_CANARY, "provider": "openai"})
        assert shared.status == 201, shared.text
        raw = parse_hub_secret(secret)
        yield {"hub": hub, "upstream": upstream, "service_dir": service_dir, "needles": {
            "bob's personal key": BOB_KEY,
            "bob's per-user master key": encode_master_key(derive_user_key(raw, BOB)),
            "the hub secret": secret,
            "the service's master key": service_key,
            "the shared key": SHARED_CANARY,
        }}
    finally:
        hub.stop()
        upstream.stop()
        for user in (ALICE, BOB):
            JupyterHubHarness.remove_system_user(user)


def scan_code(world) -> str:
    needles = {name: value.encode() for name, value in world["needles"].items()}
    roots = [str(world["hub"].user_dir(BOB)), str(world["service_dir"]), str(world["hub"].root)]
    return SCAN + f"\nfound, refused = scan({needles!r}, {roots!r})\nprint('FOUND', json.dumps(found), 'REFUSED', refused)\n"


def test_given_users_in_their_own_uids_then_servers_run_as_them(world):
    hub = world["hub"]
    for user in (ALICE, BOB):
        owners = {p.stat().st_uid for p in hub.user_dir(user).rglob("vault.db")}
        import pwd

        assert owners == {pwd.getpwnam(user).pw_uid}, user


async def test_given_alices_kernel_when_it_hunts_for_other_secrets_then_it_finds_none(world):
    hub = world["hub"]
    kernel = await hub.start_kernel(ALICE, path="hunt.ipynb")
    try:
        result = await kernel.execute(scan_code(world), timeout=300)
    finally:
        await kernel.stop()
    text = result.text
    print("ALICE SCAN:", text.strip()[-300:])
    assert "FOUND []" in text, text[-3000:]
    refused = int(text.rsplit("REFUSED", 1)[1].split()[0])
    assert refused > 0, text  # other users' and root's files and processes were there, and refused
    for value in world["needles"].values():
        assert value not in text


async def test_given_alices_kernel_then_direct_mode_and_the_service_give_no_other_value(world):
    hub = world["hub"]
    kernel = await hub.start_kernel(ALICE, path="direct.ipynb")
    try:
        code = textwrap.dedent("""
            import keyvault, os
            for name in ("OPENAI_API_KEY", "CLASS_KEY"):
                try:
                    print(name, "LEN", len(keyvault.get(name).reveal()))
                except keyvault.KeyVaultError as exc:
                    print(name, "REFUSED", type(exc).__name__)
            print("HUB TOKEN IN ENV", any("JUPYTERHUB_API_TOKEN" in k for k in os.environ))
        """)
        text = (await kernel.execute(code, timeout=120)).text
    finally:
        await kernel.stop()
    # Direct mode is off where kernels are isolated (the default), and the kernel holds no hub token.
    assert "OPENAI_API_KEY REFUSED" in text and "CLASS_KEY REFUSED" in text, text
    assert "HUB TOKEN IN ENV False" in text
    # With alice's own hub token (what her browser has), the service shows the shared key's presence only.
    token = hub.user_token(ALICE)
    listing = http("GET", hub.service_url(SERVICE) + "api/credentials", token=token)
    value = http("GET", hub.service_url(SERVICE) + "api/credentials/CLASS_KEY/value", token=token)
    admin = http("GET", hub.service_url(SERVICE) + "api/admin/shared", token=token)
    assert listing.status == 200 and value.status == 404 and admin.status == 403
    for resp in (listing, value, admin):
        for secret in world["needles"].values():
            assert secret not in resp.text


def test_control_given_root_when_it_runs_the_same_scan_then_it_finds_every_secret(world):
    """The scan can find what it looks for: root, outside every boundary, does."""
    proc = subprocess.run([sys.executable, "-c", scan_code(world)], capture_output=True, text=True, timeout=600)
    print("ROOT SCAN:", proc.stdout.strip()[-300:])
    found = json.loads(proc.stdout.split("FOUND ", 1)[1].split(" REFUSED")[0])
    # Bob's key and the shared key sit in memory of bob's server and the service; the hub secret and
    # the keys are in the hub's and the service's config and key files.
    assert {"bob's personal key", "the shared key", "the service's master key"} <= set(found), proc.stdout


def is_2xx(status) -> bool:
    return status is not None and 200 <= status < 300


async def test_given_alices_kernel_when_it_calls_every_loopback_port_as_bobs_proxy_then_none_serves_it(world):
    hub, upstream = world["hub"], world["upstream"]
    created = hub.user_api(ALICE, "POST", "keyvault/api/tokens",
                           {"name": "lane-attack", "credentials": ["OPENAI_API_KEY"], "expires_in_days": 1})
    assert created.status == 201, created.text
    # bob's kernel runs meanwhile: his lane has a kernel to serve, whose id alice can see.
    bob = await hub.start_kernel(BOB, path="lane-bob.ipynb")
    alice = await hub.start_kernel(ALICE, path="lane-attack.ipynb")
    try:
        bobs_lane = (await bob.execute("import os; print('LANE', os.environ['KEYVAULT_PROXY_URL'])")).text
        bobs_lane = bobs_lane.split("LANE ", 1)[1].split()[0]
        seen = len(upstream.requests)
        result = await alice.execute(lane_attack_code(created.json()["token"]), timeout=600)
        reached = upstream.requests[seen:]
    finally:
        await alice.stop()
        await bob.stop()
    text = result.text
    assert result.error is None and "RESULTS " in text, text[-3000:]
    results = json.loads(text.split("RESULTS ", 1)[1].splitlines()[0])
    answers = [r for r in results if r["http"]]
    own_lane, own_base, reply = text.split("OWN ", 1)[1].splitlines()[0].split(" ", 2)
    bob_port, alice_port = urlsplit(bobs_lane).port, urlsplit(own_lane).port
    print("ALICE TRIED (port, speaks HTTP):", sorted({(r["port"], r["http"]) for r in results}))

    # Found by alice herself, reachable from her uid, and refused for want of bob's credential (past the
    # lane's Host and path checks, which would answer 403 and 404).
    assert bob_port in {r["port"] for r in results}, (bobs_lane, results)
    on_bobs_lane = [r for r in answers if r["port"] == bob_port and r["target"] == "bob"]
    assert {r["status"] for r in on_bobs_lane if r["kind"] == "no credential"} == {401}, on_bobs_lane
    assert {r["status"] for r in on_bobs_lane} <= {401, 429}, on_bobs_lane  # 429: her token, refused too often
    assert f"kvk1 signed for kernel {bob.kernel_id}" in {r["kind"] for r in on_bobs_lane}
    # bob's server's own port answered as his proxy too, beside his lane and the hub's proxy in front of it.
    refused_as_bob = {r["port"] for r in answers if r["target"] == "bob" and r["status"] == 401}
    assert {bob_port, hub.port} < refused_as_bob, refused_as_bob

    # Nothing anywhere served bob's proxy to alice, nor a replayed signature to anyone.
    served = [(r["port"], r["kind"], r["status"]) for r in answers
              if is_2xx(r["status"]) and (r["target"] == "bob" or r["kind"] == "replayed kvk1")]
    assert served == []
    for r in answers:
        body = bytes.fromhex(r["body"])
        assert BOB_KEY.encode() not in body and SHARED_CANARY.encode() not in body, (r["port"], r["kind"])
    keys = [key for request in reached for key in request.api_keys]
    assert BOB_KEY not in keys and SHARED_CANARY not in keys
    for request in reached:
        blob = json.dumps(request.headers).encode() + request.body
        assert BOB_KEY.encode() not in blob and SHARED_CANARY.encode() not in blob

    # The same calls work where alice's credentials belong (so the refusals above are bob's lane's doing,
    # and the upstream's record of this window would show a key that got through).
    assert own_base.startswith(own_lane) and reply == REPLY_TEXT, text[:2000]
    assert "FIRST USE 200" in text
    on_own_lane = {r["kind"]: r["status"] for r in answers if r["port"] == alice_port and r["target"] == "alice"}
    assert on_own_lane["alice's keyvault.openai()"] == 200 and on_own_lane["replayed kvk1"] == 401, on_own_lane
    assert on_own_lane["kvt1 from the REST API"] == on_own_lane["kvt1 from keyvault.env"] == 200, on_own_lane
    assert ALICE_KEY in keys


async def test_control_given_bobs_own_kernel_when_it_calls_through_his_lane_then_the_upstream_gets_his_key(world):
    hub, upstream = world["hub"], world["upstream"]
    kernel = await hub.start_kernel(BOB, path="lane-control.ipynb")
    try:
        seen = len(upstream.requests)
        result = await kernel.execute(textwrap.dedent("""
            import os, keyvault
            client = keyvault.openai()
            print("LANE", os.environ["KEYVAULT_PROXY_URL"], client.base_url)
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            print("REPLY", reply.choices[0].message.content)
        """), timeout=120)
        reached = upstream.requests[seen:]
    finally:
        await kernel.stop()
    lane, base = result.text.split("LANE ", 1)[1].split()[:2]
    assert urlsplit(lane).hostname == "127.0.0.1" and base.startswith(lane), result.text
    assert f"REPLY {REPLY_TEXT}" in result.text
    assert [key for request in reached for key in request.api_keys] == [BOB_KEY]
