"""The redaction engine: provider patterns, known values, merging, streaming, log filters.

Every key below is fake and generated here (shaped like the real formats, never real).
Tests that involve known values run on both engines: Aho–Corasick (ahocorasick-rs) and the
regex fallback used when the extension is not importable.
"""

from __future__ import annotations

import json
import logging
import random
import re
import string
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_keyvault import scrub
from jupyter_keyvault.scrub import (
    GENERIC_MARKER,
    RedactingFilter,
    Scrubber,
    SecretPattern,
    install_log_filter,
)

CORPUS = Path(__file__).parent / "fixtures" / "false_positive_corpus"
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "_-"
HEX = "0123456789abcdef"


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def mixed(rng: random.Random, alphabet: str, n: int) -> str:
    """Random text with each class of the alphabet (upper, lower, digit) present, as real keys have."""
    checks = [f for f in (str.isupper, str.islower, str.isdigit) if any(f(c) for c in alphabet)]
    while True:
        s = rand(rng, alphabet, n)
        if all(any(f(c) for c in s) for f in checks):
            return s


# -- fake keys in every supported format: family -> list of generators
FAMILIES = {
    "openai": [
        lambda r: "sk-" + mixed(r, ALNUM, 48),  # legacy, 51 characters
        lambda r: "sk-" + mixed(r, ALNUM, 20) + "T3BlbkFJ" + mixed(r, ALNUM, 20),  # legacy with the marker
        lambda r: "sk-proj-" + mixed(r, B64URL, 74) + "T3BlbkFJ" + mixed(r, B64URL, 74),
        lambda r: "sk-svcacct-" + mixed(r, B64URL, 74) + "T3BlbkFJ" + mixed(r, B64URL, 74),
        lambda r: "sk-admin-" + mixed(r, B64URL, 74) + "T3BlbkFJ" + mixed(r, B64URL, 74),
        lambda r: "sk-proj-" + mixed(r, ALNUM, 48),  # older project key
        lambda r: "sk-" + rand(r, HEX, 32),  # OpenAI-compatible providers (e.g. DeepSeek)
    ],
    "anthropic": [
        lambda r: "sk-ant-api03-" + mixed(r, B64URL, 93) + "AA",
        lambda r: "sk-ant-admin01-" + mixed(r, B64URL, 93) + "AA",
    ],
    "groq": [lambda r: "gsk_" + mixed(r, ALNUM, 52)],
    "openrouter": [lambda r: "sk-or-v1-" + rand(r, HEX, 64)],
    "huggingface": [lambda r: "hf_" + mixed(r, string.ascii_letters, 34)],
    "github": [
        *(lambda r, p=p: p + mixed(r, ALNUM, 36) for p in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
        lambda r: "github_pat_" + mixed(r, ALNUM, 22) + "_" + mixed(r, ALNUM, 59),
    ],
    "aws": [
        lambda r: "AKIA" + rand(r, string.ascii_uppercase + "234567", 16),
        lambda r: "ASIA" + rand(r, string.ascii_uppercase + "234567", 16),
        lambda r: "AKIAIOSFODNN7EXAMPLE",  # AWS's documented example id
    ],
    "google": [lambda r: "AIza" + mixed(r, B64URL, 35)],
    "slack": [
        lambda r: f"xoxb-{rand(r, string.digits, 12)}-{rand(r, string.digits, 13)}-{mixed(r, ALNUM, 24)}",
        lambda r: f"xoxp-{rand(r, string.digits, 12)}-{rand(r, string.digits, 12)}-{rand(r, string.digits, 13)}-{rand(r, HEX, 32)}",
        lambda r: f"xoxa-2-{rand(r, string.digits, 12)}-{mixed(r, ALNUM, 24)}",
        lambda r: f"xoxr-{rand(r, string.digits, 10)}-{mixed(r, ALNUM, 30)}",
        lambda r: f"xoxs-{rand(r, string.digits, 12)}-{mixed(r, ALNUM, 40)}",
        lambda r: f"xapp-1-A{rand(r, string.ascii_uppercase + string.digits, 10)}-{rand(r, string.digits, 13)}-{rand(r, HEX, 64)}",
    ],
}

# Near misses: ordinary text that starts like a key (or is one too short/long/embedded).
NEAR_MISSES = {
    "openai": ["sklearn", "sk-learn", "sk-learn-pipeline-with-many-words-in-the-name-2024", "task-12345",
               "risk-adjusted", "sk-your-key-here", "sk-...", "sk-proj-XXXX", "sk-" + "a" * 48, "sk-" + "7" * 48,
               "disk-" + "Ab1" * 16, "sk-proj-some-long-project-name-for-the-data-team-2024", "sk-" + "Ab1" * 8],
    "anthropic": ["sk-ant-", "sk-ant-api03-short", "sk-ant-model-configuration-for-the-assistant-team"],
    "groq": ["gsk_", "gsk_short1A", "gsk_" + "a" * 52, "my_gsk_" + "aB3" * 18],
    "openrouter": ["sk-or-v1-", "sk-or-v1-" + "g" * 64, "sk-or-v1-" + "ab12" * 8],
    "huggingface": ["hf_hub_download", "hf_token", "hf_" + "a" * 34, "use_hf_" + "aB" * 17, "hf_transfer"],
    "github": ["ghp_", "ghp_short", "ghp_" + "a" * 36, "github_pat_", "github_pat_example", "ghx_" + "aB1" * 12,
               "my_ghp_" + "aB1" * 12],
    "aws": ["AKIA", "AKIA is the prefix of AWS access key ids", "AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPLE1",
            "XAKIAIOSFODNN7EXAMPLE", "AKIAiosfodnn7example", "ASIA-Pacific", "AGPAIOSFODNN7EXAMPLE"],
    "google": ["AIza", "AIzaShort", "AIza" + "A" * 34, "xAIza" + "aB1" * 12 + "aB", "AIza" + "aB1" * 12 + "aB1"],
    "slack": ["xoxb-your-bot-token", "xoxo-gossip-girl-season-2-episode-12", "xoxb-", "xoxb-123", "xoxz-123456789012-abcdefghijkl",
              "xapp-token"],
}


def new_scrubber(**kw) -> Scrubber:
    return Scrubber(**kw)


def keys_of(family: str, seed: int = 0, n: int = 3) -> list[str]:
    rng = random.Random(f"{family}-{seed}")
    return [gen(rng) for gen in FAMILIES[family] for _ in range(n)]


# -- provider patterns

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_given_a_provider_key_in_ordinary_contexts_when_scrubbing_then_it_is_redacted(family):
    s = Scrubber()
    for key in keys_of(family):
        for template in ("{}", "key={}", "export API_KEY='{}'\n", '{{"api_key": "{}"}}', "Authorization: Bearer {}",
                         "https://example.org/v1?key={}&q=1", "({})", "value: {}.", "\t{}\r\n"):
            text = template.format(key)
            out = s.scrub(text)
            assert key not in out, (family, key, template)
            assert out == template.format(GENERIC_MARKER)
            [(start, end, label)] = s.find(text)
            assert text[start:end] == key and label == family


@pytest.mark.parametrize("family", sorted(NEAR_MISSES))
def test_given_a_near_miss_when_scrubbing_then_it_is_left_alone(family):
    s = Scrubber()
    for text in NEAR_MISSES[family]:
        for template in ("{}", "see {} here", "'{}'"):
            assert s.scrub(template.format(text)) == template.format(text), text
            assert s.find(template.format(text)) == []


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_given_a_key_inside_a_longer_identifier_when_scrubbing_then_the_pattern_does_not_match(family):
    s = Scrubber()
    for key in keys_of(family, n=1):
        for text in ("x" + key, "_" + key, "9" + key, "-" + key, "path_to_" + key):
            assert s.find(text) == [], text
        if family in ("aws", "google", "openrouter"):  # fixed-length formats: no longer token either
            for text in (key + "x", key + "_9", key + "-"):
                assert s.find(text) == [], text


def test_given_keys_side_by_side_when_scrubbing_then_each_gets_its_own_marker():
    s = Scrubber()
    a, b = keys_of("groq", n=1)[0], keys_of("aws", n=1)[0]
    assert s.scrub(f"{a} {b}\n{b},{a}") == "[REDACTED] [REDACTED]\n[REDACTED],[REDACTED]"


def test_given_extra_patterns_when_configured_then_they_redact_too():
    s = Scrubber(extra_patterns=[r"corp-[0-9]{6}-[a-z]{4}", r"[0-9]{3}-secret-[0-9]{3}"])
    assert s.scrub("id corp-123456-abcd ok") == "id [REDACTED] ok"
    assert s.scrub("x 123-secret-456 y") == "x [REDACTED] y"
    assert s.find("corp-123456-abcd")[0][2] == "custom"
    assert s.scrub("xcorp-123456-abcd") == "xcorp-123456-abcd"  # token boundaries apply to custom patterns too
    s2 = Scrubber(extra_patterns=[SecretPattern("internal", r"int_[A-Z]{10}", ("int_",), True)])
    assert s2.find("int_ABCDEFGHIJ")[0][2] == "internal"
    with pytest.raises(re.error):
        Scrubber(extra_patterns=["(unclosed"])


def test_given_no_patterns_when_scrubbing_then_only_known_values_are_redacted(engine):
    s = Scrubber(patterns=())
    key = keys_of("openai", n=1)[0]
    assert s.scrub(key) == key
    s.add_known(key, "K")
    assert s.scrub(key) == "[REDACTED:K]"


# -- known values

def test_given_known_values_when_scrubbing_then_they_are_replaced_by_their_name(engine):
    s = Scrubber()
    s.add_known("opaque-service-token-1234", "SERVICE_TOKEN")
    s.add_known("another opaque value")
    assert s.scrub("a=opaque-service-token-1234;b=another opaque value.") == "a=[REDACTED:SERVICE_TOKEN];b=[REDACTED]."
    assert s.find("xxopaque-service-token-1234xx") == [(2, 27, "SERVICE_TOKEN")]  # anywhere, no boundaries
    assert s.find("another opaque value") == [(0, 20, "known value")]
    assert s.known_count == 2


def test_given_a_known_provider_key_when_scrubbing_then_its_name_beats_the_pattern_label(engine):
    s = Scrubber()
    key = keys_of("openai", n=1)[0]
    s.add_known(key, "OPENAI_API_KEY")
    assert s.scrub(f"key={key}") == "key=[REDACTED:OPENAI_API_KEY]"
    assert s.find(key) == [(0, len(key), "OPENAI_API_KEY")]
    assert s.scrub("x" + key) == "x[REDACTED:OPENAI_API_KEY]"  # known values match inside identifiers too


def test_given_short_or_blank_values_when_added_then_they_are_ignored(engine):
    s = Scrubber()
    for value in ("short", "       ", "   abc   ", "", None, 12345678, b"bytes-value-123"):
        s.add_known(value, "X")  # type: ignore[arg-type]
    assert s.known_count == 0
    assert s.scrub("short abc") == "short abc"


def test_given_overlapping_known_values_when_scrubbing_then_the_union_is_redacted_under_the_longest_name(engine):
    s = Scrubber()
    s.add_known("alpha-beta-gamma", "LONG")
    s.add_known("beta-gamma-delta-epsilon", "LONGER")
    s.add_known("alpha-beta", "SHORT")
    s.add_known("gamma-delta", "INNER")
    out = s.scrub("<alpha-beta-gamma-delta-epsilon>")
    assert out == "<[REDACTED:LONGER]>"  # one marker over the union: no piece of any value survives
    assert s.scrub("<alpha-beta-gamma>") == "<[REDACTED:LONG]>"
    assert s.scrub("alpha-beta alone") == "[REDACTED:SHORT] alone"
    assert s.find("..gamma-delta..") == [(2, 13, "INNER")]


def test_given_values_with_spaces_newlines_and_unicode_when_scrubbing_then_they_are_found(engine):
    s = Scrubber()
    values = {"correct horse battery staple": "PASSPHRASE", "line one\nline two": "MULTILINE",
              "pässwört-€uro-✓-secret": "UNICODE", "a.b*c+d?e(f)[g]{h}|i^j$k\\l": "REGEX_CHARS", "\tpadded value\t": "PADDED"}
    for value, name in values.items():
        s.add_known(value, name)
    assert s.known_has_whitespace
    for value, name in values.items():
        assert s.scrub(f"[{value}]") == f"[[REDACTED:{name}]]"


def test_given_a_forgotten_value_when_scrubbing_then_it_is_no_longer_redacted(engine):
    s = Scrubber()
    s.add_known("temporary-value-123", "TMP")
    assert s.scrub("temporary-value-123") == "[REDACTED:TMP]"
    s.forget("temporary-value-123")
    s.forget("never-added-value")
    assert s.scrub("temporary-value-123") == "temporary-value-123"
    assert s.known_count == 0


def test_given_a_value_re_added_when_scrubbing_then_the_latest_name_wins_and_a_nameless_add_keeps_it(engine):
    s = Scrubber()
    s.add_known("rotating-value-123", "OLD")
    s.add_known("rotating-value-123", "NEW")
    assert s.scrub("rotating-value-123") == "[REDACTED:NEW]"
    s.add_known("rotating-value-123")
    assert s.scrub("rotating-value-123") == "[REDACTED:NEW]"


def test_given_many_known_values_of_every_length_when_scrubbing_then_every_occurrence_is_found(engine):
    rng = random.Random(5)
    s = Scrubber()
    values = []
    for i in range(300):
        alphabet = rng.choice([ALNUM, HEX, string.ascii_lowercase, ALNUM + "._-/+=", string.digits])
        value = rand(rng, alphabet, rng.randint(8, 90))
        values.append((value, f"V{i}"))
        s.add_known(value, f"V{i}")
    for value, name in values:
        s.add_known(value, name)  # no-op re-adds
    filler = "".join(rng.choice(ALNUM + " \n.,:=-_") for _ in range(20000))
    picks = rng.sample(values, 60)
    text = filler
    for value, _ in picks:
        at = rng.randrange(len(text))
        text = text[:at] + " " + value + " " + text[at:]
    out = s.scrub(text)
    for value, _name in picks:
        assert value not in out
    assert out.count("[REDACTED") >= len({v for v, _ in picks}) - 5  # a few may merge with neighbours


def test_given_a_long_repetitive_text_when_scrubbing_then_every_occurrence_is_found(engine):
    s = Scrubber()
    values = [f"value-number-{i:04d}-{'x' * (i % 30)}" for i in range(40)]
    for i, v in enumerate(values):
        s.add_known(v, f"N{i}")
    text = "".join(f"{'.' * (i * 7 % 50)}{v}" for i, v in enumerate(values)) * 3
    out = s.scrub(text)
    assert not any(v in out for v in values)
    assert out.count("[REDACTED:N") == 120


def test_given_the_automaton_and_the_regex_fallback_when_scrubbing_then_they_agree(monkeypatch):
    assert scrub.ahocorasick_rs is not None, "ahocorasick-rs is a dependency (pyproject.toml)"
    rng = random.Random(11)
    values = [(rand(rng, rng.choice([ALNUM, HEX, "ab"]), rng.randint(8, 40)), f"V{i}") for i in range(80)]
    text = "".join(rng.choice([rng.choice(values)[0], rand(rng, ALNUM + " -_", rng.randint(1, 30)), "ab" * 5])
                   for _ in range(2000))
    fast = Scrubber()
    for v, n in values:
        fast.add_known(v, n)
    assert fast.uses_automaton
    expected = fast.scrub(text)
    monkeypatch.setattr(scrub, "ahocorasick_rs", None)
    slow = Scrubber()
    for v, n in values:
        slow.add_known(v, n)
    assert not slow.uses_automaton
    assert slow.scrub(text) == expected
    assert slow.find(text) == fast.find(text)


def test_given_many_adds_when_scrubbing_then_the_automaton_is_built_once(monkeypatch):
    assert scrub.ahocorasick_rs is not None, "ahocorasick-rs is a dependency (pyproject.toml)"
    builds = []
    original = scrub._Engine.__init__

    def counting(self, *a, **kw):
        builds.append(1)
        original(self, *a, **kw)

    monkeypatch.setattr(scrub._Engine, "__init__", counting)
    s = Scrubber()
    builds.clear()
    for i in range(200):
        s.add_known(f"bulk-value-{i:05d}", f"B{i}")
    assert builds == []
    assert s.scrub("bulk-value-00042") == "[REDACTED:B42]"
    assert s.scrub("bulk-value-00199") == "[REDACTED:B199]"
    assert len(builds) == 1


# -- the false-positive corpus

def corpus_files() -> list[Path]:
    files = sorted(p for p in CORPUS.iterdir() if p.is_file())
    assert len(files) >= 8
    return files


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_given_ordinary_outputs_when_scrubbing_then_nothing_is_redacted(path, engine):
    text = path.read_text(encoding="utf-8")
    s = Scrubber()
    rng = random.Random(1)
    for i in range(200):  # known values that are not in the corpus change nothing either
        s.add_known(rand(rng, ALNUM, rng.randint(20, 60)), f"K{i}")
    assert s.find(text) == []
    assert s.scrub(text) == text
    stream = s.stream()
    pieces = [stream.feed(text[i:i + 97]) for i in range(0, len(text), 97)]
    assert "".join(pieces) + stream.flush() == text
    if path.suffix == ".ipynb":
        nb = json.loads(text)
        outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
        assert any("image/png" in o.get("data", {}) for o in outputs)  # base64 image data is in there


def test_given_the_corpus_when_checking_then_it_covers_the_ordinary_outputs_named_in_the_issue():
    text = "\n".join(p.read_text(encoding="utf-8") for p in corpus_files())
    for needle in ("sklearn", "sk-learn", "task-12345", "sha256:", "commit ", "Traceback", "npm WARN",
                   "precision    recall", "dtype: float64", '"image/png"'):
        assert needle in text, needle


# -- streaming

def sample_text(rng: random.Random, secrets: list[str], n: int = 40) -> str:
    words = ["hello", "sk-learn", "task-12345", "world", "sk-", "AKIA", "xox", "hf_", "ghp_", "\n", "  ", "a=b", "é✓"]
    parts = []
    for _ in range(n):
        parts.append(rng.choice(words + secrets) if rng.random() < 0.4 else rand(rng, ALNUM + " \n-_.", rng.randint(0, 12)))
        parts.append(rng.choice([" ", "\n", "'", "=", ", "]))
    return "".join(parts)


def streaming_fixture(rng: random.Random) -> tuple[Scrubber, list[str]]:
    s = Scrubber()
    known = ["known-value-" + rand(rng, ALNUM, 12), rand(rng, HEX, 32), "two words secret", "prefix-of-a-longer-value"]
    s.add_known(known[0], "K0")
    s.add_known(known[1], "K1")
    s.add_known(known[2])
    s.add_known(known[3], "SHORT")
    s.add_known(known[3] + "-and-more", "LONG")
    patterned = [keys_of(f, seed=rng.randrange(99), n=1)[0] for f in ("openai", "aws", "slack", "github", "google")]
    return s, known + [known[3] + "-and-more"] + patterned


def test_given_a_secret_split_at_any_position_when_streaming_then_it_is_redacted(engine):
    rng = random.Random(3)
    s, secrets = streaming_fixture(rng)
    for secret in secrets:
        text = f"before {secret} after\n"
        expected = s.scrub(text)
        assert secret not in expected
        for i in range(len(text) + 1):
            stream = s.stream()
            out = stream.feed(text[:i]) + stream.feed(text[i:]) + stream.flush()
            assert out == expected, (secret, i)


def test_given_many_tiny_writes_when_streaming_then_the_output_equals_one_shot(engine):
    rng = random.Random(4)
    s, secrets = streaming_fixture(rng)
    text = sample_text(rng, secrets, 80)
    stream = s.stream()
    out = "".join(stream.feed(c) for c in text) + stream.flush()
    assert out == s.scrub(text)
    for secret in secrets:
        assert secret not in out


def test_given_print_in_two_parts_when_streaming_then_the_key_is_redacted():
    s = Scrubber()
    key = keys_of("openai", n=1)[0]
    stream = s.stream()
    first = stream.feed(key[:10])  # print(k[:10], end="")
    second = stream.feed(key[10:] + "\n")  # print(k[10:])
    assert first == ""
    assert first + second + stream.flush() == "[REDACTED]\n"


def test_given_ordinary_text_when_streaming_then_little_or_nothing_is_held_back():
    s = Scrubber()
    s.add_known("Zq9-known-value-xyz", "K")
    stream = s.stream()
    assert stream.feed("hello world\n") == "hello world\n" and stream.pending == 0
    assert stream.feed("value is ") == "value is " and stream.pending == 0
    assert stream.feed("sklearn") == "sklearn" and stream.pending == 0  # cannot start any key
    assert stream.feed(" ok sk-pro") == " ok " and stream.pending == len("sk-pro")  # could be a key
    assert stream.feed("ject done") == "sk-project done" and stream.pending == 0
    assert stream.feed(" Zq9-kn") == " " and stream.pending == len("Zq9-kn")  # could be the known value
    assert stream.feed("ock") == "Zq9-knock" and stream.pending == 0
    assert stream.flush() == ""


def test_given_held_text_when_flushing_then_everything_is_emitted_scrubbed():
    s = Scrubber()
    s.add_known("held-known-value", "H")
    stream = s.stream()
    assert stream.feed("x held-known-val") == "x "
    assert stream.flush() == "held-known-val"
    assert stream.feed("held-known-value") == "[REDACTED:H]"  # complete, and no longer value continues it
    assert stream.feed(" held-") == " " and stream.pending == len("held-")
    assert stream.flush() == "held-"
    assert stream.pending == 0 and stream.flush() == ""


def test_given_a_token_longer_than_the_window_when_streaming_then_the_hold_is_bounded():
    s = Scrubber()
    stream = s.stream()
    out = stream.feed("sk-" + "a" * 5000)
    assert stream.pending <= s.window
    assert out + stream.flush() == "sk-" + "a" * 5000


def test_given_custom_patterns_when_streaming_then_a_split_match_is_still_redacted():
    s = Scrubber(extra_patterns=[r"pw=[^\s]{6,}"])
    text = "login ok pw=hunter2hunter2 done\nnext line\n"
    expected = s.scrub(text)
    assert "hunter2" not in expected
    for i in range(len(text) + 1):
        stream = s.stream()
        assert stream.feed(text[:i]) + stream.feed(text[i:]) + stream.flush() == expected


SECRET_POOL_RNG = random.Random(99)
KNOWN_POOL = ["opaque-known-" + rand(SECRET_POOL_RNG, ALNUM, 10), rand(SECRET_POOL_RNG, HEX, 24),
              "pass phrase with spaces", "abcabcabcabc", "abcabcabcabcabc-longer", "ZZZZZZZZ"]
KEY_POOL = [keys_of(f, seed=7, n=1)[0] for f in sorted(FAMILIES)]
TEXT_ALPHABET = st.sampled_from(list("abcsk-_AKIxo hf\n\t'=:.0123456789ZQ✓é"))


@st.composite
def streamed_texts(draw):
    parts = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            parts.append(draw(st.text(TEXT_ALPHABET, max_size=30)))
        elif kind == 1:
            parts.append(draw(st.sampled_from(KNOWN_POOL)))
        elif kind == 2:
            parts.append(" " + draw(st.sampled_from(KEY_POOL)) + draw(st.sampled_from([" ", "\n", "'", ".", ""])) + " ")
        else:
            value = draw(st.sampled_from(KNOWN_POOL))
            parts.append(value[: draw(st.integers(1, len(value)))])  # a partial value: never redacted
    text = "".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    return text, cuts


def _property_scrubber() -> Scrubber:
    s = Scrubber()
    for i, value in enumerate(KNOWN_POOL):
        s.add_known(value, f"P{i}" if i % 2 else None)
    return s


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streamed_texts())
def test_property_streamed_output_equals_one_shot_and_hides_every_secret(case):
    text, cuts = case
    s = _property_scrubber()
    expected = s.scrub(text)
    stream = s.stream()
    pieces, last = [], 0
    for cut in cuts + [len(text)]:
        pieces.append(stream.feed(text[last:cut]))
        last = cut
    pieces.append(stream.flush())
    out = "".join(pieces)
    assert out == expected
    for value in KNOWN_POOL:
        assert value not in out
    for key in KEY_POOL:
        assert key not in out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streamed_texts())
