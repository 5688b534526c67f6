"""Cost of authenticating one proxy request: vault access token vs kernel credential.

Both are measured in-process in the same run (no HTTP): `TokenStore.verify` (SQLite lookup by
id, AES-GCM open of the stored hash, SHA-256, compare_digest, expiry/scope checks) against
`KernelAuthenticator.verify` (HMAC-SHA256 and a replay-set insert). Also the time for a
refused token, which must be of the same order as an accepted one.

    python benchmarks/bench_tokens.py [--n 5000] [--tokens 100]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from jupyter_keyvault.kernel_auth import KernelAuthenticator, make_credential
from jupyter_keyvault.store import SQLiteBackend, Vault
from jupyter_keyvault.store.tokens import TokenRefused, TokenStore


def per_call_us(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--tokens", type=int, default=100, help="tokens stored besides the one used")
    args = parser.parse_args()
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault(SQLiteBackend(Path(tmp) / "v.db"), env={"KEYVAULT_MASTER_KEY": key})
        tokens = TokenStore(vault)
        for i in range(args.tokens):
            tokens.create("bench", f"t{i}", ["OPENAI_API_KEY"], 86400)
        good, _ = tokens.create("bench", "used", ["OPENAI_API_KEY"], 86400)
        bad = good[:-8] + "00000000"
        unknown = "kvt1_" + secrets.token_hex(16) + "_" + secrets.token_hex(32)

        def refused(token):
            def call():
                try:
                    tokens.verify("bench", token, "OPENAI_API_KEY")
                except TokenRefused:
                    return
                raise AssertionError("accepted")
            return call

        session_key = os.urandom(32)
        kernel = KernelAuthenticator(lambda kid: session_key if kid == "k1" else None)

        def kernel_call():
            kernel.verify(make_credential("k1", session_key, int(time.time()), secrets.token_hex(16)))

        rounds = {name: [] for name in ("token ok", "token wrong secret", "token unknown id", "kernel kvk1")}
        for _ in range(3):
            rounds["token ok"].append(per_call_us(lambda: tokens.verify("bench", good, "OPENAI_API_KEY"), args.n))
            rounds["token wrong secret"].append(per_call_us(refused(bad), args.n))
            rounds["token unknown id"].append(per_call_us(refused(unknown), args.n))
            rounds["kernel kvk1"].append(per_call_us(kernel_call, args.n))
        vault.close()
    base = statistics.median(rounds["kernel kvk1"])
    print(f"{args.n} verifications x 3 rounds, {args.tokens + 1} tokens stored (median µs per call)")
    for name, values in rounds.items():
        med = statistics.median(values)
        print(f"  {name:20s} {med:8.1f} µs   x{med / base:5.1f} vs kernel credential")


if __name__ == "__main__":
    main()
