"""Tests of SASL decoding, encoding and the server-side exchange."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailproxy_core.errors import LocalProtocolError, MailProxyError, SaslError
from mailproxy_core.sasl import (
    Cancelled,
    Challenge,
    Completed,
    Mechanism,
    SaslCredentials,
    SaslServer,
    decode_base64,
    encode_base64,
    encode_oauthbearer,
    encode_plain,
    encode_xoauth2,
    login_responses,
    parse_login_value,
    parse_oauthbearer,
    parse_plain,
    parse_xoauth2,
)
from mailproxy_core.secrets import Secret

# RFC 7628 section 4.1: the IMAP initial response and its decoded form.
RFC7628_IMAP_RESPONSE = (
    b"bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1"
    b"dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
)
RFC7628_IMAP_MESSAGE = (
    b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
    b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
)
# RFC 7628 section 4.2: the same login over SMTP submission.
RFC7628_SMTP_RESPONSE = (
    b"bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9NTg3AWF1"
    b"dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
)
RFC7628_TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
# RFC 7628 section 4.4: a client that requires channel binding.
RFC7628_CHANNEL_BINDING_MESSAGE = (
    b"p=tls-unique,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
    b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
)
# The example of Google's "OAuth 2.0 Mechanism" page for Gmail IMAP, POP and
# SMTP (developers.google.com/gmail/imap/xoauth2-protocol).
GOOGLE_XOAUTH2_RESPONSE = (
    b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
    b"YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
)
GOOGLE_XOAUTH2_MESSAGE = (
    b"user=someuser@example.com\x01"
    b"auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# --- Mechanism ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PLAIN", Mechanism.PLAIN),
        (b"plain", Mechanism.PLAIN),
        ("Login", Mechanism.LOGIN),
        (b"xoauth2", Mechanism.XOAUTH2),
        ("OAuthBearer", Mechanism.OAUTHBEARER),
        ("CRAM-MD5", None),
        ("DIGEST-MD5", None),
        (b"SCRAM-SHA-256", None),
        ("", None),
        ("PLA\u0131N", None),
        (b"PLA\xc4\xb1N", None),
        (b"\xff", None),
    ],
)
def test_mechanism_parse(name: bytes | str, expected: Mechanism | None) -> None:
    assert Mechanism.parse(name) is expected


# --- base64 --------------------------------------------------------------------


def test_decode_base64_empty_forms() -> None:
    assert decode_base64(b"=") == b""
    assert decode_base64(b"") == b""


def test_decode_base64_valid() -> None:
    assert decode_base64(b"AGFsaWNl") == b"\x00alice"
    assert decode_base64(b"QQ==") == b"A"


@pytest.mark.parametrize(
    "data",
    [b"QQ", b"QQ==\n", b"Q Q==", b"QQ== ", b"QQ=", b"*", b"==", b"QQ==QQ==", b"\xff"],
)
def test_decode_base64_invalid(data: bytes) -> None:
    with pytest.raises(SaslError):
        decode_base64(data)


def test_encode_base64() -> None:
    assert encode_base64(b"") == b""
    assert (
        encode_base64(b"\x00tim\x00tanstaaftanstaaf") == b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
    )


@given(st.binary(max_size=300))
def test_base64_round_trip(data: bytes) -> None:
    encoded = encode_base64(data)

    assert b"\n" not in encoded
    assert decode_base64(encoded) == data
    assert encoded == base64.b64encode(data)


@given(st.binary(max_size=100))
def test_decode_base64_raises_only_sasl_error(data: bytes) -> None:
    with contextlib.suppress(SaslError):
        decode_base64(data)


# --- PLAIN -----------------------------------------------------------------------


def test_plain_rfc4616_examples() -> None:
    # RFC 4616 section 4: "tim" with password "tanstaaftanstaaf", and "Kurt"
    # acting as "Ursel" with password "xipj3plmq".
    tim = parse_plain(b"\x00tim\x00tanstaaftanstaaf")
    assert tim.mechanism is Mechanism.PLAIN
    assert tim.authzid == ""
    assert tim.username == "tim"
    assert tim.secret.reveal() == "tanstaaftanstaaf"
    assert tim.is_token is False

    kurt = parse_plain(b"Ursel\x00Kurt\x00xipj3plmq")
    assert kurt.authzid == "Ursel"
    assert kurt.username == "Kurt"
    assert kurt.secret.reveal() == "xipj3plmq"


def test_plain_utf8_parts() -> None:
    credentials = parse_plain("\x00jürgen\x00pässwörd:ma\u00efl".encode())

    assert credentials.username == "jürgen"
    assert credentials.secret.reveal() == "pässwörd:ma\u00efl"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"tim",
        b"\x00tim",
        b"\x00tim\x00pass\x00",
        b"a\x00b\x00c\x00d",
        b"\x00\x00pass",
        b"\x00tim\x00",
        b"\x00t\xffim\x00pass",
        b"\x00tim\x00pa\xc3ss",
        b"\xed\xa0\x80\x00tim\x00pass",
        b"\x00tim\r\x00pass",
        b"\x00tim\x00pass\n",
        b"admin\r\n\x00tim\x00pass",
    ],
)
def test_plain_invalid(message: bytes) -> None:
    with pytest.raises(SaslError):
        parse_plain(message)


def test_plain_error_hides_secret() -> None:
    with pytest.raises(SaslError) as caught:
        parse_plain(b"\x00tim\x00hunter\xff2")

    assert "hunter" not in str(caught.value)
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


safe_text = st.text(
    alphabet=st.characters(
        blacklist_characters="\x00\r\n", blacklist_categories=("Cs",)
    ),
    max_size=40,
)


@given(
    authzid=safe_text, username=safe_text.filter(bool), password=safe_text.filter(bool)
)
def test_plain_round_trip(authzid: str, username: str, password: str) -> None:
    message = encode_plain(authzid, username, Secret(password))
    credentials = parse_plain(message)

    assert credentials.authzid == authzid
    assert credentials.username == username
    assert credentials.secret.reveal() == password


@pytest.mark.parametrize(
    ("authzid", "username", "password"),
    [
        ("", "", "pw"),
        ("", "tim", ""),
        ("a\x00b", "tim", "pw"),
        ("", "t\rim", "pw"),
        ("", "tim", "p\nw"),
    ],
)
def test_encode_plain_invalid(authzid: str, username: str, password: str) -> None:
    with pytest.raises(SaslError):
        encode_plain(authzid, username, Secret(password))


# --- LOGIN -------------------------------------------------------------------------


def test_login_value() -> None:
    assert parse_login_value(b"alice") == "alice"
    assert parse_login_value(b"") == ""
    assert parse_login_value("vpn:mäil".encode()) == "vpn:mäil"


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb", b"a\nb", b"\xff"])
def test_login_value_invalid(value: bytes) -> None:
    with pytest.raises(SaslError):
        parse_login_value(value)


def test_login_responses() -> None:
    assert login_responses("alice", Secret("s3cret")) == (b"alice", b"s3cret")

    with pytest.raises(SaslError):
        login_responses("", Secret("pw"))
    with pytest.raises(SaslError):
        login_responses("alice", Secret("p\r\nw"))


# --- XOAUTH2 -------------------------------------------------------------------------


def test_xoauth2_google_example() -> None:
    assert decode_base64(GOOGLE_XOAUTH2_RESPONSE) == GOOGLE_XOAUTH2_MESSAGE

    credentials = parse_xoauth2(GOOGLE_XOAUTH2_MESSAGE)
    assert credentials.mechanism is Mechanism.XOAUTH2
    assert credentials.username == "someuser@example.com"
    assert credentials.authzid == ""
    assert (
        credentials.secret.reveal() == "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    )
    assert credentials.is_token is True


def test_xoauth2_encode_matches_google() -> None:
    token = Secret("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")

    message = encode_xoauth2("someuser@example.com", token)
    assert message == GOOGLE_XOAUTH2_MESSAGE
    assert encode_base64(message) == GOOGLE_XOAUTH2_RESPONSE


def test_xoauth2_scheme_case_and_extra_key() -> None:
    credentials = parse_xoauth2(
        b"auth=bearer abc\x01user=u@example.test\x01x=1\x01\x01"
    )

    assert credentials.username == "u@example.test"
    assert credentials.secret.reveal() == "abc"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x01",
        b"\x01\x01",
        b"user=u\x01auth=Bearer t\x01",
        b"user=u\x01auth=Bearer t",
        b"user=u\x01auth=Bearer t\x01\x01extra",
        b"user=u\x01auth=Bearer t\x01\x01\x01",
        b"auth=Bearer t\x01\x01",
        b"user=\x01auth=Bearer t\x01\x01",
        b"user=u\x01\x01",
        b"user=u\x01auth=Basic dTpw\x01\x01",
        b"user=u\x01auth=Bearer\x01\x01",
        b"user=u\x01auth=Bearer \x01\x01",
        b"user=u\x01auth=Bearer  t\x01\x01",
        b"user=u\x01auth=Bearer t t\x01\x01",
        b"user=u\x01auth=Bearer t=x\x01\x01",
        b"user=u\x01user=v\x01auth=Bearer t\x01\x01",
        b"user=u\x01auth\x01\x01",
        b"user=u\x01=x\x01auth=Bearer t\x01\x01",
        b"user=u\xff\x01auth=Bearer t\x01\x01",
        b"user=u\r\n\x01auth=Bearer t\x01\x01",
    ],
)
def test_xoauth2_invalid(message: bytes) -> None:
    with pytest.raises(SaslError):
        parse_xoauth2(message)


@pytest.mark.parametrize(
    ("username", "token"),
    [("", "t"), ("u\x01", "t"), ("u\n", "t"), ("u", ""), ("u", "t t"), ("u", "t\x01")],
)
def test_encode_xoauth2_invalid(username: str, token: str) -> None:
    with pytest.raises(SaslError):
        encode_xoauth2(username, Secret(token))


# --- OAUTHBEARER ---------------------------------------------------------------------


def test_oauthbearer_rfc7628_imap_example() -> None:
    assert decode_base64(RFC7628_IMAP_RESPONSE) == RFC7628_IMAP_MESSAGE

    credentials = parse_oauthbearer(RFC7628_IMAP_MESSAGE)
    assert credentials.mechanism is Mechanism.OAUTHBEARER
    assert credentials.username == "user@example.com"
    assert credentials.authzid == ""
    assert credentials.secret.reveal() == RFC7628_TOKEN
    assert credentials.is_token is True


def test_oauthbearer_rfc7628_smtp_example() -> None:
    credentials = parse_oauthbearer(decode_base64(RFC7628_SMTP_RESPONSE))

    assert credentials.username == "user@example.com"
    assert credentials.secret.reveal() == RFC7628_TOKEN


def test_oauthbearer_rfc7628_error_reply() -> None:
    # RFC 7628 section 4.3: after an error challenge the client sends "AQ==",
    # a single 0x01, which is no login.
    with pytest.raises(SaslError):
        parse_oauthbearer(decode_base64(b"AQ=="))


def test_oauthbearer_rfc7628_channel_binding() -> None:
    with pytest.raises(SaslError) as caught:
        parse_oauthbearer(RFC7628_CHANNEL_BINDING_MESSAGE)
    assert "channel binding" in str(caught.value)


def test_oauthbearer_without_authzid() -> None:
    credentials = parse_oauthbearer(b"n,,\x01auth=Bearer abc\x01\x01")

    assert credentials.username == ""
    assert credentials.secret.reveal() == "abc"


def test_oauthbearer_y_flag() -> None:
    credentials = parse_oauthbearer(b"y,a=u,\x01auth=Bearer abc\x01\x01")

    assert credentials.username == "u"


def test_oauthbearer_escaped_name() -> None:
    credentials = parse_oauthbearer(b"n,a=a=2Cb=3Dc=2c,\x01auth=Bearer t\x01\x01")

    assert credentials.username == "a,b=c,"


@given(
    username=st.text(
        alphabet=st.characters(
            blacklist_characters="\x00\x01\r\n", blacklist_categories=("Cs",)
        ),
        max_size=30,
    ),
    token=st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True),
)
def test_oauthbearer_round_trip(username: str, token: str) -> None:
    message = encode_oauthbearer(username, Secret(token))
    credentials = parse_oauthbearer(message)

    assert credentials.username == username
    assert credentials.secret.reveal() == token


@given(
    username=st.text(
        alphabet=st.characters(
            blacklist_characters="\x00\x01\r\n", blacklist_categories=("Cs",)
        ),
        min_size=1,
        max_size=30,
    ),
    token=st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True),
)
def test_xoauth2_round_trip(username: str, token: str) -> None:
    credentials = parse_xoauth2(encode_xoauth2(username, Secret(token)))

    assert credentials.username == username
    assert credentials.secret.reveal() == token


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n,a=u,",
        b"n,a=u,\x01",
        b"n,a=u,\x01\x01",
        b"n,a=u\x01auth=Bearer t\x01\x01",
        b"n,a=u,,\x01auth=Bearer t\x01\x01",
        b"F,n,a=u,\x01auth=Bearer t\x01\x01",
        b"x,a=u,\x01auth=Bearer t\x01\x01",
        b",a=u,\x01auth=Bearer t\x01\x01",
        b"n,b=u,\x01auth=Bearer t\x01\x01",
        b"n,a=,\x01auth=Bearer t\x01\x01",
        b"n,a=u=2,\x01auth=Bearer t\x01\x01",
        b"n,a=u=41,\x01auth=Bearer t\x01\x01",
        b"n,a=u=,\x01auth=Bearer t\x01\x01",
        b"n,a=\xff,\x01auth=Bearer t\x01\x01",
        b"n,a=u\r\n,\x01auth=Bearer t\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01",
        b"n,a=u,\x01auth=Bearer t\x01\x01\x01",
        b"n,a=u,\x01host=h\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01auth=Bearer s\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01host=\x7f\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01host=h\xc3\xa9\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01ho5t=h\x01\x01",
        b"n,a=u,\x01auth=MAC t\x01\x01",
    ],
)
def test_oauthbearer_invalid(message: bytes) -> None:
    with pytest.raises(SaslError):
        parse_oauthbearer(message)


def test_encode_oauthbearer_examples() -> None:
    token = Secret(RFC7628_TOKEN)

    assert encode_oauthbearer("", token) == (
        b"n,,\x01auth=Bearer " + RFC7628_TOKEN.encode() + b"\x01\x01"
    )
    assert encode_oauthbearer("a,b=c", Secret("t")) == (
        b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"
    )
    with pytest.raises(SaslError):
        encode_oauthbearer("u\x01", token)
    with pytest.raises(SaslError):
        encode_oauthbearer("u", Secret("bad token"))


# --- SaslCredentials ---------------------------------------------------------------


def test_credentials_repr_hides_secret() -> None:
    credentials = parse_plain(b"\x00tim\x00tanstaaftanstaaf")
    step = Completed(credentials)

    assert "tanstaaftanstaaf" not in repr(credentials)
    assert "tanstaaftanstaaf" not in str(credentials)
    assert "tanstaaftanstaaf" not in repr(step)
    assert "tim" in repr(credentials)


def test_credentials_token_repr_hidden() -> None:
    credentials = parse_oauthbearer(RFC7628_IMAP_MESSAGE)

    assert RFC7628_TOKEN not in repr(credentials)


def test_credentials_keyword_only() -> None:
    with pytest.raises(TypeError):
        SaslCredentials(Mechanism.PLAIN, "", "tim", Secret("pw"), False)  # type: ignore[misc]


# --- SaslServer -----------------------------------------------------------------------


def test_server_plain_with_initial_response() -> None:
    server = SaslServer(Mechanism.PLAIN)
    step = server.start(b64(b"\x00tim\x00tanstaaftanstaaf"))

    assert isinstance(step, Completed)
    assert step.credentials.username == "tim"
    assert step.credentials.secret.reveal() == "tanstaaftanstaaf"
    assert server.finished


def test_server_plain_without_initial_response() -> None:
    server = SaslServer(Mechanism.PLAIN)

    assert server.start(None) == Challenge(b"")
    assert not server.finished

    step = server.respond(b64(b"Ursel\x00Kurt\x00xipj3plmq"))
    assert isinstance(step, Completed)
    assert step.credentials.authzid == "Ursel"
    assert step.credentials.username == "Kurt"


def test_server_plain_empty_initial_response() -> None:
    server = SaslServer(Mechanism.PLAIN)

    with pytest.raises(SaslError):
        server.start(b"=")
    assert server.finished


def test_server_login_without_initial_response() -> None:
    server = SaslServer(Mechanism.LOGIN)

    assert server.start(None) == Challenge(b"Username:")
    assert server.respond(b64(b"alice")) == Challenge(b"Password:")

    step = server.respond(b64(b"vpn:mail"))
    assert isinstance(step, Completed)
    assert step.credentials.mechanism is Mechanism.LOGIN
    assert step.credentials.username == "alice"
    assert step.credentials.secret.reveal() == "vpn:mail"
    assert step.credentials.authzid == ""
    assert step.credentials.is_token is False


def test_server_login_with_initial_response() -> None:
    server = SaslServer(Mechanism.LOGIN)

    assert server.start(b64(b"alice")) == Challenge(b"Password:")

    step = server.respond(b64(b"secret"))
    assert isinstance(step, Completed)
    assert step.credentials.username == "alice"
    assert step.credentials.secret.reveal() == "secret"


@pytest.mark.parametrize("response", [b"", b"="])
def test_server_login_empty_password(response: bytes) -> None:
    server = SaslServer(Mechanism.LOGIN)
    server.start(b64(b"alice"))

    with pytest.raises(SaslError):
        server.respond(response)
    assert server.finished


def test_server_login_empty_username() -> None:
    server = SaslServer(Mechanism.LOGIN)

    with pytest.raises(SaslError):
        server.start(b"=")


@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_server_cancel(mechanism: Mechanism) -> None:
    server = SaslServer(mechanism)
    server.start(None)

    assert server.respond(b"*") == Cancelled()
    assert server.finished
    with pytest.raises(LocalProtocolError):
        server.respond(b"*")


def test_server_login_cancel_at_password() -> None:
    server = SaslServer(Mechanism.LOGIN)
    server.start(None)
    server.respond(b64(b"alice"))

    assert server.respond(b"*") == Cancelled()


@pytest.mark.parametrize("mechanism", [Mechanism.XOAUTH2, Mechanism.OAUTHBEARER])
@pytest.mark.parametrize("initial_response", [None, b"=", b""])
def test_server_token_empty_initial_response(
    mechanism: Mechanism, initial_response: bytes | None
) -> None:
    message = GOOGLE_XOAUTH2_MESSAGE
    if mechanism is Mechanism.OAUTHBEARER:
        message = RFC7628_IMAP_MESSAGE
    server = SaslServer(mechanism)

    assert server.start(initial_response) == Challenge(b"")

    step = server.respond(b64(message))
    assert isinstance(step, Completed)
    assert step.credentials.mechanism is mechanism
    assert step.credentials.is_token is True


def test_server_oauthbearer_initial_response() -> None:
    server = SaslServer(Mechanism.OAUTHBEARER)
    step = server.start(RFC7628_IMAP_RESPONSE)

    assert isinstance(step, Completed)
    assert step.credentials.username == "user@example.com"
    assert step.credentials.secret.reveal() == RFC7628_TOKEN


def test_server_xoauth2_initial_response() -> None:
    server = SaslServer(Mechanism.XOAUTH2)
    step = server.start(GOOGLE_XOAUTH2_RESPONSE)

    assert isinstance(step, Completed)
    assert step.credentials.username == "someuser@example.com"


def test_server_invalid_base64_ends_exchange() -> None:
    server = SaslServer(Mechanism.PLAIN)
    server.start(None)

    with pytest.raises(SaslError):
        server.respond(b"not base64!")
    assert server.finished
    with pytest.raises(LocalProtocolError):
        server.respond(b64(b"\x00tim\x00pw"))


def test_server_calls_out_of_order() -> None:
    server = SaslServer(Mechanism.PLAIN)
    with pytest.raises(LocalProtocolError):
        server.respond(b64(b"\x00tim\x00pw"))

    server.start(b64(b"\x00tim\x00pw"))
    with pytest.raises(LocalProtocolError):
        server.start(None)
    with pytest.raises(LocalProtocolError):
        server.respond(b64(b"\x00tim\x00pw"))


def test_server_mechanism_property() -> None:
    assert SaslServer(Mechanism.LOGIN).mechanism is Mechanism.LOGIN


# --- arbitrary input ---------------------------------------------------------------

PARSERS = [
    parse_plain,
    parse_login_value,
    parse_xoauth2,
    parse_oauthbearer,
    decode_base64,
]

# Bytes drawn mostly from the characters that the parsers split on, so that
# hypothesis reaches deep branches and not only the first check.
structured_bytes = st.lists(
    st.sampled_from(
        [
            b"\x00",
            b"\x01",
            b",",
            b"=",
            b"n",
            b"y",
            b"a=",
            b"p=",
            b"auth=",
            b"user=",
            b"Bearer ",
            b"t",
            b"=2C",
            b"=3D",
            b"\xff",
            b"\xc3",
            b"\r",
            b" ",
        ]
    ),
    max_size=30,
).map(b"".join)

# Messages shaped like XOAUTH2 and OAUTHBEARER, with each part drawn from
# valid and invalid variants, so that every check after the framing runs.
sasl_name = st.lists(
    st.sampled_from([b"u", b"=", b"=2C", b"=3d", b"=4", b"\xff", b"\r", b"\x00"]),
    max_size=6,
).map(b"".join)
key_value = st.tuples(
    st.sampled_from([b"auth", b"user", b"host", b"", b"k3y"]),
    st.sampled_from([b"=", b""]),
    st.sampled_from([b"Bearer t", b"bearer x=", b"Bearer", b"h", b"\x7f", b"\xc3"]),
).map(b"".join)
key_values = st.builds(
    lambda pairs, end: b"".join(pair + b"\x01" for pair in pairs) + end,
    st.lists(key_value, max_size=4),
    st.sampled_from([b"\x01", b"", b"\x01x"]),
)
oauth_shaped = st.one_of(
    key_values,
    st.builds(
        lambda flag, name, pairs: flag + b"," + name + b",\x01" + pairs,
        st.sampled_from([b"n", b"y", b"p=tls-unique", b"F,n", b""]),
        st.one_of(st.just(b""), sasl_name.map(lambda name: b"a=" + name)),
        key_values,
    ),
)
any_message = st.one_of(st.binary(max_size=80), structured_bytes, oauth_shaped)


@pytest.mark.parametrize("parser", PARSERS)
@given(data=any_message)
def test_parsers_raise_only_sasl_error(
    parser: Callable[[bytes], object], data: bytes
) -> None:
    try:
        parser(data)
    except SaslError as error:
        assert isinstance(error, MailProxyError)
        assert isinstance(error, ValueError)


@pytest.mark.parametrize("parser", [parse_xoauth2, parse_oauthbearer])
@settings(max_examples=500)
@given(data=oauth_shaped)
def test_oauth_parsers_raise_only_sasl_error(
    parser: Callable[[bytes], object], data: bytes
) -> None:
    with contextlib.suppress(SaslError):
        parser(data)


@pytest.mark.parametrize("mechanism", list(Mechanism))
@given(
    initial=st.one_of(st.none(), st.binary(max_size=60), any_message.map(b64)),
    responses=st.lists(
        st.one_of(st.binary(max_size=60), any_message.map(b64)), max_size=3
    ),
)
def test_server_raises_only_sasl_error(
    mechanism: Mechanism, initial: bytes | None, responses: list[bytes]
) -> None:
    server = SaslServer(mechanism)
    try:
        step = server.start(initial)
        for response in responses:
            if server.finished:
                break
            step = server.respond(response)
            assert isinstance(step, (Challenge, Completed, Cancelled))
    except SaslError:
        assert server.finished