def test_property_the_regex_fallback_agrees_with_the_automaton(case):
    assert scrub.ahocorasick_rs is not None, "ahocorasick-rs is a dependency (pyproject.toml)"
    text, _ = case
    fast = _property_scrubber()
    saved = scrub.ahocorasick_rs
    try:
        scrub.ahocorasick_rs = None
        slow = _property_scrubber()
        assert not slow.uses_automaton
        assert slow.scrub(text) == fast.scrub(text)
    finally:
        scrub.ahocorasick_rs = saved


# -- logging

@pytest.fixture
def captured_logger():
    logger = logging.getLogger(f"keyvault-test-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = ListHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger, lines


def test_given_a_secret_in_log_args_when_logging_then_the_formatted_line_is_redacted(captured_logger):
    logger, lines = captured_logger
    s = Scrubber()
    s.add_known("db-password-123456", "DB_PASSWORD")
    key = keys_of("anthropic", n=1)[0]
    install_log_filter(s, [logger])
    logger.info("connecting with %s and %r", "db-password-123456", {"key": key})
    logger.warning("plain %d%% message", 50)
    assert lines[0] == f"INFO connecting with [REDACTED:DB_PASSWORD] and {{'key': '{GENERIC_MARKER}'}}"
    assert lines[1] == "WARNING plain 50% message"


def test_given_an_exception_with_a_secret_when_logging_then_the_traceback_is_redacted(captured_logger):
    logger, lines = captured_logger
    s = Scrubber()
    s.add_known("traceback-secret-value", "TB")
    filt = install_log_filter(s, [logger])
    assert install_log_filter(s, [logger]) is not filt  # a second call adds no duplicate behaviour
    try:
        raise RuntimeError("failed with traceback-secret-value")
    except RuntimeError:
        logger.exception("request failed for %s", "traceback-secret-value")
    logger.info("with stack", stack_info=True, extra={})
    text = "\n".join(lines)
    assert "traceback-secret-value" not in text
    assert "RuntimeError: failed with [REDACTED:TB]" in text
    assert "request failed for [REDACTED:TB]" in text


def test_given_a_record_with_bad_args_when_filtering_then_it_still_passes_redacted():
    s = Scrubber()
    s.add_known("bad-args-secret-1", "BA")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value bad-args-secret-1 %s %s", ("only-one",), None)
    assert RedactingFilter(s).filter(record) is True
    assert "bad-args-secret-1" not in record.getMessage()


def test_given_quiet_handlers_when_a_later_handler_takes_debug_then_its_records_are_redacted_too(captured_logger):
    """Records no handler writes are let through unread (jupyter_server makes a debug record per
    request); the moment a handler takes them, they are redacted again."""
    logger, lines = captured_logger
    logger.handlers[0].setLevel(logging.WARNING)
    s = Scrubber()
    s.add_known("quiet-debug-secret-42", "QD")
    install_log_filter(s, [logger])
    logger.debug("not written: %s", "quiet-debug-secret-42")
    assert lines == []
    late_lines: list[str] = []

    class LateHandler(logging.Handler):
        def emit(self, record):
            late_lines.append(self.format(record))

    logger.addHandler(LateHandler(logging.DEBUG))  # added after install_log_filter: no filter of its own
    logger.debug("now written: %s", "quiet-debug-secret-42")
    assert lines == [] and late_lines == ["now written: [REDACTED:QD]"]


def test_given_a_named_logger_when_installing_then_its_handlers_get_the_filter_too():
    name = f"keyvault-handlers-{time.monotonic_ns()}"
    logger = logging.getLogger(name)
    handler = logging.NullHandler()
    logger.addHandler(handler)
    filt = install_log_filter(Scrubber(), [name])
    assert filt in logger.filters and filt in handler.filters


# -- concurrency

def test_given_adds_from_one_thread_when_scrubbing_from_another_then_nothing_breaks():
    s = Scrubber()
    values = [f"thread-value-{i:05d}-{'q' * (i % 7)}" for i in range(400)]
    errors: list[BaseException] = []
    done = threading.Event()

    def adder():
        try:
            for i, v in enumerate(values):
                s.add_known(v, f"T{i}")
                if i % 50 == 0:
                    time.sleep(0.001)
                if i % 97 == 0:
                    s.forget(v)
                    s.add_known(v, f"T{i}")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def scrubber_loop():
        try:
            text = " ".join(values) + " " + keys_of("groq", n=1)[0]
            while not done.is_set():
                out = s.scrub(text)
                assert keys_of("groq", n=1)[0] not in out
                stream = s.stream()
                stream.feed(text[:500])
                stream.feed(text[500:])
                stream.flush()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=adder), threading.Thread(target=scrubber_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    out = s.scrub(" ".join(values))
    assert not any(v in out for v in values)
    assert s.known_count == len(values)


# -- misc API

def test_given_the_public_api_when_used_then_it_behaves_as_documented(engine):
    s = Scrubber()
    assert s.scrub("") == "" and s.find("") == [] and not s.contains_secret("")
    assert s.window >= 256
    s.add_known("x" * 400 + "-long-known-value", "LONG")
    assert s.window >= 417
    assert s.contains_secret("a " + "x" * 400 + "-long-known-value b")
    assert isinstance(scrub.default_scrubber, Scrubber)
    assert s.uses_automaton is (engine == "automaton")
