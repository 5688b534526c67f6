"""The redaction engine: exact known values and provider key patterns, streaming-safe.

One engine serves every use (kernel outputs, pre-save hook, log filters, the CLI).
Pure Python plus the compiled `ahocorasick-rs` (optional: a regex fallback); imports nothing else of ours.

How a scan works (``Scrubber.find``), in three parts whose results are merged. The two compiled
passes run over one latin-1 copy of the text (a byte a character, so offsets carry over;
characters beyond latin-1 read as ``?``, so every hit is confirmed on the text itself):

1. **Prefix locators.** Every provider pattern starts with a literal prefix (``sk-``,
   ``gsk_``, ``AKIA`` …). One leftmost-first ``ahocorasick-rs`` search finds them all (a few
   literals: it runs a SIMD prefilter); it reports no occurrence that starts inside an earlier
   one, so at each hit the prefixes that could start inside it are checked explicitly. Without
   ``ahocorasick-rs``, the prefixes are grouped by one character they share and each group is
   one regex starting with that literal character. Only at a real prefix occurrence does
   Python run the full patterns, with token boundaries, so a pattern never matches inside a
   longer identifier.
2. **Known values that start with such a prefix** (most stored keys: ``sk-proj-…``,
   ``hf_…``) ride on the same occurrences: a dict lookup on the next few characters.
3. **Other known values** go through an Aho–Corasick automaton (``ahocorasick-rs``, compiled,
   a DFA for up to a few thousand anchors) run over a *sample* of the text: every k-th byte
   of that copy. k is chosen from the shortest value (at most 8) by timing a few plans on
   sample output. Each value is entered once per phase (k times) as an anchor of 3 to 5 of its
   own sampled characters, the rarest run of them, so every occurrence of the value shows up
   as an anchor in the sample while ordinary text seldom does; each hit is confirmed on the
   real text with ``str.startswith``. Without ``ahocorasick-rs`` these values are found by one
   regex alternation (correct, much slower).

Overlapping matches are merged into one redaction covering all of them (no part of any
secret survives), labelled by the best member: a known value beats a pattern, then the
longest, then the earliest.

Known values change with ``add_known`` / ``forget`` / ``forget_name`` / ``replace_known``,
each O(that value): an added value is found at once by a plain search over the values added
since the last build; a forgotten one is hidden at once (its forms go into a set that each
hit is checked against). Builds are layered: a full build, then builds of only the values
changed since (the delta layer, one quick plan, no patterns), until those exceed half of the
full build. A scan uses an immutable snapshot of the layers (``prepare`` builds, ``install``
swaps it in), so changing values from one thread while another scrubs is safe. With
``build_on_scrub=True`` (kernel, CLI) the next scrub after a change builds; a server sets it
False and awaits ``rebuild_async()`` (a worker thread that steps aside for the event loop
every millisecond), so scrubbing on its event loop never pays a build.

**Encoded forms** (``find_deep`` / ``scrub_deep`` / ``scrub_bytes``, used by the notebook
walk and the server's message filter): a second engine knows, besides the values, their
base64 text at each byte alignment (found without decoding anything), their JSON-escaped
and UTF-8-as-latin-1 forms (for raw message bytes); text with HTML character references,
percent-encoding, ``\\u``/``\\x`` escapes, tags or invisible characters is also decoded
(up to three rounds) and the hits mapped back onto the original characters.

**History fingerprints** (``history_fingerprints`` / ``FingerprintMatcher``): keyed hashes of
64-bit chunks of each value, computed by a server per kernel, let a kernel's history
scrubber find a value it was never given.

Throughput: see benchmarks/bench_scrub.py and the README's Performance section; the latin-1
copy, the sampled scan and the Python work at prefix occurrences now cost about the same.
"""

from __future__ import annotations

import bisect
import gc
import logging
import math
import re
import string
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import NamedTuple

try:  # a compiled extension; without it known values are matched by one regex (correct, slower)
    import ahocorasick_rs
except ImportError:  # pragma: no cover - exercised by monkeypatching in tests
    ahocorasick_rs = None

GENERIC_MARKER = "[REDACTED]"
MIN_KNOWN_LENGTH = 8  # shorter values would redact ordinary words

# Characters of a token: a pattern match is a whole token, never part of a longer one.
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_TOKEN_STR = "".join(sorted(TOKEN_CHARS))
_TOK = r"A-Za-z0-9_\-"


@dataclass(frozen=True)
class SecretPattern:
    """A provider key format.

    ``prefixes``: literal strings every match starts with (derived from the regex when
    empty and the regex starts with a literal); they let the engine skip text quickly.
    ``token``: every match is made of ``[A-Za-z0-9_-]`` only, which lets a stream hold back
    just the trailing token instead of the trailing line.
    """

    label: str
    regex: str
    prefixes: tuple[str, ...] = ()
    token: bool = False


def _mix(*classes: str, body: str = _TOK) -> str:
    """Look-aheads requiring each class somewhere in the rest of the token."""
    return "".join(f"(?=[{body}]*?[{c}])" for c in classes)


_UPPER, _LOWER, _DIGIT = "A-Z", "a-z", "0-9"
_SLACK = tuple(f"xox{c}-" for c in "abposre")

# Anchored on distinctive prefixes and long, mixed bodies to keep false positives near zero:
# `sklearn`, `sk-learn`, `task-12345`, UUIDs, git hashes and base64 data never match.
# The order matters only for the label when two patterns match the same token.
DEFAULT_PATTERNS: tuple[SecretPattern, ...] = (
    # Anthropic: sk-ant-api03-…, sk-ant-admin01-…, sk-ant-oat01-… (≈ 100 chars).
    SecretPattern("anthropic", r"sk-ant-[a-z]{2,8}\d{2}-" + _mix(_UPPER, _LOWER) + r"[A-Za-z0-9_\-]{32,}",
                  ("sk-ant-",), True),
    # OpenRouter: sk-or-v1- + 64 hex.
    SecretPattern("openrouter", r"sk-or-v1-[a-f0-9]{64}", ("sk-or-v1-",), True),
    # OpenAI project / service-account / admin keys (long, base64url, usually with T3BlbkFJ).
    SecretPattern("openai", r"sk-(?:proj|svcacct|admin|None)-" + _mix(_UPPER, _DIGIT) + r"[A-Za-z0-9_\-]{40,}",
                  ("sk-proj-", "sk-svcacct-", "sk-admin-", "sk-None-"), True),
    # Any sk- key carrying OpenAI's marker (base64 of "openai").
    SecretPattern("openai", r"sk-(?=[A-Za-z0-9_\-]{40,})[A-Za-z0-9_\-]*?T3BlbkFJ[A-Za-z0-9_\-]*", ("sk-",), True),
    # Legacy sk- + 48 alphanumerics, and OpenAI-compatible providers' sk- + 32+ (e.g. hex).
    SecretPattern("openai", r"sk-" + _mix("0-9", "A-Za-z", body="A-Za-z0-9") + r"[A-Za-z0-9]{32,}", ("sk-",), True),
    # Groq: gsk_ + 52 alphanumerics.
    SecretPattern("groq", r"gsk_" + _mix(_UPPER, _LOWER, _DIGIT, body="A-Za-z0-9") + r"[A-Za-z0-9]{48,}", ("gsk_",), True),
    # Hugging Face: hf_ + 34 letters (some older tokens have digits).
    SecretPattern("huggingface", r"hf_" + _mix(_UPPER, _LOWER, body="A-Za-z0-9") + r"[A-Za-z0-9]{34,}", ("hf_",), True),
    # GitHub classic tokens: ghp_/gho_/ghu_/ghs_/ghr_ + 36 base62.
    SecretPattern("github", r"gh[pousr]_" + _mix(_UPPER, _LOWER, body="A-Za-z0-9") + r"[A-Za-z0-9]{36,251}",
                  ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), True),
    # GitHub fine-grained tokens: github_pat_ + 22 + _ + 59.
    SecretPattern("github", r"github_pat_" + _mix(_UPPER, _LOWER, _DIGIT, body="A-Za-z0-9_") + r"[A-Za-z0-9_]{80,}",
                  ("github_pat_",), True),
    # AWS access key ids: AKIA (long-term) / ASIA (temporary) + 16 upper-case letters/digits.
    SecretPattern("aws", r"(?:AKIA|ASIA)[A-Z0-9]{16}", ("AKIA", "ASIA"), True),
    # Google API keys: AIza + 35.
    SecretPattern("google", r"AIza[0-9A-Za-z_\-]{35}", ("AIza",), True),
    # Slack: xoxb-/xoxp-/xoxa-/xoxr-/xoxs-/xoxo-/xoxe- + numeric team id + more; app tokens xapp-.
    SecretPattern("slack", r"xox[abposre]-(?=[A-Za-z0-9\-]{20,})\d+-[A-Za-z0-9\-]{8,}", _SLACK, True),
    SecretPattern("slack", r"xapp-\d-[A-Z0-9]{8,}-\d{6,}-[a-z0-9]{32,}", ("xapp-",), True),
)

