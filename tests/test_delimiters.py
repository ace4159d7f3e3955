"""Tests of splitting combined credentials at the configured separators."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mailproxy_core.delimiters import (
    SEPARATORS,
    Delimiters,
    SplitCredentials,
    check_credential_text,
    split_credentials,
    split_server,
)
from mailproxy_core.errors import ConfigurationError, CredentialsError
from mailproxy_core.secrets import Secret

SEPARATOR_LIST = sorted(SEPARATORS)
FORBIDDEN = ("\r", "\n", "\x00")
SERVER_ALPHABET = string.ascii_letters + string.digits + ".-"


@st.composite
def delimiters(draw: st.DrawFn) -> Delimiters:
    """Draw a valid pair of distinct separators."""
    name, server = draw(
        st.lists(st.sampled_from(SEPARATOR_LIST), min_size=2, max_size=2, unique=True)
    )
    return Delimiters(name_separator=name, server_separator=server)


def credential_text(*, min_size: int = 0, exclude: str = "") -> st.SearchStrategy[str]:
    """Text without CR, LF, NUL or ``exclude``; separators appear often."""
    separators = [c for c in SEPARATOR_LIST if c not in exclude]
    others = st.characters(
        codec="utf-8", exclude_characters="".join(FORBIDDEN) + exclude
    )
    return st.text(st.sampled_from(separators) | others, min_size=min_size)


# Upstream names of ASCII letters, digits, dots and hyphens, as host-like
# names are. Names that differ only in case would make the match ambiguous.
SERVER_NAMES = st.lists(
    st.text(SERVER_ALPHABET, min_size=1, max_size=12),
    max_size=4,
    unique_by=str.casefold,
)


def ends_with_server(text: str, separator: str, servers: list[str]) -> bool:
    """Return whether ``text`` already ends with a separator and a server."""
    folded = text.casefold()
    return any(folded.endswith((separator + s).casefold()) for s in servers)


@st.composite
def mail_user_and_server(
    draw: st.DrawFn, delimiters: Delimiters, servers: list[str]
) -> tuple[str, str | None, str]:
    """Draw a user name, an optional configured server, and their join.

    Without a server, the user name must not end with the server separator
    and a configured name, or the split would rightly take that as a server.
    """
    user = draw(credential_text(min_size=1))
    server = draw(st.none() | st.sampled_from(servers)) if servers else None
    if server is None:
        assume(not ends_with_server(user, delimiters.server_separator, servers))
        return user, None, user
    return user, server, user + delimiters.server_separator + server


# Configuration


def test_default_delimiters() -> None:
    default = Delimiters()

    assert default.name_separator == ":"
    assert default.server_separator == "@"


@given(delimiters())
def test_distinct_separators_accepted(pair: Delimiters) -> None:
    assert pair.name_separator != pair.server_separator


@pytest.mark.parametrize("key", ["name_separator", "server_separator"])
@given(value=st.characters().filter(lambda c: c not in SEPARATORS))
def test_character_outside_set_raises(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        Delimiters(**{key: value})


@pytest.mark.parametrize("key", ["name_separator", "server_separator"])
@given(value=st.text(st.sampled_from(SEPARATOR_LIST) | st.characters(), min_size=2))
def test_multi_character_separator_raises(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        Delimiters(**{key: value})


@pytest.mark.parametrize("key", ["name_separator", "server_separator"])
@pytest.mark.parametrize("value", ["", None, 58, [":"], b":"])
def test_empty_or_non_string_separator_raises(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=key):
        Delimiters(**{key: value})  # type: ignore[arg-type]


@given(separator=st.sampled_from(SEPARATOR_LIST))
def test_equal_separators_raise(separator: str) -> None:
    with pytest.raises(ConfigurationError, match="must differ"):
        Delimiters(name_separator=separator, server_separator=separator)


def test_invalid_separator_message_lists_choices() -> None:
    with pytest.raises(ConfigurationError) as info:
        Delimiters(name_separator="/")

    for separator in SEPARATOR_LIST:
        assert separator in str(info.value)


# Round trips


@given(data=st.data(), pair=delimiters(), servers=SERVER_NAMES)
def test_vpn_and_mail_round_trip(
    data: st.DataObject, pair: Delimiters, servers: list[str]
) -> None:
    separator = pair.name_separator
    vpn_user = data.draw(credential_text(min_size=1, exclude=separator))
    mail_user, server, mail_text = data.draw(mail_user_and_server(pair, servers))
    vpn_password = data.draw(credential_text(min_size=1, exclude=separator))
    mail_password = data.draw(credential_text(min_size=1))

    result = split_credentials(
        vpn_user + separator + mail_text,
        Secret(vpn_password + separator + mail_password),
        delimiters=pair,
        servers=servers,
        vpn_part=True,
    )

    assert result.vpn_user == vpn_user
    assert result.mail_user == mail_user
    assert result.server == server
    assert result.vpn_password is not None
    assert result.vpn_password.reveal() == vpn_password
    assert result.mail_password.reveal() == mail_password


@given(data=st.data(), pair=delimiters(), servers=SERVER_NAMES)
def test_mail_only_round_trip(
    data: st.DataObject, pair: Delimiters, servers: list[str]
) -> None:
    mail_user, server, mail_text = data.draw(mail_user_and_server(pair, servers))
    password = data.draw(credential_text(min_size=1))

    result = split_credentials(
        mail_text, Secret(password), delimiters=pair, servers=servers, vpn_part=False
    )

    assert result.vpn_user is None
    assert result.vpn_password is None
    assert result.mail_user == mail_user
    assert result.server == server
    assert result.mail_password.reveal() == password


@given(data=st.data(), pair=delimiters(), servers=SERVER_NAMES)
def test_vpn_only_round_trip(
    data: st.DataObject, pair: Delimiters, servers: list[str]
) -> None:
    vpn_user, server, vpn_text = data.draw(mail_user_and_server(pair, servers))
    password = data.draw(credential_text(min_size=1))

    result = split_credentials(
        vpn_text,
        Secret(password),
        delimiters=pair,
        servers=servers,
        vpn_part=True,
        mail_part=False,
    )

    assert result.vpn_user == vpn_user
    assert result.mail_user == vpn_user
    assert result.server == server
    assert result.vpn_password is not None
    assert result.vpn_password.reveal() == password
    assert result.mail_password.reveal() == password


@given(
    pair=delimiters(),
    servers=SERVER_NAMES.filter(bool),
    data=st.data(),
)
def test_server_match_ignores_case(
    pair: Delimiters, servers: list[str], data: st.DataObject
) -> None:
    configured = data.draw(st.sampled_from(servers))
    size = len(configured)
    flips = data.draw(st.lists(st.booleans(), min_size=size, max_size=size))
    typed = "".join(
        c.swapcase() if flip else c for c, flip in zip(configured, flips, strict=True)
    )

    user, server = split_server("alice" + pair.server_separator + typed, pair, servers)

    assert user == "alice"
    assert server == configured


def test_unconfigured_domain_stays_in_user_name() -> None:
    result = split_credentials(
        "bob:alice@example.test",
        Secret("vpnpass:mailpass"),
        delimiters=Delimiters(),
        servers=["mx"],
        vpn_part=True,
    )

    assert result.mail_user == "alice@example.test"
    assert result.server is None


def test_last_server_separator_splits() -> None:
    result = split_credentials(
        "bob:alice@example.test@MX",
        Secret("vpnpass:mailpass"),
        delimiters=Delimiters(),
        servers=["mx"],
        vpn_part=True,
    )

    assert result.mail_user == "alice@example.test"
    assert result.server == "mx"


def test_mail_parts_keep_name_separator() -> None:
    result = split_credentials(
        "bob:alice:x@mx",
        Secret("vpn:mail:pass"),
        delimiters=Delimiters(),
        servers=["mx"],
        vpn_part=True,
    )

    assert result.vpn_user == "bob"
    assert result.mail_user == "alice:x"
    assert result.vpn_password == Secret("vpn")
    assert result.mail_password == Secret("mail:pass")


def test_no_password_needed_without_parts() -> None:
    result = split_credentials(
        "alice",
        Secret(""),
        delimiters=Delimiters(),
        servers=[],
        vpn_part=False,
        mail_part=False,
    )

    assert result.mail_user == "alice"
    assert result.mail_password == Secret("")


# Rejected credentials


@given(
    data=st.data(),
    pair=delimiters(),
    forbidden=st.sampled_from(FORBIDDEN),
    in_password=st.booleans(),
    vpn_part=st.booleans(),
    mail_part=st.booleans(),
)
def test_cr_lf_nul_anywhere_raises(
    data: st.DataObject,
    pair: Delimiters,
    forbidden: str,
    in_password: bool,
    vpn_part: bool,
    mail_part: bool,
) -> None:
    username = data.draw(credential_text())
    password = data.draw(credential_text())
    target = password if in_password else username
    position = data.draw(st.integers(min_value=0, max_value=len(target)))
    target = target[:position] + forbidden + target[position:]
    if in_password:
        password = target
    else:
        username = target

    with pytest.raises(CredentialsError, match="CR, LF or NUL") as info:
        split_credentials(
            username,
            Secret(password),
            delimiters=pair,
            servers=[],
            vpn_part=vpn_part,
            mail_part=mail_part,
        )
    assert ("password" if in_password else "user name") in info.value.reason


@pytest.mark.parametrize("forbidden", FORBIDDEN)
def test_check_credential_text_names_field(forbidden: str) -> None:
    with pytest.raises(CredentialsError) as info:
        check_credential_text(f"secret{forbidden}text", "token")

    assert info.value.reason == "token contains a CR, LF or NUL character"


@pytest.mark.parametrize(
    ("username", "password", "vpn_part", "mail_part", "reason"),
    [
        ("alice", "vpn:mail", True, True, "user name has no ':' before the mail user"),
        ("bob:alice", "nopass", True, True, "password has no ':' before the mail part"),
        (":alice", "vpn:mail", True, True, "VPN user name is empty"),
        ("bob:", "vpn:mail", True, True, "mail user name is empty"),
        ("bob:@mx", "vpn:mail", True, True, "mail user name is empty"),
        ("bob:alice", ":mail", True, True, "VPN password is empty"),
        ("bob:alice", "vpn:", True, True, "mail password is empty"),
        ("", "pass", False, True, "mail user name is empty"),
        ("@MX", "pass", False, True, "mail user name is empty"),
        ("alice", "", False, True, "mail password is empty"),
        ("", "pass", True, False, "VPN user name is empty"),
        ("@mx", "pass", True, False, "VPN user name is empty"),
        ("bob", "", True, False, "VPN password is empty"),
    ],
)
def test_missing_part_raises_with_reason(
    username: str, password: str, vpn_part: bool, mail_part: bool, reason: str
) -> None:
    with pytest.raises(CredentialsError) as info:
        split_credentials(
            username,
            Secret(password),
            delimiters=Delimiters(),
            servers=["mx"],
            vpn_part=vpn_part,
            mail_part=mail_part,
        )

    assert info.value.reason == reason
    assert str(info.value) == reason


@given(data=st.data(), pair=delimiters())
def test_missing_name_separator_raises(data: st.DataObject, pair: Delimiters) -> None:
    separator = pair.name_separator
    username = data.draw(credential_text(exclude=separator))
    password = data.draw(credential_text(exclude=separator))
    in_username = data.draw(st.booleans())
    if in_username:
        password = "vpn" + separator + "mail"
    else:
        username = "bob" + separator + "alice"

    with pytest.raises(CredentialsError) as info:
        split_credentials(
            username, Secret(password), delimiters=pair, servers=[], vpn_part=True
        )
    field = "user name" if in_username else "password"
    assert info.value.reason.startswith(f"{field} has no {separator!r}")


# Secrets stay out of text


PASSWORDS = st.text(string.ascii_letters + string.digits, min_size=24, max_size=40)


@given(
    pair=delimiters(),
    vpn_user=st.text(string.ascii_letters, min_size=1),
    mail_user=st.text(string.ascii_letters, min_size=1),
    vpn_password=PASSWORDS,
    mail_password=PASSWORDS,
)
def test_repr_hides_passwords(
    pair: Delimiters,
    vpn_user: str,
    mail_user: str,
    vpn_password: str,
    mail_password: str,
) -> None:
    public = repr((vpn_user, mail_user, "mx"))
    assume(vpn_password not in public)
    assume(mail_password not in public)
    separator = pair.name_separator

    result = split_credentials(
        vpn_user + separator + mail_user + pair.server_separator + "mx",
        Secret(vpn_password + separator + mail_password),
        delimiters=pair,
        servers=["mx"],
        vpn_part=True,
    )

    assert isinstance(result, SplitCredentials)
    for text in (repr(result), str(result)):
        assert vpn_password not in text
        assert mail_password not in text
    assert vpn_user in repr(result)
    assert mail_user in repr(result)


@given(pair=delimiters(), password=PASSWORDS)
def test_error_reason_hides_password(pair: Delimiters, password: str) -> None:
    # No name separator in the password, so the split fails on the password.
    username = "bob" + pair.name_separator + "alice"

    with pytest.raises(CredentialsError) as info:
        split_credentials(
            username, Secret(password), delimiters=pair, servers=[], vpn_part=True
        )

    assert password not in info.value.reason
    assert password not in repr(info.value)
