"""The users file of the built-in ``local`` AAA server group.

Format: UTF-8 text, one user per line, blank lines and lines starting with
``#`` ignored::

    NAME:scrypt:N:R:P:SALT:HASH[:POLICY]

``N``, ``R`` and ``P`` are the scrypt cost parameters (written as
2**14, 8 and 1), ``SALT`` is 16 random bytes and ``HASH`` the 32-byte
scrypt output of the UTF-8 password, both in standard base64. ``POLICY``
is an optional group policy name that a successful login reports. Names
and policies may not contain ``:``, white space or control characters.

``mailproxy user add`` and ``remove`` rewrite the whole file atomically (a
temporary file in the same folder, then a rename) with mode 0600, and
serialize concurrent writers with a lock on ``FILE.lock``. A running proxy
rereads the file when its size, inode or modification time changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import ConfigurationError
from .aaa import AaaResult
from .blocking import BlockingRunner

_log = logging.getLogger(__name__)

#: scrypt cost parameters for new hashes. One hash takes 128 * R * N bytes
#: (16 MiB); it took about 50 ms on the 2-core development machine.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1

_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32
_SCHEME: Final = "scrypt"
_MAX_NAME: Final = 256

# Limits on parameters read from the file, so that a corrupt line cannot
# make one login allocate gigabytes.
_MAX_N: Final = 2**20
_MAX_R: Final = 32
_MAX_P: Final = 16

_HEADER: Final = (
    "# Users of a mailproxy 'local' AAA server group; edit with 'mailproxy user'.\n"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """One user of the users file.

    :param name: the VPN user name.
    :param n: scrypt CPU and memory cost, a power of two.
    :param r: scrypt block size.
    :param p: scrypt parallelization.
    :param salt: the random salt.
    :param password_hash: the scrypt output.
    :param policy: the group policy name, or ``None``.
    """

    name: str
    n: int
    r: int
    p: int
    salt: bytes
    password_hash: bytes
    policy: str | None = None

    def to_line(self) -> str:
        """Return the record as one line of the users file, without newline."""
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.password_hash).decode("ascii")
        fields = [self.name, _SCHEME, str(self.n), str(self.r), str(self.p)]
        fields += [salt, digest]
        if self.policy is not None:
            fields.append(self.policy)
        return ":".join(fields)

    def matches(self, password: str) -> bool:
        """Hash ``password`` with this record's salt and compare in constant time."""
        digest = scrypt(password, self.salt, n=self.n, r=self.r, p=self.p)
        return hmac.compare_digest(digest, self.password_hash)


def scrypt(password: str, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    """Return the 32-byte scrypt hash of the UTF-8 ``password``."""
    # OpenSSL needs 128 * r * (n + p + 2) bytes; the extra MiB is headroom.
    max_memory = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=max_memory,
        dklen=_HASH_BYTES,
    )


