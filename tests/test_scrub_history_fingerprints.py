"""A pasted value with no provider pattern, that the kernel never fetched, kept out of IPython's
history.sqlite by fingerprints: the server's keyed hashes of its chunks, never the value."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from jupyter_keyvault.scrub import (
    FingerprintMatcher,
    fingerprint_width,
    history_fingerprints,
    new_fingerprint_salt,
)


def test_given_fingerprints_then_they_hold_no_value_no_overlapping_chunks_and_enough_bits_per_chunk():
    value = secrets.token_hex(20)
    salt = new_fingerprint_salt()
    doc = history_fingerprints([(value, "PASTED"), ("short123", "TOO_SHORT")], salt)
    text = json.dumps(doc)
    assert value not in text and all(value[i:i + 8] not in text for i in range(0, 32, 8))
    assert doc["skipped"] == 1
    width = fingerprint_width(value)
    assert width >= 16  # hex: at most 4 bits a character, at least 64 bits a chunk
    assert [entry[2] for entry in doc["chunks"]] == [0, width]  # consecutive, not overlapping
    assert fingerprint_width("tok" + "0123456789abcdef" * 3) == 16  # 19 distinct characters: still 16
    assert fingerprint_width(secrets.token_urlsafe(30)) >= 11
    assert fingerprint_width("ab" * 40) is None  # 1 bit a character: 64 characters a chunk, too short
    other = history_fingerprints([(value, "PASTED")], new_fingerprint_salt())
    assert {e[0] for e in other["chunks"]}.isdisjoint({e[0] for e in doc["chunks"]})  # per-kernel salt


def test_given_fingerprints_when_text_holds_the_value_anywhere_then_the_whole_value_is_redacted():
    value = "Xq7" + secrets.token_urlsafe(30)
    matcher = FingerprintMatcher(history_fingerprints([(value, "PASTED")], new_fingerprint_salt()))
    for text in (value, f"key = '{value}'\nprint(key)", f"{value[:-3]}", f"a{value}b {value}"):
        out = matcher.scrub(text)
        assert value[:11] not in out and value[11:22] not in out
    assert matcher.scrub("ordinary text " * 20) == "ordinary text " * 20
    with pytest.raises(ValueError):
        FingerprintMatcher({"version": 99})


def test_given_a_real_ipython_shell_when_a_never_fetched_value_is_pasted_then_history_sqlite_never_holds_it(tmp_path):
    value = "tok" + secrets.token_hex(24)  # no provider prefix, never given to the kernel
    doc = history_fingerprints([(value, "PASTED")], new_fingerprint_salt())
    script = textwrap.dedent("""
        import json, sys
        from IPython.core.interactiveshell import InteractiveShell
        from jupyter_keyvault.kernel import history
        ip = InteractiveShell.instance()
        assert history.install(ip)
        print("CHUNKS", history.set_fingerprints(ip, json.loads(sys.argv[1])))
        ip.history_manager.db_log_output = True
        ip.run_cell(sys.argv[2], store_history=True)
        ip.run_cell("x", store_history=True)
        ip.history_manager.writeout_cache()
        print("IN", json.dumps(list(ip.user_ns["In"])))
        print("FILE", ip.history_manager.hist_file)
    """)
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(doc), f"x = {value!r}"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CHUNKS 3" in out.stdout
    inputs = out.stdout.split("IN ", 1)[1].split("\n", 1)[0]  # In[] (what %history shows)
    assert value not in inputs and "[REDACTED:PASTED]" in inputs
    hist = tmp_path / "ipython" / "profile_default" / "history.sqlite"
    assert hist.is_file()
    for path in [hist, *hist.parent.glob("history.sqlite-*")]:
        assert value.encode() not in path.read_bytes()
        assert value[3:19].encode() not in path.read_bytes()


async def test_given_a_stored_opaque_value_never_fetched_when_pasted_in_a_real_kernel_then_history_never_holds_it(
        jp_fetch, server_kernel):
    """Through a real server: the kernel's helper loads the server's fingerprints at start, so a stored
    value with no provider pattern, which this kernel never fetched, is redacted from history.sqlite.
    A value the server does not store is the control: history keeps it (the check can fail)."""
    import json
    import secrets
    import sqlite3
    from pathlib import Path

    stored, unknown = secrets.token_hex(20), secrets.token_hex(20)  # 40 hex: no provider pattern matches
    await jp_fetch("keyvault", "api", "credentials", "DB_TOKEN", method="PUT",
                   body=json.dumps({"value": stored, "type": "custom"}))
    kernel = await server_kernel("paste.ipynb")
    pasted = await kernel.execute(f"a = {stored!r}\nb = {unknown!r}\nlen(a) + len(b)")
    assert pasted.error is None, pasted.text
    check = await kernel.execute("hm = get_ipython().history_manager\nhm.writeout_cache()\nprint('HIST', hm.hist_file)")
    hist_file = Path(check.stdout.split("HIST ", 1)[1].split("\n", 1)[0])
    with sqlite3.connect(hist_file) as db:
        sources = "\n".join(raw for (raw,) in db.execute("SELECT source_raw FROM history"))
    assert unknown in sources  # control: history keeps what the server does not store
    assert stored not in sources and "[REDACTED" in sources
    for path in [hist_file, *hist_file.parent.glob(hist_file.name + "-*")]:
        assert stored.encode() not in path.read_bytes()
