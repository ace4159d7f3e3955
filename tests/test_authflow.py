"""Authentication methods, identities and group policies on a session."""

from __future__ import annotations

import base64

from mailproxy_core import events as ev
from mailproxy_core.authflow import certificate_identity, subject_from_ssl
from mailproxy_core.imap import ImapSession
from mailproxy_core.settings import (
    AuthMethod,
    GroupPolicy,
    SessionSettings,
    UpstreamServer,
)
from mailproxy_core.smtp import SmtpSession

MAIL = UpstreamServer(name="mail", host="127.0.0.1", port=10143)
ARCHIVE = UpstreamServer(name="archive", host="127.0.0.1", port=10144)
SUBJECT = (("O", "Example"), ("OU", "staff"), ("CN", "alice"))
A, C, M, P = (
    AuthMethod.AAA,
    AuthMethod.CERTIFICATE,
    AuthMethod.MAILHOST,
    AuthMethod.PIGGYBACK,
)


def settings(methods: set[AuthMethod], **options: object) -> SessionSettings:
    return SessionSettings(  # type: ignore[arg-type]
        methods=frozenset(methods),
        servers={"mail": MAIL, "archive": ARCHIVE},
        default_server="mail",
        **options,
    )


def of_type(events: list[ev.Event], kind: type[ev.Event]) -> list[ev.Event]:
    return [e for e in events if isinstance(e, kind)]


def client_bytes(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToClient))


def test_certificate_identity_attributes() -> None:
    assert certificate_identity(SUBJECT, ("CN", "OU")) == "alice"
    assert certificate_identity(SUBJECT[:2], ("CN", "OU")) == "staff"
    assert certificate_identity(SUBJECT, None) == "CN=alice,OU=staff,O=Example"
    assert certificate_identity((("O", "x"),), ("CN",)) is None


def test_subject_from_ssl_uses_short_names() -> None:
    python_form = ((("organizationName", "Example"),), (("commonName", "alice"),))
    assert subject_from_ssl(python_form) == (("O", "Example"), ("CN", "alice"))


def test_certificate_then_mailhost() -> None:
    session = ImapSession(settings({C, M}))
    session.start(certificate_subject=SUBJECT)
    events = session.receive_client(b"a LOGIN mailuser mailpass\r\n")
    passed = of_type(events, ev.AuthenticationSucceeded)
    assert passed == [ev.AuthenticationSucceeded(method=C)]
    [selected] = of_type(events, ev.UpstreamSelected)
    assert isinstance(selected, ev.UpstreamSelected)
    assert selected.user == "alice"
    assert session.identity == "alice"


def test_certificate_missing_fails_without_upstream() -> None:
    session = ImapSession(settings({C, M}))
    session.start()
    events = session.receive_client(b"a LOGIN mailuser mailpass\r\n")
    [failed] = of_type(events, ev.AuthenticationFailed)
    assert isinstance(failed, ev.AuthenticationFailed)
    assert failed.reason == "client sent no certificate"
    assert not of_type(events, ev.UpstreamSelected)


def test_certificate_and_aaa_must_name_same_user() -> None:
    session = ImapSession(settings({C, A, M}))
    session.start(certificate_subject=SUBJECT)
    events = session.receive_client(b"a LOGIN bob:mailuser bobpass:mailpass\r\n")
    [failed] = of_type(events, ev.AuthenticationFailed)
    assert isinstance(failed, ev.AuthenticationFailed)
    assert failed.method is A
    assert not of_type(events, ev.AuthenticationRequired)


def test_piggyback_request_carries_address_and_identity() -> None:
    session = ImapSession(settings({P, M}))
    session.start(client_address="127.0.0.5")
    events = session.receive_client(b"a LOGIN mailuser mailpass\r\n")
    [request] = of_type(events, ev.AuthenticationRequired)
    assert isinstance(request, ev.AuthenticationRequired)
    assert request.method is P
    assert request.client_address == "127.0.0.5"
    assert request.identity is None
    events = session.authentication_result(P, success=False, reason="no web session")
    assert b"a NO [AUTHENTICATIONFAILED]" in client_bytes(events)


def test_methods_run_in_fixed_order() -> None:
    session = ImapSession(settings({M, A, P, C}))
    session.start(client_address="127.0.0.5", certificate_subject=SUBJECT)
    events = session.receive_client(b"a LOGIN alice:mailuser pw:mailpass\r\n")
    [request] = of_type(events, ev.AuthenticationRequired)
    assert isinstance(request, ev.AuthenticationRequired)
    assert request.method is P
    assert request.identity == "alice"
    events = session.authentication_result(P, success=True)
    [request] = of_type(events, ev.AuthenticationRequired)
    assert isinstance(request, ev.AuthenticationRequired)
    assert request.method is A
    events = session.authentication_result(A, success=True)
    assert of_type(events, ev.UpstreamSelected)


