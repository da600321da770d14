"""The MLflow web UI in a real headless browser (Debian's Chromium through chromedriver + selenium).

The server (the image's entrypoint as a process, on a MariaDB peer) accepts a made-up load balancer
name in MLFLOW_SERVER_ALLOWED_HOSTS. Chromium resolves that name to 127.0.0.1
(--host-resolver-rules), so the page is requested with the load balancer's Host header while every
byte stays on loopback. The admin's credentials go in as an Authorization header set through the
DevTools protocol (Chromium refuses user:password@ URLs for subresources).

The UI's own API calls are POSTs carrying an Origin header; MLflow 3.17 refuses those from any
non-localhost origin that MLFLOW_SERVER_CORS_ALLOWED_ORIGINS does not list. The server here gets
exactly the allowed hosts the task definition sets and nothing else, so the first test shows
whether the deployed UI works behind the load balancer name.

The screenshots are kept under test-artifacts/ (gitignored).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.support.dbadmin import drop_app_user, prepare_databases
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import Server, client_env, database_env

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

LB_NAME = "mlflow-alb-123.us-east-1.elb.amazonaws.com"      # in MLFLOW_SERVER_ALLOWED_HOSTS
OTHER_LB_NAME = "other-alb-456.us-east-1.elb.amazonaws.com"  # resolves to the server too, not allowed
ADMIN, ADMIN_PASSWORD = "admin", f"ui-admin-{uuid.uuid4().hex[:12]}"
SECRET_KEY = f"ui-flask-key-{uuid.uuid4().hex}"
RENDER_TIMEOUT = 90


def http_status(url: str, host: str | None = None, auth: bool = True) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    if auth:
        req.add_header("Authorization", basic_auth(ADMIN, ADMIN_PASSWORD))
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def ui_server(mariadb):
    tag = uuid.uuid4().hex[:8]
    db_name, auth_name, user, password = f"ui_{tag}", f"ui_{tag}_auth", f"ui_{tag}", f"ui-db-{tag}"
    prepare_databases(mariadb, user, password, db_name, auth_name)  # the admin step, as a deployment runs it
    port = free_port()
    artifacts = Path(tempfile.mkdtemp(prefix="mlflow-ui-artifacts-"))
    env = {**database_env(mariadb, user, password, db_name, auth_name),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts), "MLFLOW_WORKERS": "2",
           # exactly what the load balancer sends; the test's own client uses 127.0.0.1:<port>
           "MLFLOW_SERVER_ALLOWED_HOSTS": f"{LB_NAME}:{port},{LOOPBACK}:{port}"}
    server = Server(env, port=port)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(artifacts, ignore_errors=True)
        for db in (db_name, auth_name):
            with contextlib.suppress(Exception):
                mariadb.drop_database(db)
        with contextlib.suppress(Exception):
            drop_app_user(mariadb, user)


@pytest.fixture(scope="module")
def logged(ui_server):
    """An experiment with one finished run, logged with the real client: (exp_id, exp_name, run_name)."""
    exp_name, run_name = f"ui-experiment-{uuid.uuid4().hex[:6]}", f"ui-run-{uuid.uuid4().hex[:6]}"
    env = ui_server.client_env(ADMIN, ADMIN_PASSWORD)
    with client_env(env):
        client = MlflowClient(ui_server.url)
        exp_id = client.create_experiment(exp_name)
        run = client.create_run(exp_id, run_name=run_name)
        client.log_param(run.info.run_id, "alpha", "0.5")
        for step in range(3):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
        client.set_terminated(run.info.run_id)
    return exp_id, exp_name, run_name


def new_driver(authorization: str | None, profile: str):
    """A headless Chromium (profile in `profile`); with `authorization`, every request carries it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing (bin/setup installs Debian's chromium and chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1600,1000",
                f"--user-data-dir={profile}",
                # both load balancer names lead to the server on loopback; nothing else resolves
                "--host-resolver-rules=MAP *.elb.amazonaws.com 127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(Path(profile) / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.set_page_load_timeout(60)
        driver.execute_cdp_cmd("Network.enable", {})
        if authorization:
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": authorization}})
    except BaseException:
        driver.quit()
        raise
    return driver


@pytest.fixture
def browser():
    """browser(authorization=None) -> a new driver; all are quit and their profiles removed afterwards."""
    made = []

    def new(authorization: str | None = None):
        profile = tempfile.mkdtemp(prefix="mlflow-ui-chromium-")
        made.append((None, profile))
        driver = new_driver(authorization, profile)
        made[-1] = (driver, profile)
        return driver

    yield new
    for driver, profile in made:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def responses(driver) -> list[tuple[str, str, int]]:
    """(resource type, URL, HTTP status) of every response the browser got since the last call."""
    found = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.responseReceived":
            r = msg["params"]["response"]
            found.append((msg["params"].get("type", ""), r["url"], r["status"]))
    return found


def document_statuses(seen: list[tuple[str, str, int]]) -> dict[str, int]:
    return {url: status for kind, url, status in seen if kind == "Document"}


def wait_for_text(driver, texts: list[str], timeout: float) -> str:
    """Wait until the rendered page's visible text contains every one of `texts`; returns that text."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            body = driver.execute_script("return document.body ? document.body.innerText : ''") or ""
        if all(t in body for t in texts):
            return body
        if "Request error" in body or "INTERNAL_ERROR" in body:  # the UI shows an API call that failed
            break
        time.sleep(0.5)
    raise AssertionError(f"the page did not show {texts} (waited up to {timeout:.0f} s); it shows:\n{body[:1500]}")


def save_screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    return path


def test_ui_shows_the_experiment_and_run_through_the_load_balancer_name(ui_server, logged, browser):
    exp_id, exp_name, run_name = logged
    origin = f"http://{LB_NAME}:{ui_server.port}"
    driver = browser(basic_auth(ADMIN, ADMIN_PASSWORD))
    driver.get(f"{origin}/#/experiments/{exp_id}/runs")
    try:
        try:
            wait_for_text(driver, [exp_name, run_name], RENDER_TIMEOUT)
        finally:
            shot = save_screenshot(driver, "ui-experiment-runs.png")
            seen = responses(driver)
        assert shot.stat().st_size > 10_000
        assert document_statuses(seen).get(f"{origin}/") == 200, seen
        assert driver.current_url.startswith(f"{origin}/")
        # every call the page made to the API under the load balancer's name was accepted
        refused = [(url, status) for kind, url, status in seen if "/ajax-api/" in url and status >= 400]
        assert refused == [], f"the UI's API calls were refused: {refused}"
    except AssertionError as e:
        blocked = [line for line in ui_server.output().splitlines() if "Blocked" in line or "Rejected" in line]
        raise AssertionError(f"{e}\nserver says:\n" + "\n".join(blocked[-10:])) from None


def test_ui_without_credentials_gets_401_and_shows_no_run(ui_server, logged, browser):
    exp_id, exp_name, run_name = logged
    origin = f"http://{LB_NAME}:{ui_server.port}"
    driver = browser(None)
    driver.get(f"{origin}/#/experiments/{exp_id}/runs")
    time.sleep(3)  # give a (wrongly) served SPA the time to render the run
    save_screenshot(driver, "ui-without-credentials.png")
    assert document_statuses(responses(driver)).get(f"{origin}/") == 401
    source = driver.page_source
    assert run_name not in source and exp_name not in source


def test_host_header_must_be_allowed(ui_server, logged, browser):
    port = ui_server.port
    api = f"{ui_server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    # the load balancer's name (and the loopback address the test's client uses) are accepted
    assert http_status(api, host=f"{LB_NAME}:{port}")[0] == 200
    assert http_status(api, host=f"{LOOPBACK}:{port}")[0] == 200
    # anything else is refused, even names MLflow accepts by default (localhost, private IPs):
    # MLFLOW_SERVER_ALLOWED_HOSTS replaces the defaults
    for host in (f"{OTHER_LB_NAME}:{port}", f"localhost:{port}", f"10.0.0.5:{port}", LB_NAME, "evil.example.com"):
        status, body = http_status(api, host=host)
        assert status == 403 and b"Invalid Host header" in body, (host, status, body[:200])
    # /health stays open to the load balancer's health checks whatever the Host header
    assert http_status(f"{ui_server.url}/health", host="10.0.3.7:5000", auth=False)[0] == 200
    # and in the browser: the same credentials under a name that is not allowed get 403
    driver = browser(basic_auth(ADMIN, ADMIN_PASSWORD))
    driver.get(f"http://{OTHER_LB_NAME}:{port}/")
    assert document_statuses(responses(driver)).get(f"http://{OTHER_LB_NAME}:{port}/") == 403
    assert "Invalid Host header" in driver.page_source
