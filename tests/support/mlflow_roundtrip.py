"""Write a known data set through an MLflow server, and dump what a client reads back, as normalized JSON.

    <python> mlflow_roundtrip.py fill <tracking url>    # as the admin (MLFLOW_TRACKING_USERNAME/PASSWORD)
    <python> mlflow_roundtrip.py dump <tracking url>    # prints the JSON on stdout

A standalone script, no import of this project: the upgrade rehearsal (tests/server/
test_upgrade_rehearsal.py) runs `fill` and `dump` with an OLDER MLflow's python (its own client
against its own server), upgrades the database, then runs `dump` with the image's MLflow against the
image's server, and compares the two dumps. Only public client APIs and the basic-auth REST API
(MLflow docs, "Basic HTTP Authentication": users/create, experiments/permissions/create|get,
registered-models/permissions/create|get) are used, as they exist in MLflow 2.22 to 3.17.

The dump holds every field a user sees (ids, names, artifact locations, times, params, every
metric's full history with steps and timestamps, tags, model versions, aliases, stages, users,
their logins and permissions). Left out, because they legitimately differ between the two MLflow
versions rather than in the stored data:
 - tags whose key starts with "mlflow." on model versions and registered models (a newer server
   may add its own bookkeeping tags; the user's tags are compared);
 - run `inputs`/`outputs` and model-version `model_id`/`deployment_job_state`: MLflow 3 concepts
   an MLflow 2 server does not have (empty either way for this data);
 - the experiment list is limited to this data set's experiments plus "Default".
"""

from __future__ import annotations

import json
import math
import os
import sys

import requests

T0 = 1_700_000_000_000  # fixed timestamps (ms): they must read back exactly
USERS = {"alice": "alice-Pa55word-rehearsal", "bob": "bob-Pa55word-rehearsal"}
EXPERIMENTS = ("rehearsal-a", "rehearsal-b", "rehearsal-gone", "alice-exp", "Default")
MODEL = "rehearsal-model"
PERMISSIONS = {  # (user, experiment or model) -> permission, set through the API by the admin
    ("alice", "rehearsal-a"): "EDIT", ("bob", "rehearsal-a"): "READ", ("alice", "rehearsal-b"): "MANAGE",
    ("alice", MODEL): "MANAGE", ("bob", MODEL): "READ",
}


