"""MLflow's basic-auth app with two cheaper lookups in its permission check and a credential
cache that is never stale.

``mlflow server --app-name basic-auth-fastpath`` runs exactly MLflow's own
``mlflow.server.auth.create_app`` (the same routes, validators, grants and decisions) after
four changes to how the check reads the database and verifies credentials, measured in bench/
(README "Performance"):

1. **Run -> experiment.** To authorize a call on a run (``log-metric``, ``log-batch``,
   ``get``, ...), MLflow loads the whole run through ``get_run``: its latest metrics, params,
   tags, dataset inputs and logged-model inputs/outputs, six or more queries, only to read
   ``run.info.experiment_id``. Here that one fetch is answered by MLflow's own run query
   (``SqlAlchemyStore._get_run``, the same workspace scoping and the same "not found" error)
   without the eager loads. A missing run is still denied, a deleted run still resolves to its
   experiment, as before.
2. **User record.** The permission check reads the caller's user record twice per request
   (``sender_is_admin`` and ``resolve_permissions``); here the second read reuses the first,
   within the same request's permission check only (nothing is kept between requests, so a
   change of a user's admin flag or grants applies to the next request exactly as before).
3. **Credentials** (:mod:`.credentials`). MLflow's credential cache (``auth_cache_ttl_seconds``)
   keeps the user record read when a password was first verified, and forgets it only on the
   worker that handled a change: other workers and tasks accept an old password, a deleted user
   or a removed admin flag until its TTL runs out. Here MLflow's cache is off; the user's record
   is read on every request (the read of change 2, shared with the permission check) and only
   the scrypt verdict is kept, keyed by the stored hash it was checked against, for at most
   ``auth_cache_ttl_seconds`` (0: scrypt on every request) and ``auth_cache_max_size`` entries.
4. **One check per request.** MLflow asks who the caller is (``authenticate_request()``) in
   ``_before_request``, again in ``sender_is_admin``, again in the route's validator and again
   in after-request handlers (3 times for a regular user's ``log-metric``, 4 for
   ``experiments/create``), and each call verifies the password again. Here a request's
   successful verdict is kept on that request object and reused by its later calls; the next
   request (a new request object) is verified anew. Nothing else is kept.

The changes are applied only to the MLflow version they were checked against
(:data:`VERIFIED_MLFLOW_VERSIONS`): the code they rely on is internal to MLflow. On any other
version the app logs a warning and runs MLflow's basic-auth app unchanged (but for MLflow's
credential cache, turned off: one scrypt hash per request).

MLflow finds this app through the ``mlflow.app`` entry point in the ``*.dist-info`` directory
beside this package; the image's entrypoint puts this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import functools
import logging

VERIFIED_MLFLOW_VERSIONS = frozenset({"3.17.2"})
"""MLflow versions whose basic-auth code this module was read against and tested with."""

_USERS = "_mlflow_auth_fastpath_users"
_VERDICT = "_mlflow_auth_fastpath_verdict"  # attribute of one request object: its verified Authorization
_log = logging.getLogger("mlflow.server.auth.fastpath")  # under MLflow's configured "mlflow" logger


class _RunInfoRef:
    __slots__ = ("run_id", "experiment_id")

    def __init__(self, run_id: str, experiment_id: str) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id


class _RunRef:
    """What MLflow's ``_run_requirement`` reads from a run: ``run.info.experiment_id``."""

    __slots__ = ("info",)

    def __init__(self, run_id: str, experiment_id: str) -> None:
        self.info = _RunInfoRef(run_id, experiment_id)


def _experiment_of_run(tracking_store, run_id: str) -> _RunRef:
    """The run's experiment from one query (raises MLflow's RESOURCE_DOES_NOT_EXIST like get_run)."""
    with tracking_store.ManagedSessionMaker() as session:
        row = tracking_store._get_run(session, run_id, eager=False)
        return _RunRef(str(row.run_uuid), str(row.experiment_id))


def _fetch_run_experiment_only(fetch_or_none, sql_get_run):
    @functools.wraps(fetch_or_none)
    def fetch(fetcher, resource_id):
        if getattr(fetcher, "__func__", None) is sql_get_run:  # the tracking store's get_run
            tracking_store = fetcher.__self__
            return fetch_or_none(lambda run_id: _experiment_of_run(tracking_store, run_id), resource_id)
        return fetch_or_none(fetcher, resource_id)

    return fetch


def _user_read_once_per_check(get_user):
    import flask

    @functools.wraps(get_user)
    def get_user_memo(username, *args, **kwargs):
        users = flask.g.get(_USERS) if flask.has_app_context() and not args and not kwargs else None
        if users is None:
            return get_user(username, *args, **kwargs)
        if username not in users:
            users[username] = get_user(username)
        return users[username]

    return get_user_memo


def _check_with_user_memo(before_request):
    import flask

    @functools.wraps(before_request)
    def check():
        setattr(flask.g, _USERS, {})
        try:
            return before_request()
        finally:
            flask.g.pop(_USERS, None)

    return check


