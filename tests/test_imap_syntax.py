"""The IMAP tokenizer: the regular-expression path matches the byte reader."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy_core.imap.syntax import (
    Atom,
    ImapSyntaxError,
    Paren,
    String,
    Token,
    _tokenize_slowly,
    is_valid_tag,
    tokenize,
)

PIECES = st.sampled_from(
    [
        b"a",
        b"LOGIN",
        b" ",
        b"  ",
        b'"',
        b'\\"',
        b"\\\\",
        b"\\x",
        b"(",
        b")",
        b"]",
        b"{",
        b"%",
        b"*",
        b"+",
        b"\x00",
        b"\r",
        b"\xc3\xa9",
        b"\x7f",
        b":",
        b"@",
    ]
)


def slow(text: bytes) -> list[Token] | str:
    tokens: list[Token] = []
    try:
        _tokenize_slowly(text, 0, tokens)
    except ImapSyntaxError as error:
        return str(error)
    return tokens


def fast(text: bytes) -> list[Token] | str:
    try:
        return tokenize([text], [])
    except ImapSyntaxError as error:
        return str(error)


@given(st.lists(PIECES, max_size=20).map(b"".join))
def test_fast_path_equals_byte_reader(text: bytes) -> None:
    assert fast(text) == slow(text)


@given(st.binary(max_size=60))
def test_fast_path_equals_byte_reader_on_bytes(text: bytes) -> None:
    assert fast(text) == slow(text)


def test_tokens_of_login() -> None:
    tokens = tokenize([b'a1 LOGIN user "p\\"w" ('], [])
    assert tokens == [
        Atom(b"a1"),
        Atom(b"LOGIN"),
        Atom(b"user"),
        String(b'p"w'),
        Paren(True),
    ]


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        (b"a1", True),
        (b"A+1", False),
        (b"", False),
        (b"x]", True),
        (b"*", False),
        (b"\xff", False),
    ],
)
def test_tags(tag: bytes, valid: bool) -> None:
    assert is_valid_tag(tag) is valid
