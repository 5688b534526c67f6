"""The .env reader behind `jupyter keyvault import-env` (pure functions, in-process)."""

from __future__ import annotations

import pytest

from jupyter_keyvault import dotenv


def test_given_common_dotenv_syntax_when_parsed_then_names_values_and_lines_are_right():
    text = (
        "# comment\n"
        "\n"
        "PLAIN=abc123\n"
        "  SPACED = value with spaces   \n"
        "export EXPORTED=exp\n"
        'DOUBLE="a \\"quoted\\" word\\nnext line"\n'
        "SINGLE='kept \\n literally # not a comment'\n"
        "COMMENTED=val   # trailing comment\n"
        "HASH_IN_VALUE=abc#def\n"
        "EMPTY=\n"
        'QUOTED_THEN_COMMENT="x y" # note\n'
    )
    entries = dotenv.parse(text)
    assert [(e.name, e.value, e.line_index) for e in entries] == [
        ("PLAIN", "abc123", 2),
        ("SPACED", "value with spaces", 3),
        ("EXPORTED", "exp", 4),
        ("DOUBLE", 'a "quoted" word\nnext line', 5),
        ("SINGLE", "kept \\n literally # not a comment", 6),
        ("COMMENTED", "val", 7),
        ("HASH_IN_VALUE", "abc#def", 8),
        ("EMPTY", "", 9),
        ("QUOTED_THEN_COMMENT", "x y", 10),
    ]


def test_given_an_entry_when_repr_then_the_value_is_not_shown():
    (entry,) = dotenv.parse("OPENAI_API_KEY=sk-proj-CANARYdotenv0123456789\n")
    assert "CANARY" not in repr(entry)
    assert repr(entry) == "EnvEntry(name='OPENAI_API_KEY', line=1)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("GOOD=1\nnot an assignment\n", "line 2 is not NAME=VALUE"),
        ("GOOD=1\n1BAD=x\n", "line 2 is not NAME=VALUE"),
        ("GOOD=1\nBAD-NAME=x\n", "line 2 is not NAME=VALUE"),
        ('A="never closed\n', "line 1 has an unterminated quote"),
        ("A='never closed\nB=2\n", "line 1 has an unterminated quote"),
    ],
)
def test_given_a_malformed_line_when_parsed_then_a_clear_error_without_the_value(text, message):
    with pytest.raises(dotenv.DotenvError) as info:
        dotenv.parse(text)
    assert str(info.value).startswith(message)
    assert "never closed" not in str(info.value)


def test_given_imported_lines_when_removed_then_everything_else_is_kept_byte_for_byte():
    text = "# keep me\r\nSECRET_KEY=abc\r\nDEBUG=1\r\n\r\nexport X_TOKEN=t\r\n# end"
    entries = dotenv.parse(text)
    removed = {e.line_index for e in entries if e.name in ("SECRET_KEY", "X_TOKEN")}
    assert dotenv.remove_lines(text, removed) == "# keep me\r\nDEBUG=1\r\n\r\n# end"
    assert dotenv.remove_lines(text, set()) == text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("X_TOKEN", True),
        ("DB_PASSWORD", True),
        ("CLIENT_SECRET", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("HF_TOKEN", True),
        ("DEBUG", False),
        ("KEYBOARD_LAYOUT", False),
        ("PORT", False),
    ],
)
def test_given_a_name_when_classified_then_secret_looking_names_match(name, secret):
    assert bool(dotenv.SECRET_NAME.search(name)) is secret
