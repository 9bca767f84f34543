"""PostgreSQL for the cluster mode of ``infra/servers.py``: Debian's server binaries, a data directory of its own.

Under ``<pipeline home>/postgres/``:

* ``data/``: the cluster (``initdb`` on first start), owned by the OS user the server runs as;
* ``run/``: its unix socket (nothing in ``/var/run/postgresql``, so a system PostgreSQL is not disturbed);
* ``password``: the application role's password, generated once, mode 0600;
* ``pgpass``: the same as a ``.pgpass`` line, mode 0600, for ``psql`` through ``PGPASSFILE``.

The server listens on the loopback host only (``MODELCORE_PG_HOST``, default 127.0.0.1) and on
``MODELCORE_PG_PORT`` (default 5433, beside a system server's 5432). ``initdb`` and ``postgres`` refuse to
run as root: as root they run as the ``postgres`` system user (the data directory is chowned to it); as
anyone else, as that user. Local connections (the socket) use ``peer`` authentication, so the bootstrap
connects as the server's OS user without a password; TCP connections need the role's password
(``scram-sha-256``). The password never appears on a command line or in a log: the servers get it in
their environment (a connection URL), ``psql`` through ``PGPASSFILE``, and the role gets a SCRAM verifier
computed here, so even the SQL that sets it carries no password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import urllib.parse
from pathlib import Path

ROLE = "modelcore"
DATABASES = ("prefect", "mlflow")
SYSTEM_USER = "postgres"  # Debian's package creates it; the server runs as it when infra runs as root


class PostgresError(RuntimeError):
    """PostgreSQL is not installed, its directory is not reachable by its user, or bootstrapping failed."""


def bin_dir() -> Path:
    """Debian's server binaries: ``MODELCORE_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin``.

    ``initdb``/``pg_ctl`` on ``PATH`` are not trusted blindly (on some images they are links into this
    directory, on others another build).
    """
    override = os.environ.get("MODELCORE_PG_BIN")
    if override:
        path = Path(override)
    else:
        versions = sorted(
            (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").is_file()),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        if not versions:
            raise PostgresError(
                "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/postgres): "
                "`make postgres` or `apt-get install postgresql`, or set MODELCORE_PG_BIN"
            )
        path = versions[-1]
    if not (path / "postgres").is_file():
        raise PostgresError(f"no postgres binary in {path} (MODELCORE_PG_BIN)")
    return path


def server_user() -> str | None:
    """The OS user to run the server as: ``postgres`` when we are root, None (ourselves) otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError(
            f"running as root needs the {SYSTEM_USER!r} system user (Debian's package creates it)"
        ) from None
    return SYSTEM_USER


def server_role() -> str:
    """The database superuser ``initdb`` creates: the name of the OS user the server runs as (peer auth)."""
    return server_user() or pwd.getpwuid(os.geteuid()).pw_name


def password(root: Path) -> str:
    """The application role's password: read from ``root/password``, generated (0600) on first use."""
    path = root / "password"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path.read_text().strip()


def write_pgpass(root: Path, host: str, port: int) -> Path:
    """``root/pgpass`` (0600) for ``PGPASSFILE=... psql -h host -p port -U modelcore``."""
    path = root / "pgpass"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{host}:{port}:*:{ROLE}:{password(root)}\n")
    return path


def url(root: Path, host: str, port: int, database: str, driver: str = "postgresql") -> str:
    """A SQLAlchemy URL for ``database`` as the application role (it carries the password: environment only)."""
    secret = urllib.parse.quote(password(root), safe="")
    return f"{driver}://{ROLE}:{secret}@{host}:{port}/{database}"


def scram_verifier(secret: str, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5803), so the SQL never holds the password."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def _run_as_server_user(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    user = server_user()
    extra = {"user": user, "group": user, "extra_groups": []} if user else {}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    return subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, check=False, **extra, **kwargs)


def prepare(root: Path) -> None:
    """Create ``root`` (data, socket dir) for the server's user and ``initdb`` once; idempotent.

    Raises:
        PostgresError: a directory above ``root`` is closed to the server's user, or ``initdb`` failed.
    """
    data, run = root / "data", root / "run"
    root.mkdir(parents=True, exist_ok=True)
    user = server_user()
    for directory in (data, run):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o700)
        if user:
            shutil.chown(directory, user, user)
    if user:
        _check_reachable(root, user)
    if (data / "PG_VERSION").exists():
        return
    done = _run_as_server_user(
        [str(bin_dir() / "initdb"), "-D", str(data), "-U", server_role(), "-E", "UTF8", "--locale=C.UTF-8"]
        + ["--auth-local=peer", "--auth-host=scram-sha-256"],
        timeout=300,
    )
    if done.returncode != 0:
        raise PostgresError(f"initdb {data} failed:\n{done.stdout}{done.stderr}")


def _check_reachable(root: Path, user: str) -> None:
    """The server's user must traverse every directory down to ``root``; the pipeline home gets o+x if needed."""
    uid = pwd.getpwnam(user).pw_uid
    home = root.parent
    if home.stat().st_uid == os.geteuid() and not home.stat().st_mode & stat.S_IXOTH:
        os.chmod(home, home.stat().st_mode | stat.S_IXOTH)  # traverse only: its listing stays private
    for directory in (home, *home.parents):
        info = directory.stat()
        if info.st_uid != uid and not info.st_mode & stat.S_IXOTH:
            raise PostgresError(
                f"{directory} is closed to the {user!r} user the server runs as (mode {stat.filemode(info.st_mode)}); "
                f"`chmod o+x {directory}` or put the pipeline home (MODELCORE_PIPELINE_HOME) elsewhere"
            )


def server_command(root: Path, host: str, port: int) -> list[str]:
    """``postgres`` in the foreground: loopback only, our port, our socket directory (no secret in it)."""
    return [str(bin_dir() / "postgres"), "-D", str(root / "data"), "-h", host, "-p", str(port), "-k", str(root / "run")]


def is_ready(root: Path, host: str, port: int) -> tuple[bool, str]:
    """``pg_isready`` on the TCP address clients use."""
    try:
        done = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-q", "-h", host, "-p", str(port), "-t", "3"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (PostgresError, OSError, subprocess.TimeoutExpired) as error:
        return False, f"pg_isready: {error}"
    if done.returncode == 0:
        return True, f"PostgreSQL accepts connections on {host}:{port}"
    return False, f"PostgreSQL on {host}:{port}: " + {1: "rejecting connections", 2: "no response"}.get(
        done.returncode, f"pg_isready exit status {done.returncode}"
    )


def bootstrap(root: Path, port: int) -> None:
    """The role (its password set to the stored one) and one database per service; idempotent.

    Runs ``psql`` as the server's OS user over the socket in ``root/run`` (peer authentication).
    """
    verifier = scram_verifier(password(root))
    lines = [
        f"SELECT 'CREATE ROLE {ROLE} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')\\gexec",
        f"ALTER ROLE {ROLE} WITH LOGIN PASSWORD '{verifier}';",
    ]
    for database in DATABASES:
        lines.append(
            f"SELECT 'CREATE DATABASE {database} OWNER {ROLE}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{database}')\\gexec"
        )
    done = _run_as_server_user(
        [str(bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(root / "run"), "-p", str(port)]
        + ["-U", server_role(), "-d", "postgres"],
        input="\n".join(lines) + "\n",
        timeout=120,
    )
    if done.returncode != 0:
        raise PostgresError(f"creating role {ROLE!r} and databases {DATABASES} failed:\n{done.stdout}{done.stderr}")