def api(url: str, method: str, path: str, auth=None, **kw) -> requests.Response:
    auth = auth or (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    return requests.request(method, f"{url}/api/2.0/mlflow/{path}", auth=auth, timeout=60, **kw)


def ok(r: requests.Response) -> dict:
    if r.status_code != 200:
        raise SystemExit(f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}")
    return r.json()


def fill(url: str) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    c = MlflowClient(url)
    a = c.create_experiment("rehearsal-a", tags={"team": "ml", "purpose": "upgrade rehearsal"})
    b = c.create_experiment("rehearsal-b", artifact_location="mlflow-artifacts:/custom-b")
    gone = c.create_experiment("rehearsal-gone")
    c.delete_experiment(gone)
    run_ids = []
    for i in range(3):
        run = c.create_run(a, start_time=T0 + i * 1000, tags={"variant": f"v{i}"}, run_name=f"run-{i}")
        r = run.info.run_id
        run_ids.append(r)
        c.log_param(r, "lr", str(0.1 * (i + 1)))
        c.log_param(r, "layers", "3")
        for step in range(5):
            c.log_metric(r, "loss", 1.0 / (step + 1 + i), timestamp=T0 + 10 * step, step=step)
        c.log_metric(r, "acc", 0.5 + i / 10, timestamp=T0 + 99, step=0)
        c.log_metric(r, "acc", 0.75 + i / 10, timestamp=T0 + 100, step=0)  # two values at one step
        c.log_batch(r, metrics=[Metric("f1", 0.25 * (i + 1), T0 + 200, 3), Metric("f1", -1.5, T0 + 300, 7)],
                    params=[Param("optimizer", "adam")], tags=[RunTag("phase", "train")])
        c.set_terminated(r, status="FAILED" if i == 1 else "FINISHED", end_time=T0 + 5000 + i)
    c.delete_run(run_ids[2])
    rb = c.create_run(b, start_time=T0 + 7, run_name="in-b").info.run_id
    c.log_metric(rb, "big", 1e300, timestamp=T0, step=10**9)

    c.create_registered_model(MODEL, tags={"owner": "ml"}, description="a model that survives upgrades")
    for i, r in enumerate(run_ids[:2]):
        c.create_model_version(MODEL, source=f"{c.get_run(r).info.artifact_uri}/model", run_id=r,
                               tags={"built": f"#{i}"}, description=f"version {i + 1}")
    c.set_model_version_tag(MODEL, "1", "validated", "yes")
    c.set_registered_model_alias(MODEL, "champion", "2")
    c.set_registered_model_alias(MODEL, "challenger", "1")
    try:
        c.transition_model_version_stage(MODEL, "1", "Staging")  # deprecated in MLflow 3, still stored
    except Exception as e:  # pragma: no cover - recorded, not fatal
        print(f"stage transition not available: {e}", file=sys.stderr)

    for user, password in USERS.items():
        ok(api(url, "POST", "users/create", json={"username": user, "password": password}))
    ids = {e.name: e.experiment_id for e in c.search_experiments(view_type=3)}
    for (user, thing), permission in PERMISSIONS.items():
        if thing == MODEL:
            ok(api(url, "POST", "registered-models/permissions/create",
                   json={"name": MODEL, "username": user, "permission": permission}))
        else:
            ok(api(url, "POST", "experiments/permissions/create",
                   json={"experiment_id": ids[thing], "username": user, "permission": permission}))
    # an experiment created by a user: the server grants its creator MANAGE
    ok(api(url, "POST", "experiments/create", auth=("alice", USERS["alice"]), json={"name": "alice-exp"}))


def number(x: float):
    return x if math.isfinite(x) else repr(x)


def dump(url: str) -> dict:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    c = MlflowClient(url)
    exps = sorted((e for e in c.search_experiments(view_type=ViewType.ALL) if e.name in EXPERIMENTS),
                  key=lambda e: e.name)
    out: dict = {"experiments": [], "runs": [], "models": [], "users": {}}
    for e in exps:
        out["experiments"].append({"id": e.experiment_id, "name": e.name, "artifact_location": e.artifact_location,
                                   "lifecycle_stage": e.lifecycle_stage, "tags": dict(sorted(e.tags.items())),
                                   "creation_time": e.creation_time, "last_update_time": e.last_update_time})
    runs = c.search_runs([e.experiment_id for e in exps], run_view_type=ViewType.ALL, max_results=1000)
    for run in sorted(runs, key=lambda r: r.info.run_id):
        i, d = run.info, run.data
        out["runs"].append({
            "run_id": i.run_id, "name": i.run_name, "experiment_id": i.experiment_id, "user_id": i.user_id,
            "status": i.status, "start_time": i.start_time, "end_time": i.end_time,
            "lifecycle_stage": i.lifecycle_stage, "artifact_uri": i.artifact_uri,
            "params": dict(sorted(d.params.items())), "tags": dict(sorted(d.tags.items())),
            "latest_metrics": {k: number(v) for k, v in sorted(d.metrics.items())},
            "history": {k: sorted((number(m.value), m.step, m.timestamp) for m in c.get_metric_history(i.run_id, k))
                        for k in sorted(d.metrics)}})
    for m in sorted(c.search_registered_models(), key=lambda m: m.name):
        versions = sorted(c.search_model_versions(f"name='{m.name}'"), key=lambda v: int(v.version))
        out["models"].append({
            "name": m.name, "description": m.description, "creation": m.creation_timestamp,
            "last_updated": m.last_updated_timestamp,
            "tags": {k: v for k, v in sorted(m.tags.items()) if not k.startswith("mlflow.")},
            "aliases": dict(sorted(m.aliases.items())),
            "by_alias": {a: c.get_model_version_by_alias(m.name, a).version for a in sorted(m.aliases)},
            "versions": [{"version": v.version, "source": v.source, "run_id": v.run_id, "status": v.status,
                          "stage": v.current_stage, "description": v.description,
                          "creation": v.creation_timestamp, "last_updated": v.last_updated_timestamp,
                          "aliases": sorted(v.aliases),
                          "tags": {k: t for k, t in sorted(v.tags.items()) if not k.startswith("mlflow.")}}
                         for v in versions]})
    ids = {e["name"]: e["id"] for e in out["experiments"]}
    for user, password in sorted(USERS.items()):
        u = ok(api(url, "GET", "users/get", params={"username": user}))["user"]
        login = api(url, "GET", "experiments/get", auth=(user, password), params={"experiment_id": ids["rehearsal-a"]})
        wrong = api(url, "GET", "experiments/get", auth=(user, password + "x"),
                    params={"experiment_id": ids["rehearsal-a"]})
        perms = grants(url, user, ids)
        # what the grants do: logging a param that run-0 already has (changes nothing) needs EDIT
        run0 = next(r["run_id"] for r in out["runs"] if r["name"] == "run-0")
        edit = api(url, "POST", "runs/log-parameter", auth=(user, password),
                   json={"run_id": run0, "key": "layers", "value": "3"})
        out["users"][user] = {"id": u["id"], "is_admin": u["is_admin"], "login": login.status_code,
                              "wrong password": wrong.status_code, "permissions": perms,
                              "may edit run-0": edit.status_code}
    return out


def grants(url: str, user: str, ids: dict[str, str]) -> dict[str, str]:
    """The user's explicit grants on this data set: {experiment or model name: permission or "none"}.

    MLflow 3.17's RBAC store (auth revision e5f6a7b8c9d0 copies every legacy per-resource row into
    role_permissions) answers GET /api/3.0/mlflow/users/permissions/list and no longer has the
    legacy per-resource GET endpoints; older servers have only those (404 RESOURCE_DOES_NOT_EXIST
    = no grant)."""
    names = {("experiment", i): n for n, i in ids.items()} | {("registered_model", MODEL): MODEL}
    found = {thing: "none" for thing in (*EXPERIMENTS[:-1], MODEL)}
    listed = requests.get(f"{url}/api/3.0/mlflow/users/permissions/list", params={"username": user}, timeout=60,
                          auth=(os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]))
    if listed.status_code == 200:
        for row in ok(listed)["permissions"]:
            thing = names.get((row["resource_type"], row["resource_pattern"]))
            if thing is None or row["workspace"] != "default":
                found[f"{row['workspace']}/{row['resource_type']}/{row['resource_pattern']}"] = row["permission"]
            else:
                found[thing] = row["permission"]
        return found
    for thing in found:
        if thing == MODEL:
            r = api(url, "GET", "registered-models/permissions/get", params={"name": MODEL, "username": user})
            key = "registered_model_permission"
        else:
            r = api(url, "GET", "experiments/permissions/get", params={"experiment_id": ids[thing], "username": user})
            key = "experiment_permission"
        if r.status_code == 200:
            found[thing] = r.json()[key]["permission"]
        elif r.status_code != 404 or r.json().get("error_code") != "RESOURCE_DOES_NOT_EXIST":
            found[thing] = f"HTTP {r.status_code}"
    return found


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("fill", "dump"):
        raise SystemExit("usage: mlflow_roundtrip.py fill|dump <tracking url>")
    if sys.argv[1] == "fill":
        fill(sys.argv[2])
    else:
        print(json.dumps(dump(sys.argv[2]), sort_keys=True))
