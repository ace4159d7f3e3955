"""Session fixtures for OAuth 2.0 bearer token logins against real servers.

``oauth_server`` runs a token introspection endpoint (RFC 7662).
``dovecot_oauth`` runs a second Dovecot, apart from the ``dovecot`` fixture,
whose oauth2 passdb checks XOAUTH2 and OAUTHBEARER tokens at that endpoint
while PLAIN and LOGIN still check the password file. It serves the same
users and the same seeded INBOX. ``postfix_oauth`` runs a Postfix
submission server that authenticates through that Dovecot, so SMTP AUTH
with a token works too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import INSTALL_HINT, POSTFIX_INSTALL_HINT, keep_log, unavailable
from .dovecot import DovecotServer, find_dovecot, running_dovecot
from .oauthserver import IntrospectionServer, running_introspection_server
from .postfix import PostfixServer, find_postfix, running_postfix

#: A token that the introspection endpoint reports active for mailuser.
GOOD_TOKEN = "mailuser-token.v1_Zm9vYmFy"

#: A token that the introspection endpoint reports active for otheruser.
OTHER_USER_TOKEN = "otheruser-token.v1_YmF6cXV4"

#: A token that the introspection endpoint does not know.
BAD_TOKEN = "expired-token.v1_cXV1eA"

#: A 3000-character token for mailuser that uses every character of the
#: RFC 6750 b64token alphabet, as long as the JWTs of some providers.
LONG_TOKEN = "long." + ("Ab9-._~+/" * 334)[:2990] + "=="


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[IntrospectionServer]:
    """Run one token introspection endpoint for the whole test session.

    :returns: A generator that yields the running server, which reports
        :data:`GOOD_TOKEN`, :data:`OTHER_USER_TOKEN` and :data:`LONG_TOKEN`
        as active.
    """
    tokens = {
        GOOD_TOKEN: "mailuser",
        OTHER_USER_TOKEN: "otheruser",
        LONG_TOKEN: "mailuser",
    }
    with running_introspection_server(tokens) as server:
        yield server


@pytest.fixture(scope="session")
def dovecot_oauth(
    oauth_server: IntrospectionServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DovecotServer]:
    """Run one Dovecot that accepts bearer tokens, for the whole session.

    :param oauth_server: The introspection endpoint that checks the tokens.
    :param tmp_path_factory: Provides the folder that keeps Dovecot's log
        after the run.
    :returns: A generator that yields the running server.
    """
    binary = find_dovecot()
    if binary is None:
        unavailable(f"dovecot is not installed; {INSTALL_HINT}")
    if os.geteuid() != 0:
        unavailable("the dovecot_oauth fixture needs root; run the tests as root")

    # Dovecot's processes drop root before they read below this folder, as
    # for the dovecot fixture.
    root = Path(tempfile.mkdtemp(prefix="mailproxy-dovecot-oauth-"))
    root.chmod(0o711)
    try:
        with running_dovecot(
            binary, root, introspection_url=oauth_server.url
        ) as server:
            yield server
    finally:
        keep_log(root / "dovecot.log", tmp_path_factory.mktemp("dovecot-oauth"))
        shutil.rmtree(root)


@pytest.fixture(scope="session")
def postfix_oauth(
    dovecot_oauth: DovecotServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostfixServer]:
    """Run one Postfix submission server that authenticates with tokens too.

    Postfix hands every SASL mechanism that Dovecot offers to its clients,
    XOAUTH2 and OAUTHBEARER included.

    :param dovecot_oauth: The Dovecot that checks logins and stores mail.
    :param tmp_path_factory: Provides the folder that keeps Postfix's log
        after the run.
    :returns: A generator that yields the running server.
    """
    binary = find_postfix()
    if binary is None:
        unavailable(f"postfix is not installed; {POSTFIX_INSTALL_HINT}")
    if dovecot_oauth.lmtp_socket is None:
        unavailable(f"dovecot-lmtpd is not installed; {POSTFIX_INSTALL_HINT}")

    root = Path(tempfile.mkdtemp(prefix="mailproxy-postfix-oauth-"))
    root.chmod(0o755)
    try:
        with running_postfix(
            binary, root, dovecot_oauth.auth_socket, dovecot_oauth.lmtp_socket
        ) as server:
            yield server
    finally:
        keep_log(root / "postfix.log", tmp_path_factory.mktemp("postfix-oauth"))
        shutil.rmtree(root)
