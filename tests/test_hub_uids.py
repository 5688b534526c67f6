"""A real JupyterHub whose users are system users: LocalProcessSpawner runs each server (and
its kernels) under the user's own uid, as production spawners do, beside the keyvault service.

From alice's kernel, notebook code tries every way to bob's personal key, bob's per-user master
key, the hub secret, the service's master key and a shared key: other users' files, every
process's environment and memory under /proc, the service's database, and direct mode. A control
runs the same scan as root (which can read everything) and finds them, so the scan can fail.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from jupyter_keyvault.hub.peruser import derive_user_key, generate_secret, parse_hub_secret
from jupyter_keyvault.store.crypto import encode_master_key
from jupyter_keyvault.testing.fake_upstream import FakeUpstream
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
        yield {"hub": hub, "service_dir": service_dir, "needles": {
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
