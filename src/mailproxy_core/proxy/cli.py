"""The ``mailproxy`` command.

``mailproxy serve --config FILE``
    runs the configured listeners until SIGTERM or SIGINT.
``mailproxy check-config FILE``
    validates a configuration and prints its listeners.
``mailproxy user add|remove|list --config FILE --group NAME``
    manages the users file of a ``local`` AAA server group.
``mailproxy piggyback init --config FILE``
    creates the ``web_sessions`` table in the ``[piggyback] database``.
``mailproxy piggyback add --config FILE --address IP --user NAME --ttl SECONDS``
    adds one web session to it, for tests and administrators.

Exit status: 0 on success, 1 when the requested change could not be made
(such as removing an unknown user), 2 for an invalid configuration or
invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sqlite3
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from ..errors import ConfigurationError
from ..transcript import transcript_options
from .aaagroups import build_aaa_group
from .config import AaaGroupConfig, ProxyConfig, load_config
from .listenerconfig import ListenerConfig
from .piggyback import add_web_session, create_database, normalize_address
from .replay import SESSIONS as REPLAY_SESSIONS
from .replay import format_lines, protocol_from_path
from .server import run_proxy
from .tls import describe_key_error, load_key_pair
from .users import UsersFile, check_name, hash_password

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2

_LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CommandError(Exception):
    """A command failed in a way that the user can fix, as its message explains.

    :param message: the text to print.
    :param status: the exit status.
    """

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``mailproxy`` command."""
    parser = argparse.ArgumentParser(
        prog="mailproxy",
        description="Authenticating IMAP4S, POP3S and SMTPS proxy.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy until SIGTERM or SIGINT")
    _add_config_option(serve)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", metavar="FILE", help="the TOML configuration file")

    replay = commands.add_parser(
        "replay",
        help="run a recorded session through the core and print its events as "
        "JSON lines, secrets redacted",
    )
    replay.add_argument(
        "file", metavar="FILE", help="a transcript (mailproxy_core.transcript format)"
    )
    replay.add_argument(
        "--protocol",
        choices=sorted(REPLAY_SESSIONS),
        help="the listener type; default: the transcript's '! protocol=' line, "
        "else its folder name (imap, pop3, smtp)",
    )

    user = commands.add_parser("user", help="manage users of a 'local' AAA group")
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_user_add(actions)
    remove = actions.add_parser("remove", help="delete a user")
    _add_group_options(remove)
    remove.add_argument("user", metavar="USER", help="the VPN user name to delete")
    listing = actions.add_parser("list", help="print the user names, one a line")
    _add_group_options(listing)
    _add_piggyback(commands)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="the TOML configuration file; relative paths in it start at its folder",
    )


def _add_group_options(parser: argparse.ArgumentParser) -> None:
    _add_config_option(parser)
    parser.add_argument(
        "--group",
        required=True,
        metavar="NAME",
        help="the [aaa.NAME] server group of type 'local' whose users file to use",
    )


def _add_user_add(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = actions.add_parser("add", help="add a user, or set a new password")
    _add_group_options(add)
    add.add_argument("user", metavar="USER", help="the VPN user name")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line from standard input instead of "
        "asking twice on the terminal",
    )
    add.add_argument(
        "--policy",
        metavar="NAME",
        help="the group policy name that a successful login reports",
    )


def _add_piggyback(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    piggyback = commands.add_parser(
        "piggyback", help="manage the web sessions database of method piggyback"
    )
    actions = piggyback.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="create the web_sessions table if missing")
    _add_config_option(init)
    add = actions.add_parser("add", help="add a web session, for tests and admins")
    _add_config_option(add)
    add.add_argument(
        "--address", required=True, metavar="IP", help="the client's IP address"
    )
    add.add_argument(
        "--user",
        required=True,
        metavar="NAME",
        help="the portal user name; it must match the VPN identity of logins "
        "that have one",
    )
    add.add_argument(
        "--ttl",
        required=True,
        type=_positive_seconds,
        metavar="SECONDS",
        help="seconds from now until the web session expires",
    )


