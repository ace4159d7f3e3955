"""IMAP command syntax before authentication: tokens, strings, literals.

Framing comes first (lines and ``{n}`` / ``{n+}`` literals, see
:mod:`mailproxy_core.framing`); this module parses a framed command, so
literal bytes are never read as command text. The grammar is RFC 9051
section 9, restricted to what the not-authenticated state needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ..errors import MailProxyError

# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
#                 quoted-specials / resp-specials      (RFC 9051 section 9)
_ATOM_SPECIALS: Final = frozenset(b'(){ %*"\\]')
# ASTRING-CHAR = ATOM-CHAR / resp-specials, so "]" may appear in an astring.
_ASTRING_EXTRA: Final = frozenset(b"]")


# One token at a time: spaces, an astring atom, a quoted string with only
# the escapes \" and \\, or a parenthesis. Anything else falls back to the
# byte-by-byte reader, which names the error.
_TOKEN: Final = re.compile(
    rb'( +)|([^\x00-\x20\x7f-\xff(){%*"\\]+)|"((?:[^"\\\r\n\x00]|\\["\\])*)"|([()])'
)
_ESCAPE: Final = re.compile(rb'\\(["\\])')
_TAG: Final = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')


class ImapSyntaxError(MailProxyError, ValueError):
    """A command does not follow the IMAP grammar; the reply is ``BAD``."""


@dataclass(frozen=True, slots=True)
class Atom:
    """An unquoted token such as a tag, a command name or ``NIL``."""

    value: bytes


@dataclass(frozen=True, slots=True)
class String:
    """A quoted string or a literal, already unescaped."""

    value: bytes


@dataclass(frozen=True, slots=True)
class Paren:
    """An opening or closing parenthesis."""

    opening: bool


Token = Atom | String | Paren


def _is_astring_char(byte: int) -> bool:
    if byte < 0x21 or byte > 0x7E:
        return False
    return byte not in _ATOM_SPECIALS or byte in _ASTRING_EXTRA


def _read_quoted(text: bytes, start: int) -> tuple[bytes, int]:
    # quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR escapes only " and \.
    value = bytearray()
    position = start + 1
    while position < len(text):
        byte = text[position]
        if byte == 0x22:
            return bytes(value), position + 1
        if byte == 0x5C:
            position += 1
            if position >= len(text) or text[position] not in b'"\\':
                raise ImapSyntaxError("invalid escape in quoted string")
            byte = text[position]
        elif byte in (0x00, 0x0A, 0x0D):
            raise ImapSyntaxError("NUL, CR or LF in quoted string")
        value.append(byte)
        position += 1
    raise ImapSyntaxError("unterminated quoted string")


def _tokenize_segment(text: bytes, tokens: list[Token]) -> None:
    position = 0
    match = _TOKEN.match
    while position < len(text):
        found = match(text, position)
        if found is None:
            _tokenize_slowly(text, position, tokens)
            return
        _, atom, quoted, paren = found.groups()
        if atom is not None:
            tokens.append(Atom(atom))
        elif quoted is not None:
            tokens.append(String(_ESCAPE.sub(rb"\1", quoted)))
        elif paren is not None:
            tokens.append(Paren(paren == b"("))
        position = found.end()


def _tokenize_slowly(text: bytes, position: int, tokens: list[Token]) -> None:
    while position < len(text):
        byte = text[position]
        if byte == 0x20:
            position += 1
        elif byte == 0x22:
            value, position = _read_quoted(text, position)
            tokens.append(String(value))
        elif byte in b"()":
            tokens.append(Paren(byte == 0x28))
            position += 1
        elif _is_astring_char(byte):
            end = position
            while end < len(text) and _is_astring_char(text[end]):
                end += 1
            tokens.append(Atom(text[position:end]))
            position = end
        else:
            raise ImapSyntaxError(f"invalid character 0x{byte:02x} in command")


def tokenize(segments: Sequence[bytes], literals: Sequence[bytes]) -> list[Token]:
    """Tokenize a framed command.

    :param segments: the command's line texts; every segment but the last
        ended in a literal announcement, already cut off.
    :param literals: the literal bytes that follow each segment but the last.
    :raises ImapSyntaxError: for text outside the grammar.
    """
    tokens: list[Token] = []
    for index, segment in enumerate(segments):
        _tokenize_segment(segment, tokens)
        if index < len(literals):
            tokens.append(String(literals[index]))
    return tokens


def is_valid_tag(tag: bytes) -> bool:
    """Whether ``tag`` is a valid command tag (astring chars except ``+``)."""
    return _TAG.fullmatch(tag) is not None


def split_tag(line: bytes) -> bytes | None:
    """Return the tag at the start of a raw line, if it is a valid tag."""
    tag = line.split(b" ", 1)[0]
    return tag if is_valid_tag(tag) else None


def astring_text(token: Token, what: str) -> str:
    """Decode an astring argument as UTF-8 text.

    :raises ImapSyntaxError: when the token is a parenthesis or the bytes
        are not UTF-8.
    """
    if isinstance(token, Paren):
        raise ImapSyntaxError(f"{what} must be an atom or a string")
    try:
        return token.value.decode("utf-8")
    except UnicodeDecodeError:
        raise ImapSyntaxError(f"{what} is not valid UTF-8") from None


def quote(value: bytes) -> bytes:
    """Return ``value`` as an IMAP quoted string."""
    escaped = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + escaped + b'"'


def can_quote(value: bytes) -> bool:
    """Whether ``value`` fits a quoted string: printable 7-bit text only."""
    return all(0x20 <= byte <= 0x7E for byte in value)