def hash_password(name: str, password: str, policy: str | None = None) -> UserRecord:
    """Return a new record for ``name`` with a fresh salt.

    :raises ValueError: when ``name`` or ``policy`` cannot be stored.
    """
    check_name(name, "user name")
    if policy is not None:
        check_name(policy, "group policy")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = scrypt(password, salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return UserRecord(
        name=name,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        salt=salt,
        password_hash=digest,
        policy=policy,
    )


def check_name(name: str, field_name: str) -> None:
    """Raise unless ``name`` can be a field of the users file.

    :param field_name: ``user name`` or ``group policy``, for the message.
    :raises ValueError: naming ``field_name`` and the rule broken.
    """
    if not name:
        raise ValueError(f"{field_name} must not be empty")
    if name.startswith("#"):
        # The users file reads such a line as a comment.
        raise ValueError(f"{field_name} must not start with '#'")
    if len(name) > _MAX_NAME:
        raise ValueError(f"{field_name} is longer than {_MAX_NAME} characters")
    if ":" in name or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(
            f"{field_name} must not contain ':', white space or control characters"
        )


def parse_line(line: str, where: str) -> UserRecord:
    """Parse one non-comment line of the users file.

    :param where: ``FILE:LINE`` for the error message.
    :raises ConfigurationError: when the line is malformed.
    """
    fields = line.split(":")
    if len(fields) not in (7, 8) or fields[1] != _SCHEME:
        raise ConfigurationError(
            f"{where}: expected NAME:scrypt:N:R:P:SALT:HASH[:POLICY]"
        )
    name, _, n_text, r_text, p_text, salt_text, hash_text = fields[:7]
    n, r, p = _parse_costs(n_text, r_text, p_text, where)
    return UserRecord(
        name=name,
        n=n,
        r=r,
        p=p,
        salt=_parse_base64(salt_text, where),
        password_hash=_parse_base64(hash_text, where),
        policy=fields[7] if len(fields) == 8 else None,
    )


def _parse_costs(
    n_text: str, r_text: str, p_text: str, where: str
) -> tuple[int, int, int]:
    if not (n_text.isdigit() and r_text.isdigit() and p_text.isdigit()):
        raise ConfigurationError(f"{where}: N, R and P must be decimal integers")
    n, r, p = int(n_text), int(r_text), int(p_text)
    n_valid = 2 <= n <= _MAX_N and n & (n - 1) == 0
    if not n_valid or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
        raise ConfigurationError(
            f"{where}: scrypt parameters out of range; N must be a power of two "
            f"up to {_MAX_N}, R 1 to {_MAX_R}, P 1 to {_MAX_P}"
        )
    return n, r, p


def _parse_base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ConfigurationError(f"{where}: invalid base64 in salt or hash") from None


class UsersFile:
    """The users file at ``path``, read and rewritten as a whole.

    :param path: the file; a missing file means no users.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, UserRecord]:
        """Read every record, by user name.

        :raises ConfigurationError: for a malformed line or a duplicate
            name, naming the file and line.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as error:
            message = f"cannot read users file {self.path}: {error}"
            raise ConfigurationError(message) from None
        return self._parse(text)

    def _parse(self, text: str) -> dict[str, UserRecord]:
        records: dict[str, UserRecord] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            record = parse_line(stripped, f"{self.path}:{number}")
            if record.name in records:
                raise ConfigurationError(
                    f"{self.path}:{number}: user {record.name!r} is listed twice"
                )
            records[record.name] = record
        return records

    def add(self, record: UserRecord) -> bool:
        """Add ``record`` or replace the user of the same name.

        :returns: whether the user existed before.
        """
        with self._locked():
            records = self.load()
            existed = record.name in records
            records[record.name] = record
            self._write(records.values())
        return existed

    def remove(self, name: str) -> bool:
        """Remove user ``name``.

        :returns: whether the user existed.
        """
        with self._locked():
            records = self.load()
            if records.pop(name, None) is None:
                return False
            self._write(records.values())
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two concurrent 'mailproxy user add' runs would otherwise each
        # write their own copy and one addition would be lost.
        lock_path = self.path.with_name(self.path.name + ".lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _write(self, records: Iterable[UserRecord]) -> None:
        lines = [_HEADER] + [f"{record.to_line()}\n" for record in records]
        descriptor, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}."
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.writelines(lines)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


class LocalAaaGroup:
    """The ``local`` AAA server group, backed by a :class:`UsersFile`.

    :param name: the group name in the configuration.
    :param users_file: path of the users file, read at once.
    :raises ConfigurationError: when the users file is malformed.
    """

    def __init__(self, name: str, users_file: Path) -> None:
        self._name = name
        self._file = UsersFile(users_file)
        self._records: Mapping[str, UserRecord] = {}
        self._identity: tuple[int, int, int] | None = None
        self._dummy = hash_password("dummy", secrets.token_urlsafe(16))
        # scrypt is CPU-bound: more threads than cores would only queue.
        self._runner = BlockingRunner(f"local-{name}", os.cpu_count() or 2)
        self.reload()
        if self._identity is None:
            _log.warning(
                "AAA group %s: users file %s not found; every login fails "
                "until 'mailproxy user add' creates it",
                name,
                users_file,
            )

    @property
    def name(self) -> str:
        """Name of the group in the configuration."""
        return self._name

    def reload(self) -> None:
        """Reread the users file when it changed since the last read.

        :raises ConfigurationError: when the file is malformed; the records
            read before stay in force.
        """
        identity = _file_identity(self._file.path)
        if identity == self._identity:
            return
        self._records = self._file.load()
        self._identity = identity
        _log.info(
            "AAA group %s: loaded %d users from %s",
            self._name,
            len(self._records),
            self._file.path,
        )

    async def authenticate(self, user: str, password: str) -> AaaResult:
        """Check ``password`` for ``user`` in a worker thread.

        :returns: success with the user's group policy, or failure with
            ``unknown user`` or ``wrong password`` as the reason.
        """
        return await self._runner.run(self._verify, user, password)

    def _verify(self, user: str, password: str) -> AaaResult:
        try:
            self.reload()
        except ConfigurationError as error:
            _log.error(
                "AAA group %s: keeping the users read before: %s", self._name, error
            )

        record = self._records.get(user)
        if record is None:
            # Hash anyway, so the time taken does not reveal which names exist.
            self._dummy.matches(password)
            return AaaResult(success=False, reason="unknown user")
        if not record.matches(password):
            return AaaResult(success=False, reason="wrong password")
        return AaaResult(success=True, group=record.policy)