def _positive_seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid; use a whole number of seconds above 0"
        )
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mailproxy`` command and return its exit status.

    :param argv: the arguments without the program name; ``sys.argv``
        when ``None``.
    """
    arguments = build_parser().parse_args(argv)
    try:
        return _dispatch(arguments)
    except ConfigurationError as error:
        print(f"mailproxy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except CommandError as error:
        print(f"mailproxy: {error}", file=sys.stderr)
        return error.status


def _dispatch(arguments: argparse.Namespace) -> int:
    if arguments.command == "serve":
        return _serve(arguments.config)
    if arguments.command == "check-config":
        return _check_config(arguments.file, sys.stdout)
    if arguments.command == "piggyback":
        return _piggyback(arguments)
    if arguments.command == "replay":
        return _replay(arguments.file, arguments.protocol, sys.stdout)
    if arguments.action == "add":
        return _user_add(arguments)
    if arguments.action == "remove":
        return _user_remove(arguments)
    return _user_list(arguments, sys.stdout)


# replay -----------------------------------------------------------------


def _replay(path: str, protocol: str | None, out: TextIO) -> int:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"cannot read {path!r}: {error}", EXIT_CONFIG) from None
    protocol = (
        protocol
        or transcript_options(text).get("protocol")
        or protocol_from_path(Path(path))
    )
    try:
        for line in format_lines(text, protocol):
            print(line, file=out)
    except ValueError as error:
        raise CommandError(f"{path}: {error}", EXIT_CONFIG) from None
    except BrokenPipeError:
        # A reader such as "head" stopped early; that is not an error.
        return EXIT_OK
    return EXIT_OK


# serve ------------------------------------------------------------------


def _serve(path: str) -> int:
    config = load_config(path)
    logging.basicConfig(level=config.log_level, format=_LOG_FORMAT, stream=sys.stderr)
    if not config.active_listeners():
        raise CommandError("no listener has a 'listen' address", EXIT_CONFIG)
    # The same file checks as check-config, for their clearer messages.
    for listener in config.active_listeners():
        _check_listener_files(listener)
    try:
        asyncio.run(run_proxy(config))
    except (OSError, ssl.SSLError) as error:
        raise CommandError(f"cannot start: {error}") from None
    return EXIT_OK


# check-config -------------------------------------------------------------


def _check_config(path: str, out: TextIO) -> int:
    config = load_config(path)
    if not config.active_listeners():
        raise CommandError(
            f"{config.path}: no listener has a 'listen' address, so serve would "
            "not start; add listen to an [imap4s], [pop3s] or [smtps] table",
            EXIT_CONFIG,
        )
    for listener in config.listeners.values():
        _check_listener_files(listener)
    group_lines = [_check_aaa_group(group) for group in config.aaa_groups.values()]
    print(f"configuration OK: {config.path}", file=out)
    for listener in config.listeners.values():
        for warning in listener.warnings():
            print(f"warning: {warning}", file=out)
    for line in describe_config(config):
        print(line, file=out)
    for line in group_lines:
        print(line, file=out)
    if config.piggyback is not None:
        database = config.piggyback.database
        found = "" if database.is_file() else " (not found yet)"
        print(f"piggyback: web sessions in {database}{found}", file=out)
    return EXIT_OK


def _check_aaa_group(group: AaaGroupConfig) -> str:
    # Building the group checks its settings and that its library exists.
    build_aaa_group(group)
    if group.users_file is None:
        return f"aaa.{group.name}: {group.type}"
    count = len(UsersFile(group.users_file).load())
    return f"aaa.{group.name}: local, {count} users in {group.users_file}"


def _check_listener_files(listener: ListenerConfig) -> None:
    _check_client_ca(listener)
    if listener.certificate is None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        load_key_pair(context, listener.certificate, listener.private_key)
    except (OSError, ssl.SSLError) as error:
        reason = describe_key_error(error, listener.private_key)
        raise ConfigurationError(
            f"{listener.protocol}.certificate: cannot load the certificate and "
            f"key: {reason}"
        ) from None


def _check_client_ca(listener: ListenerConfig) -> None:
    client_certificates = listener.client_certificates
    if client_certificates is None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=client_certificates.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(
            f"{listener.protocol}.client_ca: cannot load the CA bundle: {error}"
        ) from None


def describe_config(config: ProxyConfig) -> list[str]:
    """Return one summary line per configured listener."""
    if not config.listeners:
        return ["no listener is configured; add an [imap4s] table"]
    return [_describe_listener(listener) for listener in config.listeners.values()]


def _describe_listener(listener: ListenerConfig) -> str:
    settings = listener.session
    if listener.listen:
        where = "listens on " + ", ".join(str(a) for a in listener.listen)
    else:
        where = "no listen address, so no listener"
    tls = "STARTTLS required" if settings.starttls_required else "implicit TLS"
    certificate = str(listener.certificate or "throwaway self-signed certificate")
    client_certificates = listener.client_certificates
    if client_certificates is not None:
        mode = "required" if client_certificates.required else "optional"
        certificate += (
            f", client certificates {mode} from {client_certificates.ca_file}"
        )
    methods = ", ".join(method.value for method in settings.ordered_methods())
    if listener.aaa_group:
        methods += f" (AAA group {listener.aaa_group})"
    servers = ", ".join(_describe_server(listener, name) for name in settings.servers)
    return (
        f"{listener.protocol}: {where}; {tls} with {certificate}; "
        f"authentication {methods}; servers {servers or 'none'}; "
        f"outstanding {listener.outstanding or 'unlimited'}"
    )


def _describe_server(listener: ListenerConfig, name: str) -> str:
    server = listener.session.servers[name]
    default = " default" if name == listener.session.default_server else ""
    return f"{name}={server.host}:{server.port}/{server.tls.value}{default}"


# piggyback ----------------------------------------------------------------


def _piggyback(arguments: argparse.Namespace) -> int:
    config = load_config(arguments.config)
    if config.piggyback is None:
        raise CommandError(
            f'{config.path} has no [piggyback] table; add one with database = "FILE"',
            EXIT_CONFIG,
        )
    database = config.piggyback.database
    if arguments.action == "init":
        return _piggyback_init(database)
    return _piggyback_add(arguments, database)


def _piggyback_init(database: Path) -> int:
    try:
        created = create_database(database)
    except sqlite3.Error as error:
        raise CommandError(f"cannot create the table in {database}: {error}") from None
    if created:
        print(f"created table web_sessions in {database}", file=sys.stderr)
    else:
        print(f"table web_sessions exists in {database}; no change", file=sys.stderr)
    return EXIT_OK


def _piggyback_add(arguments: argparse.Namespace, database: Path) -> int:
    user = arguments.user
    if not user or not user.isprintable():
        raise CommandError(
            "--user must not be empty or contain control characters", EXIT_CONFIG
        )
    try:
        address = normalize_address(arguments.address)
    except ValueError:
        raise CommandError(
            f"--address {arguments.address!r} is no IP address", EXIT_CONFIG
        ) from None
    expires_at = int(time.time()) + arguments.ttl
    try:
        add_web_session(
            database, username=user, client_address=address, expires_at=expires_at
        )
    except sqlite3.Error as error:
        raise CommandError(
            f"cannot add the web session to {database}: {error}; if the file or "
            f"table is missing, run 'mailproxy piggyback init' first"
        ) from None
    print(
        f"added web session of {user!r} from {address} to {database}, "
        f"expiring at {expires_at} (Unix time)",
        file=sys.stderr,
    )
    return EXIT_OK


# user -------------------------------------------------------------------


def _users_file(arguments: argparse.Namespace) -> UsersFile:
    config = load_config(arguments.config)
    group = config.aaa_groups.get(arguments.group)
    if group is None:
        known = ", ".join(sorted(config.aaa_groups)) or "none"
        raise CommandError(
            f"--group {arguments.group!r} is not an [aaa.NAME] group of "
            f"{config.path}; configured groups: {known}",
            EXIT_CONFIG,
        )
    if group.users_file is None:
        raise CommandError(
            f"--group {arguments.group!r} is of type {group.type!r}; "
            "mailproxy user manages only groups of type 'local'",
            EXIT_CONFIG,
        )
    return UsersFile(group.users_file)


def _user_add(arguments: argparse.Namespace) -> int:
    users = _users_file(arguments)
    config = load_config(arguments.config)
    try:
        check_name(arguments.user, "user name")
        if arguments.policy is not None:
            check_name(arguments.policy, "group policy")
    except ValueError as error:
        raise CommandError(str(error), EXIT_CONFIG) from None
    _check_user_against_config(arguments.user, arguments.policy, config)
    password = _read_password(arguments.password_stdin)
    # The login splits the typed password at its first name separator, so
    # a VPN password that contains one could never match.
    separator = config.delimiters.name_separator
    if separator in password:
        raise CommandError(
            f"the password contains the name separator {separator!r}; "
            "nothing was changed"
        )
    existed = users.add(hash_password(arguments.user, password, arguments.policy))
    action = "updated" if existed else "added"
    print(f"{action} user {arguments.user!r} in {users.path}", file=sys.stderr)
    return EXIT_OK


def _check_user_against_config(
    user: str, policy: str | None, config: ProxyConfig
) -> None:
    separator = config.delimiters.name_separator
    if separator in user:
        raise CommandError(
            f"user name {user!r} contains the name separator {separator!r}, so "
            "no login could name this user; choose another name",
            EXIT_CONFIG,
        )
    if policy is not None and policy not in config.group_policies:
        known = ", ".join(sorted(config.group_policies)) or "none"
        raise CommandError(
            f"--policy {policy!r} is not a [group_policy.NAME] table of "
            f"{config.path}; configured policies: {known}",
            EXIT_CONFIG,
        )


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        try:
            password = getpass.getpass("Password: ")
            repeated = getpass.getpass("Repeat the password: ")
        except (EOFError, KeyboardInterrupt):
            raise CommandError(
                "no password entered; nothing was changed (without a terminal, "
                "use --password-stdin)"
            ) from None
        if repeated != password:
            raise CommandError("the passwords differ; nothing was changed")
    if not password:
        raise CommandError("the password is empty; nothing was changed")
    return password


def _user_remove(arguments: argparse.Namespace) -> int:
    users = _users_file(arguments)
    if not users.remove(arguments.user):
        raise CommandError(f"user {arguments.user!r} not found in {users.path}")
    print(f"removed user {arguments.user!r} from {users.path}", file=sys.stderr)
    return EXIT_OK


def _user_list(arguments: argparse.Namespace, out: TextIO) -> int:
    users = _users_file(arguments)
    for name, record in sorted(users.load().items()):
        policy = f" (policy {record.policy})" if record.policy else ""
        print(f"{name}{policy}", file=out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
