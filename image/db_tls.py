"""TLS to the database: MLFLOW_DB_TLS_CA turned into the URL every connection is made from.

MLFLOW_DB_TLS_CA is the path of a PEM bundle of CA certificates (in the image:
/app/certs/rds-global-bundle.pem, the Amazon RDS global bundle, set by the Dockerfile's ENV).
 - set: every connection uses TLS and verifies the server's certificate chain against that bundle
   only (not the system's CAs) and the host name it connects to against the certificate's names;
 - set but empty (or unset outside the image): plain connections, for a local database server
   without TLS. The drivers' own default would be "TLS if offered, never verified" (PyMySQL
   1.2: PREFERRED mode; libpq: sslmode=prefer), which protects nothing against an impostor, so
   the entrypoint asks for plain explicitly and a server that requires TLS says so at once.

The settings travel in the URL's query string, which is the only thing MLflow's own engines (the
tracking and model registry stores, the basic-auth store and its alembic migrations) are built
from (the backend store URI and the auth ini's database_uri):
 - MySQL, PyMySQL: `ssl_ca=<bundle>&ssl_check_hostname=true`. SQLAlchemy's mysqldb/pymysql
   dialect gathers ssl_* query keys into PyMySQL's `ssl` dict (sqlalchemy/dialects/mysql/
   mysqldb.py, create_connect_args); PyMySQL then requires TLS (`_ssl_required`, error 2026 if
   the server offers none) and builds `ssl.create_default_context(cafile=<bundle>)`: verify_mode
   CERT_REQUIRED and check_hostname true, since a CA is given (pymysql/connections.py,
   _create_ssl_ctx). Plain: `ssl_disabled=true`.
 - PostgreSQL, psycopg2/libpq: `sslmode=verify-full&sslrootcert=<bundle>` (PostgreSQL manual,
   "SSL Support": verify-full checks the chain and that the host name matches the certificate's
   subjectAltName). Plain: `sslmode=disable`.
MLflow's own MLFLOW_MYSQL_SSL_CA/CERT/KEY would be passed to PyMySQL as `ssl_ca=` keyword
arguments, which replace the `ssl` dict with one that does NOT verify the certificate
(verify_mode False unless ssl_verify_identity): they are refused next to MLFLOW_DB_TLS_CA.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

VARIABLE = "MLFLOW_DB_TLS_CA"
IMAGE_BUNDLE = "/app/certs/rds-global-bundle.pem"  # the Dockerfile's ENV default
MLFLOW_MYSQL_SSL = ("MLFLOW_MYSQL_SSL_CA", "MLFLOW_MYSQL_SSL_CERT", "MLFLOW_MYSQL_SSL_KEY")
# query keys through which a URL sets TLS itself (MySQL: SQLAlchemy's ssl_* keys and PyMySQL's
# keyword arguments; PostgreSQL: libpq's connection parameters)
URL_TLS_KEYS = {
    "mysql": ("ssl", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher", "ssl_check_hostname",
              "ssl_disabled", "ssl_verify_cert", "ssl_verify_identity", "ssl_key_password"),
    "postgresql": ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir", "sslsni",
                   "sslnegotiation", "requiressl", "sslpassword"),
}


class TLSSettingError(ValueError):
    """MLFLOW_DB_TLS_CA (or a setting next to it) cannot be used: one line, no secret."""


def ca_bundle(env) -> str | None:
    """The absolute path of the CA bundle named by MLFLOW_DB_TLS_CA, checked to hold at least one
    certificate that OpenSSL loads; None when the variable is unset or empty (plain)."""
    raw = (env.get(VARIABLE) or "").strip()
    if not raw:
        return None
    path = Path(raw).absolute()
    what = f"{VARIABLE}={raw!r}"
    if not path.exists():
        raise TLSSettingError(f"{what}: no such file (the PEM CA bundle that verifies the database server's "
                              f"certificate, or empty for plain connections)")
    if not path.is_file():
        raise TLSSettingError(f"{what} is not a file (expected a PEM CA bundle)")
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as e:
        raise TLSSettingError(f"{what} cannot be read ({e.strerror or e})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise TLSSettingError(f"{what} holds no PEM certificate (-----BEGIN CERTIFICATE----- block)")
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError) as e:
        raise TLSSettingError(f"{what} is not a valid PEM CA bundle ({e})") from None
    return str(path)


def query(kind: str, ca: str | None) -> dict[str, str]:
    """URL query parameters for `kind` ('mysql' or 'postgresql'): verified TLS with `ca`, or plain."""
    if kind == "mysql":
        return {"ssl_ca": ca, "ssl_check_hostname": "true"} if ca else {"ssl_disabled": "true"}
    if kind == "postgresql":
        return {"sslmode": "verify-full", "sslrootcert": ca} if ca else {"sslmode": "disable"}
    return {}


def secure_url(env, kind: str, url, from_uri: bool = False):
    """`url` with the TLS settings of MLFLOW_DB_TLS_CA in its query string.

    A URL the user gave whole (MLFLOW_BACKEND_STORE_URI, `from_uri`) keeps its own TLS settings
    when MLFLOW_DB_TLS_CA is empty, and may not carry any next to a CA bundle (one of them would
    silently win). SQLite: unchanged."""
    if kind not in URL_TLS_KEYS:
        return url
    ca = ca_bundle(env)
    if ca and kind == "mysql":
        given = [name for name in MLFLOW_MYSQL_SSL if (env.get(name) or "").strip()]
        if given:
            raise TLSSettingError(f"{given[0]} is set next to {VARIABLE}: MLflow would hand it to PyMySQL as "
                                  f"ssl_ca=, which turns certificate verification off; unset it")
    own = sorted(k for k in url.query if k.lower() in URL_TLS_KEYS[kind])
    if from_uri:
        if not ca:
            return url
        if own:
            raise TLSSettingError(f"MLFLOW_BACKEND_STORE_URI sets {', '.join(own)} itself and {VARIABLE} is set: "
                                  f"remove them from the URI, or set {VARIABLE}= (empty) to use the URI's own")
    return url.update_query_dict(query(kind, ca))


def _mysql_error(orig) -> tuple[int | None, str]:
    args = getattr(orig, "args", ()) or ()
    code = args[0] if args and isinstance(args[0], int) else None
    message = " ".join(str(args[1]).split()) if len(args) > 1 else " ".join(str(orig).split())
    return code, message


def _verify_detail(message: str) -> str:
    """': self-signed certificate in certificate chain' out of OpenSSL's wording, or ''."""
    m = re.search(r"certificate verify failed:?\s*([^()]*)", message, re.IGNORECASE)
    detail = m.group(1).strip().rstrip(".") if m else ""
    return f": {detail}" if detail else ""


