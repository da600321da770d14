"""Real peers on 127.0.0.1 for the server tests and the benchmarks.

Each class starts a real server from Debian's packages (MariaDB, PostgreSQL) or from PyPI
(moto's S3-compatible server) under a temporary directory of its own, on a free loopback port,
and stops it again. Nothing here listens on or connects to anything but 127.0.0.1 and unix
sockets inside the temporary directory.

    with MariaDB() as db:
        db.create_database("mlflow")
        db.create_user("mlflow", "s3cr3t", databases=["mlflow"])
        uri = db.url("mlflow", "s3cr3t", "mlflow")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

LOOPBACK = "127.0.0.1"

# Credentials for the local S3 server only (moto accepts any); never real ones.
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


class PeerError(RuntimeError):
    """A peer could not be started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"{what or 'process'} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise PeerError(f"{what or 'process'} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """`sig` (SIGTERM), then SIGKILL after `timeout`; always reaps the process."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _is_root() -> bool:
    return os.geteuid() == 0


def _which(*candidates: str) -> str:
    for name in candidates:
        path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    raise PeerError(f"none of {', '.join(candidates)} is installed (bin/setup installs them)")


class _Peer:
    """Common life cycle: a temporary directory, a process, start/stop/restart, context manager."""

    name = "peer"
    stop_signal = signal.SIGTERM

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix=f"mlflow-{self.name}-"))
        self.port = free_port()
        self.host = LOOPBACK
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / f"{self.name}.log"

    # subclasses implement _spawn() and may override _prepare() (first start only)
    def _prepare(self) -> None:  # pragma: no cover - trivial default
        pass

    def _spawn(self) -> subprocess.Popen:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ready(self) -> None:
        wait_for_port(self.port, 60, self.proc, self.name)

    def start(self) -> "_Peer":
        if not getattr(self, "_prepared", False):
            self._prepare()
            self._prepared = True
        self.proc = self._spawn()
        try:
            self._ready()
        except Exception:
            self.stop()
            raise PeerError(f"{self.name} did not start; its log:\n{self.log_tail()}") from None
        return self

    def stop(self) -> None:
        stop_process(self.proc, sig=self.stop_signal)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class _Database(_Peer):
    engine = ""

    def url(self, user: str, password: str, database: str) -> str:
        """SQLAlchemy URL with the password URL-encoded."""
        return f"{self.driver}://{quote(user, safe='')}:{quote(password, safe='')}@{LOOPBACK}:{self.port}/{database}"

    def _ready(self) -> None:
        """The port answers, then the server accepts a query (within 30 s)."""
        super()._ready()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def execute(self, *statements: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class MariaDB(_Database):
    """Debian's MariaDB server (MySQL protocol) on 127.0.0.1; root over the unix socket.

    `tls` (tests/support/tls.py ServerTLS): the server presents that certificate and refuses every
    TCP connection without TLS (require_secure_transport=ON; the unix socket counts as secure).
    """

    name = "mariadb"
    engine = "mysql"
    driver = "mysql+pymysql"

    def __init__(self, root=None, max_connections: int = 500, port: int | None = None, tls=None) -> None:
        super().__init__(root)
        self.port = port or self.port  # a fixed port: e.g. a client started before the server
        self.datadir = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.max_connections = max_connections
        self.tls = tls

    def _user_args(self) -> list[str]:
        return ["--user=root"] if _is_root() else []

    def _prepare(self) -> None:
        install = _which("mariadb-install-db", "mysql_install_db")
        with open(self.log_path, "ab") as log:
            subprocess.run(
                [install, "--no-defaults", f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
                 "--skip-test-db", *self._user_args()],
                stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120,
            )

    def _spawn(self) -> subprocess.Popen:
        mariadbd = _which("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld")
        log = open(self.log_path, "ab")
        return subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
             f"--port={self.port}", f"--bind-address={LOOPBACK}", f"--pid-file={self.root / 'mysqld.pid'}",
             "--skip-name-resolve", "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M",
             f"--max-connections={self.max_connections}", "--character-set-server=utf8mb4",
             "--collation-server=utf8mb4_bin", *self._tls_args(), *self._user_args()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        # performance_schema: each connection's TLS state (threads.CONNECTION_TYPE) can be read
        return [f"--ssl-ca={self.tls.ca_path}", f"--ssl-cert={self.tls.cert_path}", f"--ssl-key={self.tls.key_path}",
                "--require-secure-transport=ON", "--performance-schema=ON"]

    def _connect(self):
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", password="", autocommit=True)

    def execute(self, *statements: str) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def create_user(self, user: str, password: str, databases=(), create_any: bool = False) -> None:
        """A user who may log in over TCP from 127.0.0.1; `create_any` lets it create databases."""
        import pymysql

        pw = pymysql.converters.escape_string(password)
        statements = [f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{pw}'"]
        statements += [f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'127.0.0.1'" for db in databases]
        if create_any:
            statements.append(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1'")
        self.execute(*statements)


class PostgreSQL(_Database):
    """Debian's PostgreSQL 15 on 127.0.0.1 with scram-sha-256 over TCP; superuser over the socket.

    PostgreSQL refuses to run as root: as root, it runs as the `postgres` system user.
    SIGINT is its "fast" shutdown (SIGTERM would wait for every client to disconnect).
    `tls` (tests/support/tls.py ServerTLS): ssl=on with that certificate, and pg_hba.conf's TCP
    lines become `hostssl` lines, so a TCP connection without TLS matches no line and is refused.
    """

    name = "postgresql"
    stop_signal = signal.SIGINT
    engine = "postgresql"
    driver = "postgresql+psycopg2"

    def __init__(self, root=None, max_connections: int = 300, port: int | None = None, tls=None) -> None:
        super().__init__(root)
        self.port = port or self.port  # a fixed port: e.g. a client started before the server
        self.datadir = self.root / "data"
        self.max_connections = max_connections
        self.tls = tls

    def _bin(self, name: str) -> str:
        for version in ("17", "16", "15"):
            path = f"/usr/lib/postgresql/{version}/bin/{name}"
            if os.access(path, os.X_OK):
                return path
        return _which(name)

    @staticmethod
    def _owner() -> dict:
        """Popen arguments that drop root to the `postgres` user (no wrapper process)."""
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if _is_root() else {}

    def _prepare(self) -> None:
        if _is_root():
            shutil.chown(self.root, "postgres", "postgres")
        with open(self.log_path, "ab") as log:
            if _is_root():
                shutil.chown(self.log_path, "postgres", "postgres")
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.datadir), "-U", "postgres",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120, cwd=self.root, **self._owner(),
            )
        if self.tls is not None:
            self._prepare_tls()

    def _prepare_tls(self) -> None:
        """The certificate and key where the server user may read them (the key 0600, its own),
        and TLS-only TCP lines in pg_hba.conf."""
        for name, source in (("server-cert.pem", self.tls.cert_path), ("server-key.pem", self.tls.key_path)):
            target = self.root / name
            shutil.copyfile(source, target)
            os.chmod(target, 0o600)
            if _is_root():
                shutil.chown(target, "postgres", "postgres")
        hba = self.datadir / "pg_hba.conf"
        lines = [("hostssl" + line[4:]) if line.startswith("host ") else line
                 for line in hba.read_text().splitlines()]
        hba.write_text("\n".join(lines) + "\n")

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["-c", "ssl=on", "-c", f"ssl_cert_file={self.root / 'server-cert.pem'}",
                "-c", f"ssl_key_file={self.root / 'server-key.pem'}"]

    def _spawn(self) -> subprocess.Popen:
        log = open(self.log_path, "ab")
        return subprocess.Popen(
            [self._bin("postgres"), "-D", str(self.datadir), "-k", str(self.root),
             "-p", str(self.port), "-h", LOOPBACK, "-c", f"max_connections={self.max_connections}",
             "-c", "fsync=off", "-c", "shared_buffers=64MB", *self._tls_args()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root, **self._owner(),
        )

    def _connect(self):
        import psycopg2

        conn = psycopg2.connect(host=str(self.root), port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        return conn

    def execute(self, *statements: str) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_user(self, user: str, password: str, databases=(), create_any: bool = False) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(f'{verb} ROLE "{user}" LOGIN PASSWORD %s {"CREATEDB" if create_any else ""}', (password,))
                for db in databases:
                    cur.execute(f'ALTER DATABASE "{db}" OWNER TO "{user}"')
        finally:
            conn.close()


class S3Server(_Peer):
    """moto's S3-compatible server (moto[server]) on 127.0.0.1; use `env` for the clients.

    `enforce_iam=True`: IAM enforced, with S3 authorized as AWS documents it (tests/support/moto_iam.py).
    Started with INITIAL_NO_AUTH_ACTION_COUNT; an admin user allowed everything is made in that
    unauthenticated window, then enforcement starts at once (checked: the test key is refused).
    `admin` holds the admin's key (`client()` uses it); every authorization lands in `audit_log`.
    """

    name = "s3"
    BOOTSTRAP_REQUESTS = 100  # moto's unauthenticated window, closed by _ready() as soon as the admin exists

    def __init__(self, root=None, enforce_iam: bool = False) -> None:
        super().__init__(root)
        self.enforce_iam = enforce_iam
        self.admin = dict(S3_TEST_CREDENTIALS)
        self.audit_log = self.root / "iam-audit.jsonl"

    def _spawn(self) -> subprocess.Popen:
        moto = Path(sys.executable).parent / "moto_server"
        argv = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        extra = {}
        if self.enforce_iam:
            argv = [sys.executable, str(Path(__file__).with_name("moto_iam.py"))]
            extra = {"INITIAL_NO_AUTH_ACTION_COUNT": str(self.BOOTSTRAP_REQUESTS),
                     "MOTO_IAM_AUDIT_LOG": str(self.audit_log)}
        log = open(self.log_path, "ab")
        return subprocess.Popen(
            [*argv, "-H", LOOPBACK, "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **S3_TEST_CREDENTIALS, **extra},
        )

    def _ready(self) -> None:
        super()._ready()
        if self.enforce_iam:
            from tests.support.iam import bootstrap_admin, start_enforcing

            region = S3_TEST_CREDENTIALS["AWS_REGION"]
            self.admin = {**S3_TEST_CREDENTIALS, **bootstrap_admin(self.endpoint_url, region, S3_TEST_CREDENTIALS)}
            start_enforcing(self.endpoint_url, region, S3_TEST_CREDENTIALS)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client or server that talks to this S3 server."""
        return {**S3_TEST_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
                "AWS_ENDPOINT_URL_S3": self.endpoint_url, "NO_PROXY": "127.0.0.1,localhost"}

    def client(self, service: str = "s3", region: str = "us-east-1"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=region,
                            aws_access_key_id=self.admin["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.admin["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name