def test_group_policy_forbids_server() -> None:
    policy = GroupPolicy(name="staff", servers=frozenset({"mail"}))
    session = ImapSession(settings({A, M}, group_policies={"staff": policy}))
    session.start()
    session.receive_client(b"a LOGIN vpn:mailuser@archive vpnpass:mailpass\r\n")
    events = session.authentication_result(A, success=True, group="staff")
    [failed] = of_type(events, ev.AuthenticationFailed)
    assert isinstance(failed, ev.AuthenticationFailed)
    assert failed.reason == "group policy 'staff' does not allow server 'archive'"
    assert not of_type(events, ev.UpstreamSelected)


def test_group_policy_forbids_protocol() -> None:
    policy = GroupPolicy(name="staff", protocols=frozenset({"imap4s"}))
    session = SmtpSession(settings({A}, group_policies={"staff": policy}))
    session.start()
    plain = base64.b64encode(b"\0vpnuser\0vpnpass")
    session.receive_client(b"EHLO x\r\nAUTH PLAIN " + plain + b"\r\n")
    events = session.authentication_result(A, success=True, group="staff")
    [failed] = of_type(events, ev.AuthenticationFailed)
    assert isinstance(failed, ev.AuthenticationFailed)
    assert failed.reason == "group policy 'staff' does not allow smtps"


def test_no_group_and_no_default_refused() -> None:
    session = ImapSession(settings({A, M}, default_group_policy=None))
    session.start()
    session.receive_client(b"a LOGIN vpn:mailuser vpnpass:mailpass\r\n")
    events = session.authentication_result(A, success=True)
    [failed] = of_type(events, ev.AuthenticationFailed)
    assert isinstance(failed, ev.AuthenticationFailed)
    assert failed.reason == "no group and no default group policy"


def test_unknown_group_refused() -> None:
    session = ImapSession(settings({A, M}))
    session.start()
    session.receive_client(b"a LOGIN vpn:mailuser vpnpass:mailpass\r\n")
    events = session.authentication_result(A, success=True, group="nosuch")
    [failed] = of_type(events, ev.AuthenticationFailed)
    assert isinstance(failed, ev.AuthenticationFailed)
    assert failed.reason == "group policy 'nosuch' is not configured"


def test_selected_event_carries_policy_and_reject() -> None:
    policy = GroupPolicy(name="staff", max_sessions_per_user=1)
    session = ImapSession(settings({A, M}, group_policies={"staff": policy}))
    session.start()
    session.receive_client(b"a LOGIN vpn:mailuser vpnpass:mailpass\r\n")
    events = session.authentication_result(A, success=True, group="staff")
    [selected] = of_type(events, ev.UpstreamSelected)
    assert isinstance(selected, ev.UpstreamSelected)
    assert selected.policy == policy
    assert selected.user == "vpn"
    events = session.reject_login("user vpn already holds 1 session")
    assert b"a NO [AUTHENTICATIONFAILED]" in client_bytes(events)
    [failed] = of_type(events, ev.AuthenticationFailed)
    assert isinstance(failed, ev.AuthenticationFailed)
    assert failed.reason == "user vpn already holds 1 session"


def test_xoauth2_error_challenge_relayed() -> None:
    session = ImapSession(settings({M}))
    session.start()
    token = base64.b64encode(b"user=mailuser\x01auth=Bearer abc.def\x01\x01")
    events = session.receive_client(b"a AUTHENTICATE XOAUTH2 " + token + b"\r\n")
    assert of_type(events, ev.UpstreamSelected)
    session.upstream_connected()
    greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n"
    events = session.receive_upstream(greeting)
    sent = b"".join(e.data for e in events if isinstance(e, ev.SendToUpstream))
    # The server name typed after the user would be cut off; here the
    # message goes on as the client sent it.
    assert sent == b"mp1 AUTHENTICATE XOAUTH2 " + token + b"\r\n"
    error = base64.b64encode(b'{"status":"401","schemes":"bearer"}')
    events = session.receive_upstream(b"+ " + error + b"\r\n")
    assert client_bytes(events) == b"+ " + error + b"\r\n"
    events = session.receive_client(b"\r\n")
    sent = b"".join(e.data for e in events if isinstance(e, ev.SendToUpstream))
    assert sent == b"\r\n"
    events = session.receive_upstream(
        b"mp1 NO [AUTHENTICATIONFAILED] Invalid token\r\n"
    )
    assert client_bytes(events) == b"a NO [AUTHENTICATIONFAILED] Invalid token\r\n"