# Rough frequency (per mille) of characters in ordinary notebook output; lower is rarer.
# Only used to choose which characters to anchor searches on.
_FREQ = {
    " ": 150, "e": 70, "t": 55, "a": 50, "o": 45, "i": 45, "n": 45, "s": 45, "r": 40, "l": 30,
    "c": 25, "d": 25, "h": 20, "u": 20, "p": 20, "m": 18, "\n": 12, ".": 12, "f": 12, "g": 10,
    "y": 8, "b": 8, "w": 7, ",": 7, "_": 6, "-": 6, "v": 5, ":": 5, "/": 5, "=": 4, "'": 4,
    '"': 4, "k": 4, "(": 4, ")": 4, "[": 4, "]": 4, "{": 4, "}": 4, "\t": 4, "x": 3, "<": 2, ">": 2,
    "*": 2, "#": 2, "+": 2, "%": 2, ";": 2, "|": 2, "\\": 2, "j": 1, "q": 1, "z": 1,
}
for _d in string.digits:
    _FREQ[_d] = 12
for _u in string.ascii_uppercase:
    _FREQ[_u] = 3


def _weight(ch: str) -> float:
    return _FREQ.get(ch, 0.5)


# A build in a server's worker thread holds the GIL for Python work; CPython hands it to the
# event loop's thread only every 5 ms (the switch interval), and a request waits for it at every
# socket call. So such a build steps aside briefly after each millisecond of work, which keeps
# what it costs the event loop per hand-over under a millisecond however large the vault is.
_BREATHE_EVERY = 0.001  # seconds of work between pauses
_BREATHE_FOR = 0.0002  # a pause long enough for a waiting thread to take the GIL
_breathing = threading.local()


def _breathe() -> None:
    """Called from build loops; a no-op unless the build runs with ``breathing`` on."""
    last = getattr(_breathing, "last", None)
    if last is None:
        return
    now = time.perf_counter()
    if now - last >= _BREATHE_EVERY:
        time.sleep(_BREATHE_FOR)
        _breathing.last = time.perf_counter()


class _Span(NamedTuple):
    start: int
    end: int
    rank: int  # 0 = known value, 1 = pattern
    label: str
    marker: str


def _better(a: _Span, b: _Span) -> _Span:
    """The member whose label a merged redaction carries: known first, then longest, then earliest."""
    ka = (a.rank, -(a.end - a.start), a.start)
    kb = (b.rank, -(b.end - b.start), b.start)
    return a if ka <= kb else b


def _merge(spans: list[_Span]) -> list[_Span]:
    """Overlapping matches become one span covering all of them."""
    if len(spans) < 2:
        return spans
    spans.sort(key=lambda s: (s.start, -s.end))
    merged: list[_Span] = []
    for s in spans:
        if merged and s.start < merged[-1].end:
            last = merged[-1]
            best = _better(last, s)
            merged[-1] = _Span(last.start, max(last.end, s.end), best.rank, best.label, best.marker)
        else:
            merged.append(s)
    return merged


def _render(text: str, spans: Iterable[_Span], lo: int = 0, hi: int | None = None) -> str:
    hi = len(text) if hi is None else hi
    parts, pos = [], lo
    for s in spans:
        parts.append(text[pos:s.start])
        parts.append(s.marker)
        pos = s.end
    parts.append(text[pos:hi])
    return "".join(parts)


def _literal_prefix(regex: str) -> str:
    """The literal characters a regex always starts with ('' when unknown)."""
    try:
        from re import _parser as sre_parse  # Python >= 3.11
    except ImportError:  # pragma: no cover
        import sre_parse  # type: ignore[no-redef]
    try:
        parsed = sre_parse.parse(regex)
    except (re.error, ValueError, TypeError, OverflowError):  # pragma: no cover - compiled and reported by the caller
        return ""
    if parsed.state.flags & re.IGNORECASE:
        return ""
    out = []
    for op, av in parsed.data:
        if op is not sre_parse.LITERAL:
            break
        out.append(chr(av))
    return "".join(out)


def _min_width(regex: str) -> int:
    """The fewest characters a match of regex can have (0 when unknown)."""
    try:
        from re import _parser as sre_parse  # Python >= 3.11
    except ImportError:  # pragma: no cover
        import sre_parse  # type: ignore[no-redef]
    try:
        return int(sre_parse.parse(regex).getwidth()[0])
    except (re.error, ValueError, TypeError, OverflowError):  # pragma: no cover
        return 0


def _char_class(chars: Iterable[str]) -> str:
    chars = sorted(set(chars))
    if len(chars) == 1:
        return re.escape(chars[0])
    return "[" + "".join(re.escape(c) for c in chars) + "]"


def _build_locators(prefixes: Iterable[str]) -> list[tuple[re.Pattern[str], tuple[tuple[int, int, frozenset], ...]]]:
    """Few regexes that together find every occurrence of every prefix.

    Prefixes sharing a character are found by one regex starting with that literal
    character (the regex engine's fast path), with fixed-width look-arounds for the rest;
    each hit is verified by the caller (``(offset of the character, length, prefixes)``
    groups), so the look-arounds may be loose.
    """
    remaining = set(prefixes)
    locators = []
    while remaining:
        counts = Counter(c for p in remaining for c in set(p))
        offsets = Counter()
        for p in remaining:
            for c in set(p):
                offsets[c] += p.index(c)
        # Most prefixes covered, then the rarest, then nearest the start (a cheaper regex).
        anchor = max(counts, key=lambda c: (counts[c], -_weight(c), -offsets[c], c))
        members = sorted(p for p in remaining if anchor in p)
        remaining.difference_update(members)
        shapes: dict[tuple[int, int], list[str]] = defaultdict(list)
        for p in members:
            i = p.index(anchor)
            shapes[(i, len(p) - i - 1)].append(p)
        alternatives = []
        for (before, after), group in sorted(shapes.items()):
            alt = ""
            if before:
                alt += "(?<=" + "".join(_char_class(p[k] for p in group) for k in range(before)) + re.escape(anchor) + ")"
            if after:
                alt += "(?=" + "".join(_char_class(p[before + 1 + k] for p in group) for k in range(after)) + ")"
            alternatives.append(alt)
        regex = re.escape(anchor)
        if "" not in alternatives:
            regex += "(?:" + "|".join(alternatives) + ")"
        by_shape: dict[tuple[int, int], set[str]] = defaultdict(set)
        for p in members:
            by_shape[(p.index(anchor), len(p))].add(p)
        locators.append((re.compile(regex), tuple((o, n, frozenset(ps)) for (o, n), ps in sorted(by_shape.items()))))
    return locators


_ANCHORS = (3, 4, 5)  # sampled characters per anchor (each is tried)
_QUICK_ANCHOR = 4  # the one tried by a quick build
_STEPS_TRIED = 2  # the largest sampling steps an anchor length allows, tried in turn
_MAX_STEP = 8
# A DFA scans the sample fastest, at about 2 KB of memory per anchor; beyond this many anchors
# (large vaults, the derived forms) the compact automaton's memory is worth its slower scan.
_DFA_MAX_ANCHORS = 2500


