"""MariaDB and PostgreSQL from Debian's packages as peers (tests/support/peers.py): each under a
temporary directory of its own on a free loopback port, the superuser over a unix socket inside it,
with helpers to make databases and users as a test needs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from urllib.parse import quote

from tests.support.peer_process import LOOPBACK, _is_root, _Peer, _which


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

    def _connect(self):  # pragma: no cover - abstract
        """A DB-API connection as the server's superuser, autocommit on."""
        raise NotImplementedError

    def execute(self, *statements: str) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()


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