def _authenticate_against_stored_hash(auth, credentials):
    """MLflow's ``_authenticate_cached`` (the FastAPI path; the Flask path below): the same
    answers, from the user's record read now and a scrypt verdict bound to its hash."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_DOES_NOT_EXIST, ErrorCode

    # what store.authenticate_user answers False for: the errors its user lookup raises (no such
    # user, several), not the session's (a database that is down or paused: 503, retried)
    no_login = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_STATE)}

    @functools.wraps(auth._authenticate_cached)
    def authenticate(username, password):
        try:
            user = auth.store.get_user(username)  # within a check: the read the check shares
        except MlflowException as e:
            if e.error_code not in no_login:
                raise
            return None
        if not credentials.check(username, password, user.password_hash):
            return None
        return None if auth._is_disabled_legacy_admin_login(username, password, user) else user

    return authenticate


def _basic_auth_against_stored_hash(auth, authenticate_request_basic_auth):
    """MLflow's ``authenticate_request_basic_auth`` (the Flask path) on the check above."""
    import flask

    @functools.wraps(authenticate_request_basic_auth)
    def basic_auth():
        authorization = flask.request.authorization
        if authorization is None:
            return auth.make_basic_auth_response()
        if auth._authenticate_cached(authorization.username, authorization.password):
            return authorization
        return auth.make_basic_auth_response()  # let user attempt login again

    return basic_auth


def _verified_once_per_request(basic_auth):
    """``authenticate_request_basic_auth`` once per request: the first call's successful answer
    (werkzeug's ``Authorization``) is kept on the current request object, not in ``flask.g``
    (an app context pushed around several requests, as in tests, keeps ``g`` across them); a
    refusal is not kept (the caller answers it and the request ends)."""
    import flask
    from werkzeug.datastructures import Authorization

    @functools.wraps(basic_auth)
    def once():
        if not flask.has_request_context():
            return basic_auth()
        current = flask.request._get_current_object()
        verdict = getattr(current, _VERDICT, None)
        if verdict is None:
            verdict = basic_auth()
            if isinstance(verdict, Authorization):
                setattr(current, _VERDICT, verdict)
        return verdict

    return once


def install(auth) -> bool:
    """Apply the four changes to the module ``mlflow.server.auth``; False on an MLflow version
    this module was not verified against (nothing changed but MLflow's credential cache: off)."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if getattr(auth, "_mlflow_auth_fastpath", False):
        return True
    if mlflow.__version__ not in VERIFIED_MLFLOW_VERSIONS:
        _log.warning("mlflow-auth-fastpath: MLflow %s is not one of the verified versions %s: running "
                     "MLflow's basic-auth app unchanged", mlflow.__version__, sorted(VERIFIED_MLFLOW_VERSIONS))
        if getattr(auth, "_USER_AUTH_CACHE", None) is not None:  # stale across workers: correct and slow instead
            auth._USER_AUTH_CACHE = None
            _log.warning("mlflow-auth-fastpath: MLflow's credential cache is off (one scrypt hash per request)")
        return False
    auth._fetch_or_none = _fetch_run_experiment_only(auth._fetch_or_none, SqlAlchemyStore.get_run)
    auth.store.get_user = _user_read_once_per_check(auth.store.get_user)
    auth._before_request = _check_with_user_memo(auth._before_request)
    from mlflow_auth_fastpath.credentials import VerifiedCredentials

    credentials = VerifiedCredentials(auth.auth_config.auth_cache_max_size, auth.auth_config.auth_cache_ttl_seconds)
    auth._USER_AUTH_CACHE = None  # MLflow's own (stale) cache: off; _invalidate_user_auth_cache has nothing to drop
    auth._mlflow_auth_fastpath_credentials = credentials
    auth._authenticate_cached = _authenticate_against_stored_hash(auth, credentials)
    auth.authenticate_request_basic_auth = _verified_once_per_request(
        _basic_auth_against_stored_hash(auth, auth.authenticate_request_basic_auth))
    auth.get_auth_func.cache_clear()  # it resolves authenticate_request_basic_auth by name
    from mlflow_auth_fastpath import search  # search_runs: pages without model links skip the re-parse

    search.install(auth)
    auth._mlflow_auth_fastpath = True
    _log.info("mlflow-auth-fastpath: run permission checks read only the run's experiment; the user "
              "record is read once per check; verified credentials are kept by stored hash (%s s, %s entries; "
              "MLflow %s)", credentials.max_age, credentials.max_size, mlflow.__version__)
    return True


def create_app():
    """The ``mlflow.app`` factory: MLflow's basic-auth app, with :func:`install` applied first
    (``create_app`` registers ``_before_request`` by its module-level name, so the order matters)."""
    from mlflow.server import auth

    install(auth)
    if auth.auth_config.authorization_function.startswith("mlflow_auth_fastpath.sso:"):  # single sign-on (sso.py)
        from mlflow_auth_fastpath import sso

        sso.install(auth)  # FastAPI's own routes without the header: MLflow's basic-auth check, as before
    return auth.create_app()
