"""A small .env reader that remembers which line each entry came from, so an import
can remove exactly the plaintext lines it moved into the vault."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<rest>.*?)\s*$")
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$|^HF_TOKEN$", re.IGNORECASE)


@dataclass(frozen=True)
class EnvEntry:
    name: str
    value: str
    line_index: int

    def __repr__(self) -> str:  # never show the value
        return f"EnvEntry(name={self.name!r}, line={self.line_index + 1})"


class DotenvError(ValueError):
    pass


def parse(text: str) -> list[EnvEntry]:
    entries = []
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise DotenvError(f"line {index + 1} is not NAME=VALUE")
        entries.append(EnvEntry(match["name"], _value(match["rest"], index), index))
    return entries


def _value(rest: str, index: int) -> str:
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        end = rest.find(quote, 1)
        while quote == '"' and end > 0 and rest[end - 1] == "\\":
            end = rest.find(quote, end + 1)
        if end < 0:
            raise DotenvError(f"line {index + 1} has an unterminated quote (multi-line values are not supported)")
        inner = rest[1:end]
        return inner.replace('\\"', '"').replace("\\n", "\n") if quote == '"' else inner
    return re.split(r"\s+#", rest, maxsplit=1)[0].strip()


def remove_lines(text: str, indexes: set[int]) -> str:
    kept = [line for i, line in enumerate(text.splitlines(keepends=True)) if i not in indexes]
    return "".join(kept)
