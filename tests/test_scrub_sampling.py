"""Edges of the compiled scan: the sampled automaton over latin-1 bytes and the prefix search.

Known values without a provider prefix are found by sampling every k-th character of the
text as latin-1 bytes (other characters become ``?``); provider prefixes by one leftmost-first
search that reports no occurrence starting inside an earlier one. Each test runs on that engine
and on the regex fallback, and where it can, checks that both give the same spans. Every value
here is made up in the test.
"""

from __future__ import annotations

import random
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_keyvault import scrub
from jupyter_keyvault.scrub import Scrubber, SecretPattern

ALNUM = string.ascii_letters + string.digits
NON_ASCII = ["é", "ü", "━", "日本", "😀", "\u200b", "ÿ", "Ā", "?"]


def scrubber_with(*values: tuple[str, str], **kw) -> Scrubber:
    s = Scrubber(**kw)
    for value, name in values:
        s.add_known(value, name)
    return s


def test_given_an_opaque_value_among_non_ascii_text_at_every_offset_when_scrubbing_then_only_it_is_redacted(engine):
    value = "Zq7Xw2Kp9Lm4Rt8Vb1Nc"  # no provider prefix: the sampled automaton finds it
    s = scrubber_with((value, "OPAQUE"))
    for filler in NON_ASCII:
        for offset in range(12):
            before, after = (filler * 12)[:offset], (filler * 5)[:offset % 5]
            text = before + value + after
            assert s.scrub(text) == before + "[REDACTED:OPAQUE]" + after, (filler, offset)
            assert s.find(text) == [(len(before), len(before) + len(value), "OPAQUE")]


def test_given_values_with_non_latin1_characters_when_scrubbing_then_they_are_found(engine):
    values = [("pässwört-日本-tökén-1234", "UNI"), ("━━secret━━value━━", "BOX"), ("emoji😀token😀abcdef", "EMO")]
    s = scrubber_with(*values)
    text = "é " + " ━ ".join(v for v, _ in values) + " 日本"
    out = s.scrub(text)
    for value, name in values:
        assert value not in out
        assert f"[REDACTED:{name}]" in out


def test_given_a_value_with_a_question_mark_when_the_text_has_another_character_there_then_it_is_left_alone(engine):
    # In the latin-1 bytes both `?` and `━` read as `?`: a hit there must be confirmed on the text.
    s = scrubber_with(("abc?defgh12345", "Q"), ("Xy?Zw?Vu?Ts?Rq", "QQ"))
    for text in ("abc━defgh12345", "abc日defgh12345", "Xy━Zw日Vu😀Ts?Rq"):
        assert s.scrub(text) == text
        assert s.find(text) == []
    assert s.scrub("abc?defgh12345") == "[REDACTED:Q]"


def test_given_a_value_that_is_a_prefix_of_another_when_scrubbing_then_each_occurrence_is_whole(engine):
    short, long = "Opaque9Token7Base", "Opaque9Token7Base-and-more-of-it"
    s = scrubber_with((short, "SHORT"), (long, "LONG"))
    assert s.scrub(f"é{long}é") == "é[REDACTED:LONG]é"
    assert s.scrub(f"━{short}━") == "━[REDACTED:SHORT]━"
    assert s.scrub(f"{short} {long}") == "[REDACTED:SHORT] [REDACTED:LONG]"


def test_given_overlapping_opaque_values_when_scrubbing_then_their_union_is_redacted(engine):
    left, right = "LeftHalf8Q2W3E4R5", "W3E4R5RightHalf9Z"
    s = scrubber_with((left, "LEFT"), (right, "RIGHT"))
    text = "日" + left[:-6] + right + "日"
    out = s.scrub(text)
    assert out.count("[REDACTED:") == 1
    assert out.startswith("日[REDACTED:") and out.endswith("]日")
    assert "Half" not in out


def test_given_a_prefixed_value_starting_inside_another_prefix_when_scrubbing_then_it_is_found(engine):
    # `AKIA` and `ASIA` overlap in `AKIASIA…`: the prefix search reports only the first.
    value = "ASIA" + "QWERTYUIOPASDFGH"
    s = scrubber_with((value, "TEMP_KEY"))  # with the patterns: their prefixes are what is searched
    text = "id AKI" + value + " end"
    assert s.scrub(text) == "id AKI[REDACTED:TEMP_KEY] end"


def test_given_custom_prefixes_whose_non_latin1_characters_collide_when_scrubbing_then_both_are_found(engine):
    patterns = [SecretPattern("euro", r"€tok[0-9]{12}", ("€tok",)),
                SecretPattern("pound", r"₤tok[0-9]{12}", ("₤tok",))]
    s = Scrubber(patterns)
    text = "a €tok123456789012 b ₤tok123456789012 c"
    assert s.find(text) == [(2, 18, "euro"), (21, 37, "pound")]


def test_given_a_secret_split_at_every_offset_among_non_ascii_text_when_streaming_then_output_equals_one_shot(engine):
    opaque = "Zq7Xw2Kp9Lm4Rt8Vb1NcYy"
    prefixed = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"
    s = scrubber_with((opaque, "OPAQUE"))
    text = "━━ é " + opaque + " 日本 " + prefixed + " 😀"
    expected = s.scrub(text)
    assert opaque not in expected and prefixed not in expected
    for cut in range(1, len(text)):
        for second in (cut + 1, cut + 7, len(text)):
            stream = s.stream()
            got = stream.feed(text[:cut]) + stream.feed(text[cut:second]) + stream.feed(text[second:]) + stream.flush()
            assert got == expected, (cut, second)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_on_non_ascii_text_the_automaton_and_the_regex_fallback_agree(data):
    assert scrub.ahocorasick_rs is not None, "ahocorasick-rs is a dependency (pyproject.toml)"
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    alphabet = rng.choice([ALNUM, "0123456789abcdef", "ab", ALNUM + "é━?"])
    values = [("".join(rng.choices(alphabet, k=rng.randint(8, 40))), f"V{i}") for i in range(rng.randint(1, 30))]
    pieces = []
    for _ in range(rng.randint(1, 60)):
        kind = rng.randrange(4)
        if kind == 0:
            pieces.append(rng.choice(values)[0])
        elif kind == 1:
            pieces.append(rng.choice(values)[0][: rng.randint(1, 7)])
        elif kind == 2:
            pieces.append("".join(rng.choices(NON_ASCII, k=rng.randint(1, 4))))
        else:
            pieces.append("".join(rng.choices(alphabet + " -_", k=rng.randint(1, 20))))
    text = "".join(pieces)
    fast = scrubber_with(*values)
    assert fast.uses_automaton
    spans = fast.find(text)
    saved = scrub.ahocorasick_rs
    try:
        scrub.ahocorasick_rs = None
        slow = scrubber_with(*values)
        assert not slow.uses_automaton
        assert slow.find(text) == spans
    finally:
        scrub.ahocorasick_rs = saved
    out = fast.scrub(text)
    for value, _ in values:
        assert value not in out