class _Plan(NamedTuple):
    step: int
    anchor: int
    keys: list[bytes]  # the anchors, as latin-1 bytes of sampled characters
    entries: list[tuple[tuple[str, str, int, int], ...]]  # per anchor: (value, name, phase, offset in sample)


def _plan(values: dict[str, str], k: int, anchor: int) -> _Plan:
    """Anchors for sampling every k-th character: for each value and each phase r (where the
    value starts relative to the sampled positions), the rarest `anchor` consecutive sampled
    characters, so ordinary text seldom looks like an anchor. Needs k * (anchor + 1) <= len + 1
    for every value, so every phase has that many sampled characters."""
    by_key: dict[bytes, list[tuple[str, str, int, int]]] = defaultdict(list)
    for value, name in values.items():
        _breathe()
        for r in range(k):
            chars = value[r::k]
            rarity = [math.log(_weight(c)) for c in chars]
            window = sum(rarity[:anchor])
            best_j, best = 0, window
            for j in range(1, len(chars) - anchor + 1):
                window += rarity[j + anchor - 1] - rarity[j - 1]
                if window < best:
                    best_j, best = j, window
            key = chars[best_j:best_j + anchor].encode("latin-1", "replace")  # as the text is sampled
            by_key[key].append((value, name, r, best_j))
    return _Plan(k, anchor, list(by_key), [tuple(e) for e in by_key.values()])



_CALIBRATION: list[str] = []


def _calibration_text() -> str:
    """About 128 KB of ordinary notebook output (log lines, tables, hashes, ids, base64,
    paths, upper-case constants), always the same, to time matching plans on."""
    if _CALIBRATION:
        return _CALIBRATION[0]
    import random

    rng = random.Random(20240601)  # noqa: S311 - reproducible benchmark-like sample text, not secrets
    hexd, b64 = "0123456789abcdef", string.ascii_letters + string.digits + "+/"
    words = ("the of and to in is for on with model data train test loss accuracy epoch batch value error "
             "warning info request response client server file path line index frame shape dtype float64 "
             "DataFrame Series None True False INFO DEBUG WARNING ERROR GET POST HTTP JSON CSV").split()
    parts = []
    size = 0
    while size < 128_000:
        _breathe()
        kind = rng.randrange(7)
        if kind == 0:
            line = " ".join(rng.choices(words, k=rng.randrange(6, 16))) + "."
        elif kind == 1:
            line = "  ".join(f"{rng.uniform(-100, 100):10.4f}" for _ in range(6))
        elif kind == 2:
            line = f"commit {''.join(rng.choices(hexd, k=40))} sha256:{''.join(rng.choices(hexd, k=64))}"
        elif kind == 3:
            line = "-".join("".join(rng.choices(hexd, k=n)) for n in (8, 4, 4, 4, 12)) + f" id={rng.getrandbits(64):x}"
        elif kind == 4:
            line = "".join(rng.choices(b64, k=rng.randrange(40, 120)))
        elif kind == 5:
            line = (f"/home/user/project/src/{rng.choice(words)}_{rng.randrange(100)}.py:{rng.randrange(999)}: "
                    f"{rng.choice(words).upper()}")
        else:
            line = (f"2024-06-01 12:{rng.randrange(60):02d}:{rng.randrange(60):02d} {rng.choice(words).upper()} "
                    f"[{rng.choice(words)}] " + " ".join(rng.choices(words, k=8)))
        parts.append(line + "\n")
        size += len(line) + 1
    _CALIBRATION.append("".join(parts))
    return _CALIBRATION[0]