def classify(kind: str, url, exc: Exception) -> tuple[str, str] | None:
    """('tls' or 'login', one line) for a connection error caused by TLS: a certificate the bundle
    does not verify, a certificate for another host name, a server that requires TLS when the
    connection is plain, a server without TLS when TLS is required. None for anything else. None
    of these gets better by waiting."""
    orig = getattr(exc, "orig", None) or exc
    where = f"{url.host}:{url.port}"
    engine = "MySQL" if kind == "mysql" else "PostgreSQL"
    plain = url.query.get("ssl_disabled") == "true" or url.query.get("sslmode") == "disable"
    ca = url.query.get("ssl_ca") or url.query.get("sslrootcert")
    bundle = f"{VARIABLE}={ca}" if ca else VARIABLE
    if kind == "mysql":
        code, message = _mysql_error(orig)
    else:
        code, message = None, " ".join(str(orig).split())
    low = message.lower()

    if "timed out" in low:
        return None  # a handshake that did not finish: db_wait's to judge
    if "mismatch, certificate is not valid for" in low or "does not match host name" in low:
        return "tls", (f"TLS: the certificate of the {engine} server at {where} does not cover host name "
                       f"{url.host!r} (host name verification failed; connect by a name the certificate lists, "
                       f"e.g. the cluster endpoint)")
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        return "tls", (f"TLS: the certificate of the {engine} server at {where} is not signed by a CA in "
                       f"{bundle} (certificate verification failed{_verify_detail(message)})")
    if "root certificate file" in low:
        return "tls", f"TLS: {bundle} cannot be used by the {engine} driver ({message.split(': ', 1)[-1]})"
    if code == 2026 or "server does not support ssl" in low:
        return "tls", (f"TLS: the {engine} server at {where} does not offer TLS and {VARIABLE} requires it "
                       f"(set {VARIABLE}= empty for a local server without TLS)")
    if code == 3159 or "insecure transport are prohibited" in low:
        return "tls", (f"TLS: the {engine} server at {where} refuses connections without TLS "
                       f"(require_secure_transport) and {VARIABLE} is empty: set it to the CA bundle of the "
                       f"server's certificate")
    if kind == "postgresql" and "no pg_hba.conf entry" in low and "no encryption" in low:
        return "tls", (f"TLS: the {engine} server at {where} accepts no connection without TLS from here "
                       f"(pg_hba.conf has no entry without encryption) and {VARIABLE} is empty: set it to the "
                       f"CA bundle of the server's certificate")
    if kind == "mysql" and code == 1045 and plain:
        # MariaDB answers a plain connection under require_secure_transport with "access denied"
        return "login", (f"the {engine} server at {where} refused the login of user {url.username!r} over a "
                         f"plain connection (wrong password? or the server requires TLS: {VARIABLE} is empty)")
    if kind == "mysql" and message.startswith("Can't connect") and "[SSL" in message:
        return "tls", f"TLS: the handshake with the {engine} server at {where} failed ({message})"
    return None
