"""The known-value engine against a brute-force reference: random values over small alphabets (so
they overlap and prefix each other), random texts, random splits into stream writes, and random
sequences of adds, forgets, replacements and builds (full, delta, none) — the redacted characters
are exactly those of every occurrence of every value known at that moment."""

from __future__ import annotations

import random

import pytest

from jupyter_keyvault.scrub import MIN_KNOWN_LENGTH, Scrubber


def reference(text: str, known: dict[str, str]) -> list[tuple[int, int]]:
    """Every occurrence of every value, overlapping ones merged: what must be covered."""
    spans = sorted((i, i + len(v)) for v in known for i in range(len(text)) if text.startswith(v, i))
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def random_value(rng: random.Random, alphabet: str, pool: list[str]) -> str:
    n = rng.randrange(MIN_KNOWN_LENGTH, 24)
    if pool and rng.random() < 0.4:  # a value that extends, or begins, another one
        other = rng.choice(pool)
        if rng.random() < 0.5:
            return other + "".join(rng.choices(alphabet, k=rng.randrange(1, 6)))
        if len(other) > MIN_KNOWN_LENGTH:
            return other[:rng.randrange(MIN_KNOWN_LENGTH, len(other))]
    return "".join(rng.choices(alphabet, k=n))


def random_text(rng: random.Random, alphabet: str, values: list[str]) -> str:
    parts = []
    for _ in range(rng.randrange(1, 12) if rng.random() < 0.5 else rng.randrange(20, 60)):  # long ones are narrowed
        roll = rng.random()
        if values and roll < 0.35:
            parts.append(rng.choice(values))
        elif values and roll < 0.5:  # a truncated value: must not be redacted on its own
            v = rng.choice(values)
            parts.append(v[:rng.randrange(1, len(v))])
        else:
            parts.append("".join(rng.choices(alphabet + " \n", k=rng.randrange(0, 30))))
    return "".join(parts)


def check(s: Scrubber, text: str, known: dict[str, str], rng: random.Random) -> None:
    expected = reference(text, known)
    found = s.find(text)
    assert [(a, b) for a, b, _ in found] == expected, (text, known)
    for a, b, label in found:  # labelled by a name of a value inside it
        assert any(label == (name or "known value") and text.find(v, a, b) >= 0 for v, name in known.items())
    out = s.scrub(text)
    # The same text in random stream writes comes out the same.
    stream, pieces, i = s.stream(), [], 0
    while i < len(text):
        j = i + rng.randrange(1, 12)
        pieces.append(stream.feed(text[i:j]))
        i = j
    pieces.append(stream.flush())
    assert "".join(pieces) == out


@pytest.mark.parametrize("seed", range(6))  # one alphabet each
@pytest.mark.parametrize("use_automaton", [True, False], ids=["automaton", "regex"])
def test_given_random_values_and_changes_when_scanned_then_exactly_the_known_occurrences_are_redacted(
        seed, use_automaton):
    rng = random.Random(seed)
    # '?' next to characters beyond latin-1: a narrowed copy of the text must not create matches.
    alphabet = ["ab", "abc", "0123456789abcdef", "xyzXYZ_-", "a?\u2501", "ab\u00e9?\U0001f511"][seed]
    s = Scrubber(patterns=(), use_automaton=use_automaton, build_on_scrub=seed % 2 == 0)
    known: dict[str, str] = {}
    ever: list[str] = []
    for _ in range(40):
        roll = rng.random()
        if roll < 0.45 or not known:
            value = random_value(rng, alphabet, ever)
            name = f"N{rng.randrange(6)}"
            s.add_known(value, name)
            known[value] = name
            ever.append(value)
        elif roll < 0.6:
            value = rng.choice(list(known))
            s.forget(value)
            del known[value]
        elif roll < 0.7:
            name = rng.choice(list(known.values()))
            new = random_value(rng, alphabet, ever)
            s.replace_known(None, new, name)
            known = {v: n for v, n in known.items() if n != name}
            known[new] = name
            ever.append(new)
        elif roll < 0.75:
            name = rng.choice(list(known.values()))
            s.forget_name(name)
            known = {v: n for v, n in known.items() if n != name}
        else:
            s.rebuild(full=rng.choice([None, True, False]))
        assert s.known_count == len(known)
        for _ in range(3):
            check(s, random_text(rng, alphabet, ever), known, rng)


def test_given_layered_builds_when_values_come_and_go_then_deltas_are_built_and_a_full_build_follows():
    rng = random.Random(1)
    s = Scrubber(patterns=(), build_on_scrub=False)
    values = [f"{rng.getrandbits(160):040x}" for _ in range(300)]
    for v in values[:200]:
        s.add_known(v, "A")
    s.rebuild()
    base = s._layers.base
    for v in values[200:220]:
        s.add_known(v, "B")
    s.rebuild()
    assert s._layers.base is base and s._layers.delta is not None  # only the 20 new ones were built
    assert set(s._layers.delta._known) == set(values[200:220])
    for v in values[:150]:
        s.forget(v)
    assert all(s.scrub(v) == v for v in values[:150])  # forgotten at once, no build
    s.rebuild()
    assert s._layers.base is not base and s._layers.delta is None  # past half the base: a full build
    assert set(s._layers.base._known) == set(values[150:220])
    assert s._hidden == {}  # the new base does not know them: nothing left to hide
    text = " ".join(values)
    assert reference(text, dict.fromkeys(values[150:220], "")) == [(a, b) for a, b, _ in s.find(text)]


def test_given_a_value_forgotten_then_stored_again_then_it_is_redacted_again():
    s = Scrubber(patterns=(), build_on_scrub=False)
    value = "0123456789abcdef0123"
    s.add_known(value, "K")
    s.rebuild()
    s.forget(value)
    assert s.scrub(value) == value
    s.add_known(value, "K")
    assert s.scrub(value) == "[REDACTED:K]"
    s.rebuild()
    assert s.scrub(value) == "[REDACTED:K]"