class _SampledAutomaton:
    """Finds known values by Aho–Corasick over every k-th character of the text (see module doc)."""

    def __init__(self, values: dict[str, str], quick: bool = False):
        """`quick`: one plan (the largest step for one anchor length), not timed: for the delta
        layer, rebuilt often and small, where the build's cost matters more than the scan's."""
        shortest = min(len(v) for v in values)
        self.min_len = shortest
        self.max_len = max(len(v) for v in values)
        candidates = []  # (step, anchor length)
        for anchor in (_QUICK_ANCHOR,) if quick else _ANCHORS:
            largest = min(_MAX_STEP, (shortest + 1) // (anchor + 1))
            candidates += [(k, anchor) for k in range(largest, max(0, largest - (1 if quick else _STEPS_TRIED)), -1)]
        if not candidates:  # only if MIN_KNOWN_LENGTH were lowered below the anchor lengths
            candidates.append((1, shortest))
        # How often anchors of hex or upper-case values hit ordinary output is hard to estimate,
        # so the candidates are timed on a sample of ordinary output (a few ms each, in the build),
        # one at a time, and the winner is built again last: what the engine keeps is then not
        # scattered among the freed candidates (which would keep their memory mapped).
        if len(candidates) > 1:
            sample = _calibration_text()
            timed = []
            for k, anchor in candidates:
                self._use(_plan(values, k, anchor))
                timed.append((min(self._time(sample) for _ in range(2)), k, anchor))
                self.entries = self.automaton = None
            _, k, anchor = min(timed)
            candidates = [(k, anchor)]
        self._use(_plan(values, *candidates[0]))

    def _use(self, plan: _Plan) -> None:
        self.step = plan.step
        self.anchor = plan.anchor
        self.entries = plan.entries
        kind = (ahocorasick_rs.Implementation.DFA if len(plan.keys) <= _DFA_MAX_ANCHORS
                else ahocorasick_rs.Implementation.ContiguousNFA)
        self.automaton = ahocorasick_rs.BytesAhoCorasick(plan.keys, implementation=kind)  # builds without the GIL

    def _time(self, sample: str) -> float:
        start = time.perf_counter()
        self.find(sample, [], _known_span)
        return time.perf_counter() - start

    def find(self, text: str, out: list[_Span], make, data: bytes | None = None) -> None:
        """`data`: text as latin-1 bytes (``_latin1``), when the caller has it already."""
        if len(text) < self.min_len:
            return
        k = self.step
        if data is None:
            data = _latin1(text)
        entries = self.entries
        startswith = text.startswith
        for index, start, _ in self.automaton.find_matches_as_indexes(data[::k] if k > 1 else data, overlapping=True):
            for value, name, r, j in entries[index]:
                p = (start - j) * k - r
                if p >= 0 and startswith(value, p):
                    out.append(make(p, value, name))


def _latin1(text: str) -> bytes:
    """One byte per character (others become ``?``), so offsets in the bytes are offsets in text;
    a copy for text that is ASCII or latin-1 already."""
    return text.encode("latin-1", "replace")


class _RegexKnown:
    """Fallback without ahocorasick-rs: one alternation, tried at every position (slow)."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.min_len = min(len(v) for v in values)
        alternation = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
        self.regex = re.compile(f"(?=({alternation}))")  # a look-ahead, so overlapping values are all seen
        # The regex reports the longest value at a position; the shorter ones starting there are
        # its prefixes, reported too (the longer one may have been forgotten since, see `hidden`).
        lengths = sorted({len(v) for v in values})
        self.shorter = {v: [v[:n] for n in lengths if n < len(v) and v[:n] in values] for v in values}

    def find(self, text: str, out: list[_Span], make, data: bytes | None = None) -> None:
        if len(text) < self.min_len:
            return
        for m in self.regex.finditer(text):
            value = m.group(1)
            out.append(make(m.start(), value, self.values[value]))
            for shorter in self.shorter[value]:
                out.append(make(m.start(), shorter, self.values[shorter]))


def _known_span(p: int, value: str, name: str) -> _Span:
    return _Span(p, p + len(value), 0, name or "known value", f"[REDACTED:{name}]" if name else GENERIC_MARKER)


class _Engine:
    """An immutable snapshot of the known values and patterns, ready to scan."""

    def __init__(self, known: dict[str, str], patterns: list[SecretPattern], use_automaton: bool,
                 quick: bool = False):
        self.known = known
        self.patterns = patterns
        wrapped = []
        for p in patterns:
            _breathe()  # compiling a pattern is Python work too (the first build compiles them all)
            wrapped.append(re.compile(f"(?<![{_TOK}])(?:{p.regex})(?![{_TOK}])"))
        by_prefix: dict[str, list[int]] = defaultdict(list)
        self.unanchored: list[tuple[re.Pattern[str], SecretPattern]] = []
        for i, p in enumerate(patterns):
            prefixes = p.prefixes
            if not prefixes:
                literal = _literal_prefix(p.regex)
                prefixes = (literal,) if len(literal) >= 3 else ()  # shorter ones would not skip much
            if prefixes:
                for prefix in prefixes:
                    by_prefix[prefix].append(i)
            else:
                self.unanchored.append((wrapped[i], p))
        # Locate only minimal prefixes: at each occurrence, try every pattern below it.
        minimal = sorted(p for p in by_prefix if not any(q != p and p.startswith(q) for q in by_prefix))
        self.prefix_patterns: dict[str, tuple[tuple[re.Pattern[str], SecretPattern], ...]] = {}
        for m in minimal:
            idx = sorted({i for p, ids in by_prefix.items() if p.startswith(m) for i in ids})
            self.prefix_patterns[m] = tuple((wrapped[i], patterns[i]) for i in idx)
        self.token_prefixes = tuple(m for m in minimal if all(p.token for _, p in self.prefix_patterns[m]))
        # For streams: a trailing token may become a key if it starts with a prefix or is the start of one.
        self.token_prefix_set = frozenset(self.token_prefixes)
        self.token_prefix_lengths = tuple(sorted({len(m) for m in self.token_prefixes}))
        self.token_prefix_starts = frozenset(m[:i] for m in self.token_prefixes for i in range(1, len(m)))
        # A cheap first test at a prefix occurrence: is the token long enough for any pattern?
        self.prefix_check: dict[str, re.Pattern[str] | None] = {}
        for m in minimal:
            if m in self.token_prefixes:
                width = min(_min_width(p.regex) for _, p in self.prefix_patterns[m])
                self.prefix_check[m] = re.compile(f"[{_TOK}]{{{max(width, len(m))}}}")
            else:
                self.prefix_check[m] = None
        self.line_patterns = bool(self.unanchored) or len(self.token_prefixes) != len(minimal)
        # Known values that start with a prefix are found at its occurrences; others by automaton.
        buckets: dict[str, list[tuple[str, str]]] = defaultdict(list)
        rest: dict[str, str] = {}
        for value, name in known.items():
            prefix = next((m for m in minimal if value.startswith(m) and len(value) >= len(m) + 4), None)
            if prefix is None:
                rest[value] = name
            else:
                buckets[prefix].append((value, name))
        self.buckets: dict[str, tuple[int, dict[str, list[tuple[str, str]]]]] = {}
        for prefix, items in buckets.items():
            width = min(len(prefix) + 8, min(len(v) for v, _ in items))
            table: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for value, name in sorted(items, key=lambda vn: -len(vn[0])):
                table[value[:width]].append((value, name))
            self.buckets[prefix] = (width, dict(table))
        located = sorted(set(self.prefix_patterns) | set(self.buckets))
        self.locators = _build_locators(located)
        self.prefix_finder = None
        if use_automaton and ahocorasick_rs is not None and located:
            # Leftmost-first search of a few literals runs a SIMD prefilter (Teddy) over the bytes:
            # one pass instead of a regex per anchor character. It reports no occurrence that
            # starts inside an earlier one, so those are checked explicitly (`prefix_overlaps`).
            encoded = [_latin1(prefix) for prefix in located]
            self.prefix_finder = ahocorasick_rs.BytesAhoCorasick(encoded, matchkind=ahocorasick_rs.MatchKind.LeftmostFirst)
            self.prefix_list = located
            # (d, other): `other` may start d characters into an occurrence of this one (at d = 0:
            # two prefixes whose non-latin-1 characters both became `?`).
            self.prefix_overlaps = [tuple((d, other) for d in range(len(mine))
                                          for j, (other, theirs) in enumerate(zip(located, encoded, strict=True))
                                          if (d or j != i) and (theirs.startswith(mine[d:]) or mine[d:].startswith(theirs)))
                                    for i, mine in enumerate(encoded)]
        self.rest = None
        if rest:
            self.rest = (_SampledAutomaton(rest, quick) if use_automaton and ahocorasick_rs is not None
                         else _RegexKnown(rest))
        self.max_known = max((len(v) for v in known), default=0)
        self.has_whitespace = any(any(c.isspace() for c in v) for v in known)
        self._stream_index = None

    # -- scanning
    def spans(self, text: str, hidden: Container[str] = frozenset(), data: bytes | None = None) -> list[_Span]:
        """Every match in text, overlaps merged; known values (or forms) in `hidden` are skipped.
        `data`: text as latin-1 bytes, when the caller has them (raw message bytes)."""
        out: list[_Span] = []
        if not text:
            return out
        finder = self.prefix_finder
        if data is None and (finder is not None or self.rest is not None):
            data = _latin1(text)
        if finder is not None:
            located, overlaps = self.prefix_list, self.prefix_overlaps
            startswith = text.startswith
            for index, s, _ in finder.find_matches_as_indexes(data):
                prefix = located[index]
                if startswith(prefix, s):
                    self._at_prefix(text, s, prefix, out)
                for d, other in overlaps[index]:
                    if startswith(other, s + d):
                        self._at_prefix(text, s + d, other, out)
        else:
            for regex, shapes in self.locators:
                for m in regex.finditer(text):
                    i = m.start()
                    for offset, length, prefixes in shapes:
                        s = i - offset
                        if s >= 0:
                            prefix = text[s:s + length]
                            if prefix in prefixes:
                                self._at_prefix(text, s, prefix, out)
        for regex, pattern in self.unanchored:
            for m in regex.finditer(text):
                if m.end() > m.start():
                    out.append(_Span(m.start(), m.end(), 1, pattern.label, GENERIC_MARKER))
        if self.rest is not None:
            self.rest.find(text, out, _known_span, data)
        if hidden and out:  # forgotten since this engine was built: a set lookup per hit, no rebuild
            out = [sp for sp in out if sp.rank or text[sp.start:sp.end] not in hidden]
        return _merge(out)

    def _at_prefix(self, text: str, s: int, prefix: str, out: list[_Span]) -> None:
        bucket = self.buckets.get(prefix)
        if bucket is not None:
            width, table = bucket
            for value, name in table.get(text[s:s + width], ()):
                if text.startswith(value, s):
                    out.append(_known_span(s, value, name))
        patterns = self.prefix_patterns.get(prefix)
        if not patterns or (s and text[s - 1] in TOKEN_CHARS):
            return  # inside a longer identifier: no pattern can start here
        check = self.prefix_check[prefix]
        if check is not None and check.match(text, s) is None:
            return  # too short a token for any of them (`sk-learn`, `task-12345`)
        for regex, pattern in patterns:
            m = regex.match(text, s)
            if m and m.end() > s:
                out.append(_Span(s, m.end(), 1, pattern.label, GENERIC_MARKER))
                return  # a pattern match is the whole token: the others would give the same span

    # -- streaming support
    def _index(self):
        if self._stream_index is None:
            values = tuple(sorted(self.known))
            heads = frozenset(v[:3] for v in values)
            finder = None
            if ahocorasick_rs is not None:
                finder = ahocorasick_rs.AhoCorasick(sorted(heads))
            self._stream_index = (values, heads, frozenset(v[:2] for v in values), frozenset(v[0] for v in values),
                                  "".join(sorted({c for v in values for c in v})), finder)
        return self._stream_index

    def _known_hold(self, buf: str, start: int) -> int | None:
        """The first i >= start where buf[i:] is a proper prefix of a known value."""
        values, heads, heads2, firsts, alphabet, finder = self._index()
        n = len(buf)
        start = max(start, len(buf.rstrip(alphabet)))  # values are made of their alphabet only
        if start >= n:
            return None
        if finder is not None and n - start > 24:
            candidates = sorted({start + at for _, at, _ in finder.find_matches_as_indexes(buf[start:], overlapping=True)})
        else:  # a short trailing run: cheaper than starting the automaton
            candidates = [i for i in range(start, n - 2) if buf[i:i + 3] in heads]
        if start <= n - 2 and buf[n - 2:] in heads2:
            candidates.append(n - 2)
        if buf[n - 1] in firsts:
            candidates.append(n - 1)
        for i in candidates:
            tail = buf[i:]
            j = bisect.bisect_left(values, tail)
            if j < len(values) and values[j] == tail:
                j += 1  # a complete value: held only if a longer one continues it
            if j < len(values) and values[j].startswith(tail):
                return i
        return None

    def _starts_with_prefix(self, run: str) -> bool:
        prefixes = self.token_prefix_set
        for width in self.token_prefix_lengths:
            if run[:width] in prefixes:
                return True
        return False

    def hold_from(self, buf: str, context: str, window: int) -> int:
        """Where the part of buf that could still become (part of) a secret begins."""
        n = len(buf)
        hold = n
        floor = max(0, n - window)
        if self.known:
            found = self._known_hold(buf, max(n - self.max_known + 1, floor))
            if found is not None:
                hold = found
        if self.line_patterns:
            nl = max(buf.rfind("\n"), buf.rfind("\r"))
            hold = min(hold, max(nl + 1, floor))
        elif self.token_prefixes:
            t = len(buf.rstrip(_TOKEN_STR))
            continued = t == 0 and context and context[-1] in TOKEN_CHARS  # the token began earlier
            run = buf[t:]
            if t < hold and not continued and (run in self.token_prefix_starts or self._starts_with_prefix(run)):
                hold = min(hold, max(t, floor))
        return hold


# -- encoded forms: text that renders (or decodes) back to a secret

# One token of an encoding a browser or a decoder turns back into characters: HTML character
# references (decimal, hex, named), percent-encoding, \u / \U / \x escapes, HTML tags and
# invisible characters (which render as nothing, so they can split a value on screen).
_ENCODED_TOKEN = re.compile(
    r"&#[0-9]{1,7};?|&#[xX][0-9a-fA-F]{1,6};?|&[A-Za-z][A-Za-z0-9]{1,31};"
    r"|%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}|\\x[0-9A-Fa-f]{2}"
    r"|<!--.{0,2000}?-->|</?[A-Za-z][^<>]{0,2000}>|[\u00ad\u200b-\u200f\u2060\ufeff]",
    re.S,
)
_DECODE_ROUNDS = 3  # `&amp;#115;` needs two; a third is cheap insurance


_QUICK_STRIP = re.compile(r"<!--.{0,2000}?-->|</?[A-Za-z][^<>]{0,2000}>|[\u00ad\u200b-\u200f\u2060\ufeff]", re.S)
_QUICK_CODED = re.compile(r"&#[0-9]{1,7};?|&#[xX][0-9a-fA-F]{1,6};?|&[A-Za-z][A-Za-z0-9]{1,31};|%[0-9A-Fa-f]{2}"
                          r"|\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}|\\x[0-9A-Fa-f]{2}")


def _quick_token(m: re.Match) -> str:
    decoded = _decode_token(m.group())
    return m.group() if decoded is None else decoded


def _decode_quick(text: str) -> str:
    """One round of the decodings of `_ENCODED_TOKEN`, by substitution (no position map)."""
    return _QUICK_CODED.sub(_quick_token, _QUICK_STRIP.sub("", text))


def _decode_token(token: str) -> str | None:
    first = token[0]
    try:
        if first == "&":
            if token[1] == "#":
                body = token[2:].rstrip(";")
                code = int(body[1:], 16) if body[:1] in "xX" else int(body)
                return chr(code) if 0 < code < 0x110000 else None
            import html.entities
            return html.entities.html5.get(token[1:])
        if first == "%":
            return chr(int(token[1:], 16))
        if first == "\\":
            code = int(token[2:], 16)
            return chr(code) if code < 0x110000 else None
    except ValueError:
        return None
    return ""  # a tag, a comment or an invisible character renders as nothing


def _decode_once(text: str) -> tuple[str, list[int], list[int]] | None:
    """Decoded text and, per decoded character, where it came from: [starts[i], ends[i])."""
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for m in _ENCODED_TOKEN.finditer(text):
        decoded = _decode_token(m.group())
        if decoded is None:
            continue
        a, b = m.span()
        if a > pos:
            pieces.append(text[pos:a])
            starts.extend(range(pos, a))
            ends.extend(range(pos + 1, a + 1))
        pieces.append(decoded)
        starts.extend([a] * len(decoded))
        ends.extend([b] * len(decoded))
        pos = b
    if not pieces:
        return None
    n = len(text)
    if pos < n:
        pieces.append(text[pos:])
        starts.extend(range(pos, n))
        ends.extend(range(pos + 1, n + 1))
    return "".join(pieces), starts, ends


def decoded_views(text: str) -> list[tuple[str, list[int], list[int]]]:
    """Every successive decoding of text (up to three rounds), each with its map to text."""
    views = []
    current, starts, ends = text, None, None
    for _ in range(_DECODE_ROUNDS):
        step = _decode_once(current)
        if step is None:
            break
        decoded, s2, e2 = step
        if starts is not None:  # compose with the earlier rounds' maps
            s2 = [starts[i] for i in s2]
            e2 = [ends[i - 1] for i in e2]
        views.append((decoded, s2, e2))
        current, starts, ends = decoded, s2, e2
    return views


def base64_cores(value: str) -> set[str]:
    """The base64 text every base64 encoding of value contains, at each of the three byte
    alignments, standard and URL-safe: finding a core finds the value inside any base64
    payload (an image, a data: URL, a widget buffer) without decoding it."""
    import base64

    raw = value.encode("utf-8")
    cores = set()
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode("ascii").rstrip("=")
        first = 4 if pad else 0  # the first group mixes in bytes before the value
        last = len(encoded) if (pad + len(raw)) % 3 == 0 else (pad + len(raw)) // 3 * 4  # the last group, after
        core = encoded[first:last]
        if len(core) >= MIN_KNOWN_LENGTH:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))
    return cores


def _derived_forms(known: dict[str, str]) -> dict[str, str]:
    """Encodings of the known values that appear literally in transport and files: base64
    cores, the JSON-escaped form, UTF-8 bytes read as latin-1 (the raw-bytes prefilter)."""
    import json

    out: dict[str, str] = {}
    for value, name in known.items():
        _breathe()
        for core in base64_cores(value):
            out.setdefault(core, name)
        escaped = json.dumps(value, ensure_ascii=False)[1:-1]
        for form in (escaped, value.encode("utf-8").decode("latin-1"), escaped.encode("utf-8").decode("latin-1")):
            if form != value:
                out.setdefault(form, name)
    return out


class _EngineSet:
    """What one build produces: the main engine, and one that also knows the derived
    (encoded) forms of the values, so a deep scan is one pass; that one is built with the
    main one (``prepare``) or, for scrubbers that build on scrub, on first use."""

    def __init__(self, main: _Engine, derived: _Engine | None, generation: int,
                 known: dict[str, str], patterns: list[SecretPattern], use_automaton: bool, quick: bool = False):
        self.main = main
        self._quick = quick
        self._derived = derived
        self.generation = generation
        self._known = known
        self._patterns = patterns
        self._use_automaton = use_automaton
        self._lock = threading.Lock()

    @property
    def derived(self) -> _Engine:
        if self._derived is None:
            with self._lock:
                if self._derived is None:
                    self._derived = _Engine({**_derived_forms(self._known), **self._known}, self._patterns,
                                            self._use_automaton, self._quick)
        return self._derived


# When a build covers everything again: once the values changed since the last full build
# (added, renamed or forgotten) exceed both of these. Between full builds only those values are
# built (the delta layer), so each value is built a bounded number of times on average.
_DELTA_MIN = 128
_DELTA_FRACTION = 0.5


class _Layers(NamedTuple):
    """The installed matchers, swapped as one reference: `base` over every value known at its
    build, `delta` over the values added or renamed since (no patterns: base runs those)."""

    base: _EngineSet
    delta: _EngineSet | None
    generation: int

    def engines(self) -> tuple[_EngineSet, ...]:
        return (self.base,) if self.delta is None else (self.delta, self.base)

    def built(self, value: str) -> bool:
        return value in self.base._known or (self.delta is not None and value in self.delta._known)


def _forms(value: str) -> frozenset[str]:
    """The value and every encoded form the derived engines know it by."""
    return frozenset(_derived_forms({value: ""})) | {value}


class Scrubber:
    """Redacts known secret values (by name) and anything matching a secret pattern.

    ``extra_patterns``: more regexes (or ``SecretPattern``) to redact, e.g. from config;
    like the built-ins they only match whole tokens. ``use_automaton=False`` forces the
    regex fallback for known values (what happens when ahocorasick-rs is not installed).

    Known values change with ``add_known`` / ``forget`` / ``replace_known``, each costing
    O(that value) on the caller's thread:

    - an added value is found at once by a plain search over the values added since the
      last build (the pending list), until a build takes it in;
    - a forgotten value is no longer redacted at once: its forms go into a hidden set that
      scans consult for each hit (a set lookup), until a build leaves it out.

    Builds are layered: a full build (base) of every value, then builds of only the values
    changed since (delta), until those exceed half the base; so a value is built a bounded
    number of times on average, not once per write. Each build is an immutable snapshot
    swapped in atomically:

    - ``build_on_scrub=True`` (kernel, CLI): the next scrub after a change builds.
    - ``build_on_scrub=False`` (a server's event loop): scrubbing never builds; the owner
      calls ``await rebuild_async()`` (a worker thread that steps aside for the event loop
      every millisecond).
    """

    def __init__(self, patterns: Iterable[SecretPattern] = DEFAULT_PATTERNS, *,
                 extra_patterns: Iterable[str | SecretPattern] = (), use_automaton: bool = True,
                 build_on_scrub: bool = True):
        extra = [p if isinstance(p, SecretPattern) else SecretPattern("custom", p) for p in extra_patterns]
        self._patterns = list(patterns) + extra
        for p in self._patterns:
            re.compile(p.regex)  # fail early on a bad configured pattern
        self._use_automaton = use_automaton
        self.build_on_scrub = build_on_scrub
        self._known: dict[str, str] = {}  # value -> name
        self._pending: dict[str, str] = {}  # added since the installed engines were built
        self._by_name: dict[str, set[str]] = {}  # name -> its values, so forgetting a name costs its values only
        self._holders: dict[str, set[str]] = {}  # value -> every name holding it (one value may serve two names)
        self._hidden: dict[str, frozenset[str]] = {}  # forgotten values the installed engines may know -> forms
        self._hidden_forms: dict[str, int] = {}  # every form of those -> how many of them have it
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._generation = 0  # bumped by every change
        empty = _EngineSet(_Engine({}, self._patterns, use_automaton), None, 0, {}, self._patterns, use_automaton)
        self._layers = _Layers(empty, None, 0)
        self._rebuilding = None  # the asyncio task of a rebuild in flight

    # -- known values
    def add_known(self, value: str, name: str | None = None) -> None:
        if not isinstance(value, str) or len(value.strip()) < MIN_KNOWN_LENGTH:
            return
        with self._lock:
            label = name or self._known.get(value, "")
            holders = self._holders.setdefault(value, set())
            holders.add(label)
            self._by_name.setdefault(label, set()).add(value)
            if self._known.get(value) == label:
                return
            self._known[value] = label  # redactions are labelled with the newest name
            self._pending[value] = label
            self._unhide(value)
            self._generation += 1

    def _release(self, value: str, name: str) -> bool:
        """`name` no longer holds `value`; the value is forgotten once no name holds it (two
        credentials may share one value: deleting one must not unredact the other)."""
        holders = self._holders.get(value)
        if holders is None:
            return False
        holders.discard(name)
        self._unname(value, name)
        if holders:
            if self._known.get(value) == name:
                self._known[value] = next(iter(sorted(holders)))
            return False
        self._forget_locked(value)
        return True

    def _unname(self, value: str, name: str) -> None:
        values = self._by_name.get(name)
        if values is not None:
            values.discard(value)
            if not values:
                del self._by_name[name]

    def _hide(self, value: str) -> None:
        if value not in self._hidden:
            forms = self._hidden[value] = _forms(value)
            for form in forms:
                self._hidden_forms[form] = self._hidden_forms.get(form, 0) + 1

    def _unhide(self, value: str) -> None:
        forms = self._hidden.pop(value, None)
        for form in forms or ():
            left = self._hidden_forms[form] - 1
            if left:
                self._hidden_forms[form] = left
            else:
                del self._hidden_forms[form]

    def _forget_locked(self, value: str) -> None:
        self._known.pop(value)
        for name in self._holders.pop(value, ()):
            self._unname(value, name)
        self._pending.pop(value, None)
        if self._layers.built(value) or self._rebuilding_now:
            self._hide(value)

    def forget(self, value: str) -> None:
        """Stop redacting value, whoever holds it."""
        with self._lock:
            if value in self._known:
                self._forget_locked(value)
                self._generation += 1

    def forget_name(self, name: str) -> int:
        """`name` was deleted: forget its values that no other name still holds. Returns how many."""
        with self._lock:
            forgotten = sum(self._release(value, name) for value in list(self._by_name.get(name, ())))
            if forgotten:
                self._generation += 1
            return forgotten

    def replace_known(self, old: str | None, new: str, name: str | None = None) -> None:
        """A credential's value changed: redact the new one, and release the old one (by value, or,
        when old is None, every other value known under the same name) unless another name holds it."""
        with self._lock:
            stale = ([old] if old is not None else list(self._by_name.get(name or "", ()))) if name else []
            changed = sum(self._release(value, name) for value in stale if value != new) if name else 0
            if changed:
                self._generation += 1
        if old is not None and old != new and not name:
            self.forget(old)
        self.add_known(new, name)

    @property
    def known_count(self) -> int:
        return len(self._known)

    @property
    def pending_count(self) -> int:
        """Values added since the installed engines were built (found by a plain search meanwhile)."""
        return len(self._pending)

    @property
    def generation(self) -> int:
        """Bumped by every change to the known values."""
        return self._generation

    def known_items(self) -> list[tuple[str, str]]:
        """(value, name) of every known value: for server-side work such as history fingerprints."""
        with self._lock:
            return list(self._known.items())

    @property
    def dirty(self) -> bool:
        """True when the installed matcher predates the latest change."""
        return self._layers.generation != self._generation

    @property
    def uses_automaton(self) -> bool:
        """True when known values are matched by Aho–Corasick (ahocorasick-rs is installed)."""
        return self._use_automaton and ahocorasick_rs is not None

    @property
    def known_has_whitespace(self) -> bool:
        return (any(e.main.has_whitespace for e in self._current_layers().engines())
                or any(any(c.isspace() for c in v) for v in list(self._pending)))

    @property
    def window(self) -> int:
        """The most trailing characters a stream ever holds back (no secret is longer)."""
        return self._window(self._current_layers())

    def _window(self, layers: _Layers) -> int:
        longest = layers.base.main.max_known
        if layers.delta is not None:
            longest = max(longest, layers.delta.main.max_known)
        pending = self._pending
        if pending and not self.build_on_scrub:
            longest = max(longest, max(map(len, list(pending))))
        return max(256, longest)

    # -- building
    _rebuilding_now = False  # a build has taken its snapshot and is not installed yet

    def prepare(self, *, derived: bool = True, full: bool | None = None) -> _Layers:
        """Build matchers for the current values (slow: call it in a worker thread); pass the
        result to ``install``. Safe to call while other threads scrub. `full`: build every
        value (True), only those changed since the last full build (False), or decide (None)."""
        with self._lock:
            known = dict(self._known)
            generation = self._generation
            base = self._layers.base
            self._rebuilding_now = True
        base_known = base._known
        changed = {v: n for v, n in known.items() if base_known.get(v) != n}
        gone = len(base_known) - (len(known) - len(changed))
        if full is None:
            full = not base_known or len(changed) + gone > max(_DELTA_MIN, _DELTA_FRACTION * len(base_known))
        # A build allocates millions of short-lived objects (freed by reference counting);
        # left on, the cycle collector would run full collections meanwhile, and those stop
        # every thread, the event loop included, for the whole process's heap.
        collecting = gc.isenabled()
        gc.disable()
        if not self.build_on_scrub:
            _breathing.last = time.perf_counter()
        try:
            if full:
                layers = _Layers(self._engine_set(known, self._patterns, generation, derived), None, generation)
            else:
                delta = self._engine_set(changed, [], generation, derived, quick=True) if changed else None
                layers = _Layers(base, delta, generation)
        finally:
            _breathing.last = None
            if collecting:
                gc.enable()
        return layers

    def _engine_set(self, known: dict[str, str], patterns: list[SecretPattern], generation: int,
                    derived: bool, quick: bool = False) -> _EngineSet:
        engines = _EngineSet(_Engine(known, patterns, self._use_automaton, quick), None, generation, known, patterns,
                             self._use_automaton, quick)
        if derived:
            engines.derived  # noqa: B018 - built here, off the caller's event loop
        return engines

    def install(self, layers: _Layers) -> bool:
        """Swap in what ``prepare`` built, unless something newer is installed already."""
        with self._lock:
            self._rebuilding_now = False
            current = self._layers
            if layers.generation < current.generation or (
                    layers.delta is not None and layers.base is not current.base
                    and layers.base.generation < current.base.generation):
                return False
            self._layers = layers
            if layers.generation == self._generation:
                self._pending = {}
            # Forgotten values the new matchers no longer know need no hiding any more.
            for value in [v for v in self._hidden if not layers.built(v)]:
                self._unhide(value)
            return True

    def rebuild(self, *, full: bool | None = None) -> None:
        with self._build_lock:
            if self.dirty or full:
                self.install(self.prepare(derived=not self.build_on_scrub, full=full))

    async def rebuild_async(self) -> None:
        """Rebuild in a worker thread and swap atomically; the event loop never pays the build.
        Concurrent callers share one build; a change made during it triggers one more."""
        import asyncio

        while self.dirty:
            task = self._rebuilding
            if task is None or task.done():
                task = self._rebuilding = asyncio.ensure_future(asyncio.to_thread(self.rebuild))
            await asyncio.shield(task)

    def _current(self) -> _Engine:
        return self._current_layers().base.main

    def _current_layers(self) -> _Layers:
        if self.build_on_scrub and self.dirty:
            self.rebuild()
        return self._layers

    def _layer_hold(self, buf: str, layers: _Layers) -> int:
        """Where a trailing proper prefix of a value the base engine does not know starts in
        `buf` (len(buf) when none): values of the delta layer and pending ones."""
        cut = len(buf)
        if layers.delta is not None:
            delta = layers.delta.main
            found = delta._known_hold(buf, max(0, len(buf) - delta.max_known + 1))
            if found is not None:
                cut = found
        pending = self._pending
        if not pending or self.build_on_scrub:
            return cut
        for value in list(pending):
            first, start = value[:1], max(0, len(buf) - len(value) + 1)
            at = buf.find(first, start)
            while at >= 0 and at < cut:
                if value.startswith(buf[at:]):
                    cut = at
                    break
                at = buf.find(first, at + 1)
        return cut

    def _pending_spans(self, text: str) -> list[_Span]:
        pending = self._pending
        if not pending or self.build_on_scrub:
            return []
        out = []
        for value, name in list(pending.items()):
            i = text.find(value)
            while i >= 0:
                out.append(_known_span(i, value, name))
                i = text.find(value, i + 1)
        return out

    def _layer_spans(self, text: str, layers: _Layers, derived: bool, data: bytes | None = None) -> list[_Span]:
        """Matches of every layer and the pending values, merged; the newest layer first, so a
        renamed value is labelled by its new name."""
        hidden = self._hidden_forms
        if layers.delta is None:
            spans = (layers.base.derived if derived else layers.base.main).spans(text, hidden, data)
            extra = self._pending_spans(text)
            return _merge(spans + extra) if extra else spans
        spans = []
        for engines in layers.engines():
            spans += (engines.derived if derived else engines.main).spans(text, hidden, data)
        return _merge(self._pending_spans(text) + spans)

    def _spans(self, text: str) -> list[_Span]:
        return self._layer_spans(text, self._current_layers(), False)

    # -- scrubbing
    def scrub(self, text: str) -> str:
        if not text:
            return text
        spans = self._spans(text)
        return _render(text, spans) if spans else text

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, label) of every secret in text; labels never include the value."""
        if not text:
            return []
        return [(s.start, s.end, s.label) for s in self._spans(text)]

    def contains_secret(self, text: str) -> bool:
        return bool(text) and bool(self._spans(text))

    # -- encoded forms (outputs a browser renders, payloads a reader decodes)
    def _deep_spans(self, text: str) -> list[_Span]:
        layers = self._current_layers()
        spans = self._layer_spans(text, layers, True)
        if not _ENCODED_TOKEN.search(text):
            return spans
        # First a quick look (the decoding done by regex substitution, no position maps: HTML
        # outputs are full of tags); the exact mapping back to the text only when it finds one.
        decoded_hit = None
        current = text
        for _ in range(_DECODE_ROUNDS):
            decoded = _decode_quick(current)
            if decoded == current:
                break
            found = self._layer_spans(decoded, layers, False)
            if found:
                decoded_hit = found[0]
                break
            current = decoded
        if decoded_hit is None:
            return spans
        mapped = []
        for decoded, starts, ends in decoded_views(text):
            for s in self._layer_spans(decoded, layers, False):
                mapped.append(s._replace(start=starts[s.start], end=ends[s.end - 1]))
        if not mapped:  # the two decoders disagree: withhold the whole text rather than guess
            mapped.append(_Span(0, len(text), decoded_hit.rank, decoded_hit.label, decoded_hit.marker))
        return _merge(spans + mapped)

    def find_deep(self, text: str) -> list[tuple[int, int, str]]:
        """Like ``find``, and also secrets in encoded form: base64 at any alignment, HTML
        character references, percent-encoding, \\u / \\x escapes, split by tags or
        invisible characters. Spans are in the original text."""
        if not text:
            return []
        return [(s.start, s.end, s.label) for s in self._deep_spans(text)]

    def scrub_deep(self, text: str) -> str:
        if not text:
            return text
        spans = self._deep_spans(text)
        return _render(text, spans) if spans else text

    def scrub_bytes(self, data: bytes, fill: int = ord("*")) -> tuple[bytes, int]:
        """Binary data (a widget buffer, a decoded image): every secret found by ``find_deep``
        in its latin-1 reading is overwritten in place with `fill` bytes, so lengths and
        offsets stay valid. Returns (data, number of redactions)."""
        if not data:
            return data, 0
        text = bytes(data).decode("latin-1")
        spans = self._deep_spans(text)
        if not spans:
            return data, 0
        out = bytearray(data)
        for s in spans:
            out[s.start:s.end] = bytes([fill]) * (s.end - s.start)
        return bytes(out), len(spans)

    def bytes_hold_secret(self, data: bytes) -> bool:
        """Whether raw bytes (e.g. a serialized message) contain a known value in clear, in
        base64 or JSON-escaped, or a pattern match — one pass of each engine, no decoding of
        other encodings (callers look for their markers themselves)."""
        if not data:
            return False
        text = data.decode("latin-1")  # one character per byte: UTF-8 values are in the derived set
        return bool(self._layer_spans(text, self._current_layers(), True, bytes(data)))

    def stream_would_hold(self, text: str) -> bool:
        """Whether a fresh stream fed `text` would hold back its tail (it may be the start of a secret)."""
        layers = self._current_layers()
        engine = layers.base.main
        hold = engine.hold_from(text, "", self._window(layers))
        return min(hold, self._layer_hold(text, layers)) < len(text)

    def stream(self) -> StreamScrubber:
        return StreamScrubber(self)


# -- history fingerprints: let a kernel find values it was never given
#
# The server knows every stored value; a kernel in proxy mode must not. To let the kernel's
# history scrubber find a pasted value anyway, the server sends, per kernel, keyed hashes of
# the value's consecutive non-overlapping chunks. Each chunk is long enough to carry at least
# FINGERPRINT_BITS bits by the value's own alphabet (its distinct characters: 16 for hex), so a
# kernel holding the key and the hashes must still guess 2**64 candidates per chunk to learn
# anything, and chunks do not overlap, so one guessed chunk does not help with the next.
# Values too short for two such chunks are not sent (they are left to the other layers).

FINGERPRINT_BITS = 64
FINGERPRINT_VERSION = 1


def fingerprint(salt: bytes, window: str) -> bytes:
    """The keyed hash of one chunk (server) or one text window (kernel)."""
    import hashlib

    return hashlib.blake2b(window.encode("utf-8"), key=salt, digest_size=16).digest()


def fingerprint_width(value: str) -> int | None:
    """Characters per chunk for value, or None when value is too short to be fingerprinted safely.

    The alphabet is taken as the distinct characters the value itself uses (what an attacker
    who knows the key format would guess from), not the character classes they belong to:
    a hex token counts 4 bits a character even when it starts with a few other letters."""
    import math

    distinct = len(set(value))
    if distinct < 2:
        return None
    width = math.ceil(FINGERPRINT_BITS / math.log2(distinct))
    return width if len(value) >= 2 * width else None


def new_fingerprint_salt() -> bytes:
    import os

    return os.urandom(32)


def history_fingerprints(values: Iterable[tuple[str, str]], salt: bytes) -> dict:
    """The JSON document a server gives one kernel (never a value): for each value, the hash
    of each chunk with its offset, the value's length and its name (for the marker)."""
    import base64

    if not isinstance(salt, bytes) or len(salt) < 16:
        raise ValueError("the fingerprint salt must be at least 16 random bytes")
    entries = []
    skipped = 0
    for value, name in values:
        width = fingerprint_width(value) if isinstance(value, str) else None
        if width is None:
            skipped += 1
            continue
        for offset in range(0, len(value) - width + 1, width):
            entries.append([base64.b64encode(fingerprint(salt, value[offset:offset + width])).decode(),
                            width, offset, len(value), name or ""])
    return {"version": FINGERPRINT_VERSION, "salt": base64.b64encode(salt).decode(), "chunks": entries,
            "skipped": skipped}


class FingerprintMatcher:
    """Kernel side: finds the fingerprinted values in text, knowing only their hashes."""

    def __init__(self, document: dict):
        import base64

        if not isinstance(document, dict) or document.get("version") != FINGERPRINT_VERSION:
            raise ValueError("not a history fingerprint document of a known version")
        self.salt = base64.b64decode(document["salt"])
        self.by_width: dict[int, dict[bytes, list[tuple[int, int, str]]]] = defaultdict(dict)
        for digest, width, offset, length, name in document.get("chunks", []):
            if not (isinstance(width, int) and 0 < width <= length and 0 <= offset <= length - width):
                raise ValueError("malformed fingerprint entry")
            self.by_width[width].setdefault(base64.b64decode(digest), []).append((offset, length, str(name)))

    def __len__(self) -> int:
        return sum(len(table) for table in self.by_width.values())

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, label) of every value found: a matching chunk places the whole value."""
        spans: list[_Span] = []
        salt = self.salt
        for width, table in self.by_width.items():
            for i in range(len(text) - width + 1):
                hits = table.get(fingerprint(salt, text[i:i + width]))
                for offset, length, name in hits or ():
                    start = max(0, i - offset)
                    spans.append(_known_span(start, text[start:start + length], name))
        return [(s.start, s.end, s.label) for s in _merge(spans)]

    def scrub(self, text: str) -> str:
        if not text or not self.by_width:
            return text
        spans = [_known_span(a, text[a:b], label if label != "known value" else "") for a, b, label in self.find(text)]
        return _render(text, spans) if spans else text


_CONTEXT = 8  # characters of already-emitted text kept for look-behinds


class StreamScrubber:
    """Scrubs text arriving in pieces: a secret split across writes is still redacted.

    Holds back only the trailing run that could still become (part of) a secret — a
    proper prefix of a known value, or the trailing token when it starts like a provider
    key — never more than ``window`` characters. The concatenation of everything returned
    by ``feed`` and ``flush`` equals ``scrub`` of the concatenated input.
    """

    def __init__(self, scrubber: Scrubber):
        self._scrubber = scrubber
        self._buffer = ""
        self._context = ""

    def feed(self, chunk: str) -> str:
        if not chunk:
            return ""
        buf = self._buffer + chunk
        scrubber = self._scrubber
        layers = scrubber._current_layers()
        cut = min(layers.base.main.hold_from(buf, self._context, scrubber._window(layers)),
                  scrubber._layer_hold(buf, layers))
        if cut <= 0:
            self._buffer = buf
            return ""
        ctx = self._context
        text = ctx + buf
        off = len(ctx)
        spans = [s for s in scrubber._layer_spans(text, layers, False) if s.end > off]
        for s in spans:  # a secret that straddles the cut is held back whole
            if s.start < off + cut < s.end:
                cut = max(0, s.start - off)
                break
        if cut <= 0:
            self._buffer = buf
            return ""
        emit = [s._replace(start=max(s.start, off)) for s in spans if s.end <= off + cut]
        if emit:
            out = _render(text, emit, off, off + cut)
        else:  # the common case: no copy when the whole buffer goes out as it came
            out = buf if cut == len(buf) else buf[:cut]
        self._buffer = buf[cut:]
        self._context = buf[cut - _CONTEXT:cut] if cut >= _CONTEXT else (ctx + buf[:cut])[-_CONTEXT:]
        return out

    def flush(self) -> str:
        buf, self._buffer = self._buffer, ""
        if not buf:
            return ""
        ctx = self._context
        text = ctx + buf
        off = len(ctx)
        spans = [s._replace(start=max(s.start, off)) for s in self._scrubber._spans(text) if s.end > off]
        self._context = text[-_CONTEXT:]
        return _render(text, spans, off)

    @property
    def pending(self) -> int:
        return len(self._buffer)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message and any traceback text."""

    def __init__(self, scrubber: Scrubber):
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        if not _will_be_emitted(record):
            # jupyter_server's loggers are at DEBUG with quiet handlers: every request makes a debug
            # record that no handler writes. Nothing to redact in what is never written.
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        scrubbed = self.scrubber.scrub(message)
        if scrubbed != message or record.args:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.scrubber.scrub(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.scrubber.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrubber.scrub(record.stack_info)
        return True


def _will_be_emitted(record: logging.LogRecord) -> bool:
    """Whether a handler of the record's logger (or of the loggers it propagates to) takes its level;
    True when in doubt (a logger made outside logging.getLogger)."""
    logger = logging.Logger.manager.loggerDict.get(record.name)
    if not isinstance(logger, logging.Logger):
        return True
    return record.levelno >= lowest_written_level(logger)


def lowest_written_level(logger: logging.Logger) -> int:
    """The lowest level any handler that `logger`'s records reach writes (logging's last resort
    handler when there is none)."""
    levels = []
    current: logging.Logger | None = logger
    while current is not None:
        levels += [handler.level for handler in current.handlers]
        current = current.parent if current.propagate else None
    if levels:
        return min(levels)
    return logging.lastResort.level if logging.lastResort is not None else logging.CRITICAL + 1


def install_log_filter(scrubber: Scrubber, loggers: Iterable[str | logging.Logger]) -> RedactingFilter:
    """Attach one redacting filter to the named loggers and to their handlers."""
    filt = RedactingFilter(scrubber)
    for item in loggers:
        logger = logging.getLogger(item) if isinstance(item, str) else item
        if filt not in logger.filters:
            logger.addFilter(filt)
        for handler in logger.handlers:
            if filt not in handler.filters:
                handler.addFilter(filt)
    return filt


default_scrubber = Scrubber()
