"""The use log (server/uses.py): counts kept in memory, written in one batch, kept for the next when a
write fails, and failed token attempts written as one row however many there were."""

from __future__ import annotations

from jupyter_keyvault.server.uses import MAX_REFUSAL_SAMPLES, Refusals, UseLog
from jupyter_keyvault.store import VaultError


class Writer:
    def __init__(self, failures: int):
        self.failures = failures
        self.batches: list[tuple[dict, set, Refusals]] = []

    def __call__(self, credentials, tokens, refusals) -> None:
        if self.failures:
            self.failures -= 1
            raise VaultError("database is locked")
        self.batches.append((credentials, tokens, refusals))


async def test_a_batch_that_cannot_be_written_is_kept_whole_for_the_next_one():
    writer = Writer(failures=1)
    log = UseLog(writer, interval=3600)
    log.credential("OPENAI_API_KEY", "kernel-1")
    log.token("t1")
    for i in range(3):
        log.refusal("OPENAI_API_KEY", f"token:{i}")
    await log.flush()  # fails: kept
    assert writer.batches == [] and log.pending == 1 + 1 + 3
    log.credential("OPENAI_API_KEY", "kernel-1")
    for i in range(3, 10):
        log.refusal("ANTHROPIC_API_KEY", f"token:{i}")
    await log.close()
    [(credentials, tokens, refusals)] = writer.batches
    assert credentials == {("OPENAI_API_KEY", "kernel-1"): 2} and tokens == {"t1"}
    assert refusals.count == 10 and refusals.credential is None  # two credentials were named
    assert refusals.samples == [("OPENAI_API_KEY", "token:0"), ("OPENAI_API_KEY", "token:1"),
                                ("OPENAI_API_KEY", "token:2"), ("ANTHROPIC_API_KEY", "token:3"),
                                ("ANTHROPIC_API_KEY", "token:4")]
    assert log.pending == 0


def test_refusals_name_their_one_credential_and_keep_a_bounded_sample():
    refusals = Refusals()
    for i in range(1000):
        refusals.add("OPENAI_API_KEY", f"address:{'x' * 200}{i}")
    assert refusals.count == 1000 and refusals.credential == "OPENAI_API_KEY"
    assert len(refusals.samples) == MAX_REFUSAL_SAMPLES and all(len(c) <= 80 for _, c in refusals.samples)
    assert refusals.detail.startswith("1000 failed attempt(s); first: OPENAI_API_KEY from address:xxx")


def test_a_credential_name_from_the_callers_header_is_bounded_before_it_reaches_the_audit_log():
    refusals = Refusals()
    refusals.add("N" * 8000, "token:abc")  # not checked before the token is: any header value
    assert refusals.credential == "N" * 64 and refusals.samples == [("N" * 64, "token:abc")]
