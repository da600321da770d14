"""Render bench results (results.json) as the README's Performance section (Markdown)."""

from __future__ import annotations

import json
import math
from pathlib import Path

KINDS = {"log-metric": "log_metric", "log-batch": "log_batch (1,000 metrics)"}
MODES = {"client": "**MLflow client**", "raw": "raw REST"}
TRACKING_TARGET = {1: 4.0, 8: 2.0, 32: 2.0}

# What limits a target when it is missed (shown only for missed targets; measured explanations).
LIMITS = {
    "p99": "tail latency under saturation is set by queueing on 2 vCPUs",
    "upload": "a proxied upload is written whole to the spool, then uploaded to S3 by the server: the bytes "
              "cross the disk twice and the two steps do not overlap (MLflow's artifact handler)",
    "download": "a proxied download is fetched whole from S3 into the spool before the first byte reaches the "
                "client (MLflow's artifact handler), so the transfer time is S3->spool plus spool->client",
    "rss": "the server holds the request body in memory while spooling (MLflow's handler)",
    "pss": "the idle memory is MLflow's workers themselves (about 150-250 MiB of Python each)",
    "start": "start-up is mostly importing MLflow in the server and in each worker; on 2 vCPUs the workers import "
             "in parallel with each other",
}


# bench/image_size.py writes this; the main table's image row reads it (docker image inspect sizes).
IMAGE_SIZE_JSON = Path(__file__).with_name("image_size.json")
# The size issue 14 starts from ("the image is 1.11 GB"); its target is at most half of it.
IMAGE_BEFORE_MB = 1113.0
# Shown only while no image_size.json exists: the sizes docs/image.md recorded ("Size", measured
# 2026-11-30 with `docker image ls`, before image_size.py wrote JSON). No stock image was measured.
RECORDED_IMAGE = {"date": "2026-11-30, recorded in docs/image.md", "method": "`docker image ls`",
                  "note": "built on the local stand-in base image, 273 MB of each",
                  "images": {"before": {"size_mb": IMAGE_BEFORE_MB}, "project": {"size_mb": 538.0}}}


def image_sizes(path: Path = IMAGE_SIZE_JSON) -> dict:
    """bench/image_size.py's last measurement, or the recorded one if it never wrote its JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return RECORDED_IMAGE


def image_row(img: dict) -> tuple[str, tuple[str, bool | None, str]]:
    """The main table's row for the server image and its target (issue 14: at most half of before).
    Images by label: `project`, `before` (the image before the cut), `stock` (`pip install mlflow[auth]`)."""
    ims = img.get("images") or {}
    size = lambda label: (ims.get(label) or {}).get("size_mb")
    before, stock, proj = size("before") or IMAGE_BEFORE_MB, size("stock"), size("project")
    ok = None if proj is None else proj <= before / 2
    ratio = _ratio(proj, stock)
    note = f"; {img['note']}" if img.get("note") else ""
    row = (f"| server image, MB ({img.get('method', '`docker image inspect`')}, {img.get('date', '?')}{note}; "
           f"bench/image_size.py) | "
           f"{_f(stock, 0) if stock else '– (not measured)'} | – | {_f(proj, 0)} (before: {_f(before, 0)}) | "
           f"{_f(ratio, 2) + '×' if ratio else '–'} | ≤ {_f(before / 2, 0)} (half of before, issue 14) | "
           f"{_mark(ok)} |")
    return row, (f"server image ≤ 1/2 of the {_f(before, 0)} MB before (issue 14; {_f(proj, 0)} MB)", ok, "")


def limit_for(kind: str, n: int, a: dict, c: dict, admin: dict | None = None) -> str:
    """Why a tracking target was missed, from the cell's own numbers (a = stock, c = project;
    admin = the same cell of the admin-client variant, if it ran)."""
    ca, cc = a.get("server_cpu_ms_per_call"), c.get("server_cpu_ms_per_call")
    ba, bc = a.get("machine_busy_pct") or 0, c.get("machine_busy_pct") or 0
    parts = []
    if n == 1 and kind == "log-metric":
        parts.append(f"one client waits for each call: stock p50 {_f(a['p50_ms'])} ms"
                     + (" (mostly the ~40 ms stall), " if a["p50_ms"] > 40 else " (no stall), ") +
                     f"project p50 {_f(c['p50_ms'])} ms (the call's own work plus what auth adds)")
    elif n == 1:
        parts.append(f"a log_batch call is mostly database work (1,000 metric rows): stock p50 {_f(a['p50_ms'])} ms, "
                     f"project p50 {_f(c['p50_ms'])} ms, so removing the ~40 ms stall cannot give 4×")
    else:
        parts.append(f"the project's server is CPU-bound here ({_f(bc, 0)} % of the machine's CPUs busy: server, "
                     f"MariaDB, S3 server and the {n} clients share 2 vCPUs)" if bc >= 85 else
                     f"the machine was {_f(bc, 0)} % busy during the project's cell")
        parts.append(f"stock was also CPU-bound ({_f(ba, 0)} % busy): its stalls overlap across {n} connections and 4 "
                     f"workers, so the ratio follows the server CPU per call" if ba >= 85 else
                     f"stock was not CPU-bound ({_f(ba, 0)} % busy): {n} clients each wait out the stall, but they "
                     f"overlap on 4 workers")
    if ca and cc:
        parts.append(f"server CPU per call: stock {_f(ca)} ms (includes its idle job runner), project {_f(cc)} ms")
    if admin and kind == "log-metric":
        parts.append(f"most of the project's extra CPU is MLflow's permission check for a regular user (even with the "
                     f"image's fast path it reads the user, the run's experiment and the user's grants on every "
                     f"call): the same "
                     f"server with admin clients, which skip it, did {_f(admin['rps'])}/s "
                     f"({_f(_ratio(admin['rps'], a['rps']), 2)}× stock; tuning table, shorter windows)")
    return "; ".join(parts)


def _f(x, nd=1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{nd}f}"


def _ratio(a, b) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def _cell(c: dict | None) -> str:
    if not c:
        return "–"
    err = f", **{c['errors']} errors**" if c["errors"] else ", 0 errors"
    return f"**{_f(c['rps'])}**/s · {_f(c['p50_ms'], 0)} / {_f(c['p99_ms'], 0)} ms{err}"


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def render(r: dict) -> str:
    m = r.get("machine", {})
    v = m.get("versions", {})
    s = r.get("settings", {})
    con = r.get("contenders", {})
    stock, auth, proj = con.get("stock", {}), con.get("stock-auth", {}), con.get("project", {})
    out: list[str] = []
    targets: list[tuple[str, bool | None, str]] = []  # (what, met, limit note)
    w = out.append

    w("## Performance")
    w("")
    w(f"Measured {m.get('date', '?')} ({r.get('profile')} profile, {r.get('wall_s', 0) / 60:.1f} min) on "
      f"{m.get('nproc')} vCPU ({m.get('cpu')}), {m.get('mem_gib')} GiB RAM, Linux {m.get('kernel')}. "
      f"MLflow {v.get('mlflow')}, uvicorn {v.get('uvicorn')}, uvloop {v.get('uvloop')}, httptools "
      f"{v.get('httptools')}, Python {v.get('python')}, MariaDB {v.get('mariadb')} (backend store), moto "
      f"{v.get('moto')} (S3). Everything on 127.0.0.1; every server under `taskset -c {r.get('cpus')}` (the same "
      f"CPU budget), sharing the machine with MariaDB, the S3 server and the load generator. Contenders run one "
      f"after the other, each on fresh databases of the same MariaDB. The machine is shared: other people's "
      f"test runs may have used it at times (1-minute load average when each contender started: "
      + ", ".join(f"{k} {_f(x.get('loadavg_at_start'), 2)}" for k, x in con.items()) + "). Absolute "
      f"numbers are this small machine's; compare the ratios, measured side by side in one run."
      + (f" CPU yardstick (bench/proc.py, cpu_calibration: one fixed Python workload, median of 5): "
         f"{_f(cal.get('start'), 0)} ms at the start, {_f(cal.get('end'), 0)} ms at the end; a larger number is a "
         f"slower CPU, for comparing runs made on different days." if (cal := r.get("calibration_ms")) else ""))
    w("")
    w("Reproduce: `bin/setup && .venv/bin/python -m bench` (about 35 min with the tuning variants, "
      "`--no-variants` about 20; `--quick` for an 8-minute smoke run, `--suite` to also time the test suite). See "
      "the README (Performance).")
    w("")
    w("- **stock**: `mlflow server --backend-store-uri mysql+pymysql://… --artifacts-destination s3://… "
      "--host 127.0.0.1 --port P --uvicorn-opts '--loop asyncio --http h11'` (4 workers, GenAI job runner on, "
      "keep-alive 5 s). asyncio + h11 is what `pip install mlflow` (or `mlflow[auth]`) runs: MLflow depends on "
      "plain `uvicorn`, not `uvicorn[standard]`. uvicorn picks uvloop and httptools by itself where they are "
      "installed (this venv has them), which changes the result: see `stock, uvicorn[standard]` in the tuning "
      "table.")
    w("- **stock + basic-auth**: the same plus `--app-name basic-auth` (its defaults: SQLite user store, no "
      "credential cache).")
    w("- **project**: `image/entrypoint.py` with its defaults, auth on, user store on the same MariaDB.")
    w("")
    w(f"Tracking: every client logs to a run of its own; clients are threads in up to 8 processes; "
      f"{_f(s.get('warmup'))} s warm-up, then calls completed in a {_f(s.get('duration'))} s window count. Cells: "
      f"calls/s · p50 / p99 latency. **MLflow client** rows drive `MlflowClient().log_metric` / `.log_batch` "
      f"(what training code runs; credentials from `MLFLOW_TRACKING_USERNAME`/`PASSWORD`; MLflow's HTTP retries "
      f"off so that server errors count as errors): the targets are judged on them. **raw REST** rows post the "
      f"same JSON with one `requests.Session` per client (less client CPU): shown for reference, with their "
      f"ratios.")
    w("")
    w("| Measurement | stock | stock + basic-auth | project (auth on) | project ÷ stock | target | |")
    w("|---|---|---|---|---|---|---|")
    for mode, mlabel in MODES.items():
        for kind, label in KINDS.items():
            for n in s.get("clients", (1, 8, 32)):
                key = f"{mode}:{kind}/{n}"
                a, b, c = (x.get("cells", {}).get(key) for x in (stock, auth, proj))
                if not (a or b or c):
                    continue
                ratio = _ratio(c and c["rps"], a and a["rps"])
                tgt = TRACKING_TARGET.get(n)
                ok = None
                if mode == "client" and ratio is not None and tgt:
                    ok = ratio >= tgt and c["errors"] == 0 and c["p99_ms"] <= a["p99_ms"]
                    why = []
                    if ratio < tgt:
                        adm = (r.get("variants") or {}).get("admin-client", {}).get("cells", {}).get(key)
                        why.append(limit_for(kind, n, a, c, adm))
                    if c["errors"]:
                        why.append(f"{c['errors']} errors: {c.get('first_errors')}")
                    if c["p99_ms"] > a["p99_ms"]:
                        why.append(LIMITS["p99"])
                    targets.append((f"{label}, {n} client{'s' * (n > 1)} (MLflow client): ≥ {tgt:g}× stock calls/s, "
                                    f"0 errors, p99 ≤ stock ({_f(ratio, 2)}×: {_f(c['rps'])} vs {_f(a['rps'])}/s, "
                                    f"p99 {_f(c['p99_ms'], 0)} vs {_f(a['p99_ms'], 0)} ms, {c['errors']} errors)",
                                    ok, "; ".join(why)))
                    tcol = f"≥ {tgt:g}×, 0 errors, p99 ≤ stock"
                else:
                    tcol = "(reference)"
                w(f"| {mlabel}: {label}, {n} client{'s' * (n > 1)} | {_cell(a)} | {_cell(b)} | {_cell(c)} | "
                  f"{_f(ratio, 2) + '×' if ratio else '–'} | {tcol} | {'' if ok is None else _mark(ok)} |")
    fc = [x.get("first_calls") for x in (stock, auth, proj)]
    if any(fc):
        n = next(c["n"] for c in fc if c)
        ratio = _ratio(fc[2] and fc[2]["rps"], fc[0] and fc[0]["rps"])
        w(f"| log_metric, 1 client, first {n} calls after start-up (% of calls > 35 ms) | "
          + " | ".join(f"{_cell(c)} ({_f(c['stalled_pct'], 0)} %)" if c else "–" for c in fc)
          + f" | {_f(ratio, 2) + '×' if ratio else '–'} | (report) | |")
    for name, label in (("page", "1,000 of 10,000 runs, default order"),
                        ("filter", "metric + param filter, order by metric")):
        vals = [x.get("search", {}).get(name, {}).get("p50_ms") for x in (stock, auth, proj)]
        ratio = _ratio(vals[2], vals[0])
        w(f"| search_runs p50 ms ({label}) | {_f(vals[0], 0)} | {_f(vals[1], 0)} | {_f(vals[2], 0)} | "
          f"{_f(ratio, 2) + '×' if ratio else '–'} | (report) | |")
    st = [x.get("start_s") for x in (stock, auth, proj)]
    ratio = _ratio(st[2], st[0])
    ok = None if ratio is None else ratio <= 0.5
    targets.append((f"start-up to /health ≤ 1/2 of stock ({_f(st[2])} s vs {_f(st[0])} s)", ok,
                    "" if ok else LIMITS["start"]))
    w(f"| start-up to /health, s (existing schema) | {_f(st[0])} | {_f(st[1])} | {_f(st[2])} | "
      f"{_f(ratio, 2) + '×' if ratio else '–'} | ≤ 0.5× | {_mark(ok)} |")
    cs = [x.get("cold_start_s") for x in (stock, auth, proj)]
    w(f"| first start on an empty database, s (creates the schema) | {_f(cs[0])} | {_f(cs[1])} | {_f(cs[2])} | "
      f"{_f(_ratio(cs[2], cs[0]), 2)}× | (report) | |")
    pss = [x.get("idle_pss_mib") for x in (stock, auth, proj)]
    procs = [x.get("processes") for x in (stock, auth, proj)]
    ratio = _ratio(pss[2], pss[0])
    ok = None if ratio is None else ratio <= 1 / 3
    targets.append((f"idle PSS ≤ 1/3 of stock ({_f(pss[2], 0)} vs {_f(pss[0], 0)} MiB)", ok,
                    "" if ok else LIMITS["pss"]))
    w(f"| idle memory, PSS MiB (processes) | {_f(pss[0], 0)} ({procs[0]}) | {_f(pss[1], 0)} ({procs[1]}) | "
      f"{_f(pss[2], 0)} ({procs[2]}) | {_f(ratio, 2) + '×' if ratio else '–'} | ≤ 0.33× | {_mark(ok)} |")
    ka = [next(iter((x.get("keepalive_open_after_s") or {None: None}).values())) for x in (stock, auth, proj)]
    idle = next(iter((proj.get("keepalive_open_after_s") or {"?": None}).keys()))
    yn = {True: "open", False: "closed", None: "–"}
    w(f"| idle keep-alive connection after {idle} s | {yn[ka[0]]} | {yn[ka[1]]} | {yn[ka[2]]} | | open "
      f"(keep-alive > ALB idle timeout) | {_mark(None if ka[2] is None else ka[2])} |")
    row, target = image_row(image_sizes())
    w(row)
    targets.append(target)
    w("")
    one = stock.get("cells", {}).get("client:log-metric/1")
    std = (r.get("variants") or {}).get("stock+uvloop", {}).get("cells", {}).get("client:log-metric/1")
    w1 = (r.get("variants") or {}).get("stock-workers=1", {}).get("cells", {}).get("client:log-metric/1")
    if one:
        w(f"Why stock is slow from one client (p50 {_f(one['p50_ms'])} ms): with more than one worker uvicorn binds "
          f"the listening socket itself (protocol 0), so asyncio never sets TCP_NODELAY on the accepted connections "
          f"(uvicorn issue 3149); h11 writes a response's headers and body separately, and Nagle's algorithm holds the "
          f"body until the client's delayed ACK (~40 ms) on every reused keep-alive connection. The raw REST client "
          f"and the MLflow client see the same stall. uvloop sets TCP_NODELAY on every connection"
          + (f": stock with uvloop + httptools installed did {_f(std['rps'])}/s (p50 {_f(std['p50_ms'])} ms)"
             if std else "")
          + (f", stock with one worker {_f(w1['rps'])}/s" if w1 else "")
          + "; the project runs uvloop (tuning table).")
        w("")

    # ---------------------------------------------------------------- artifacts
    d = r.get("direct_s3") or []
    if d:
        up = sum(x["upload_mbps"] for x in d) / len(d)
        down = sum(x["download_mbps"] for x in d) / len(d)
        mib = s.get("artifact_mib", 1024)
        w(f"Artifacts: one {mib:,} MiB file of random bytes, uploaded then downloaded (written to disk). Direct = "
          f"boto3 `upload_file`/`download_file` to the S3 server (mean of {len(d)} runs). Proxy = raw "
          f"`PUT`/`GET /api/2.0/mlflow-artifacts/artifacts/…`, what a client forced onto the proxy "
          f"(`MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false`, `…_DOWNLOAD=false`) sends. RSS growth: peak over "
          f"baseline of the server's summed process-tree RSS, sampled every 0.1 s; spool: peak bytes in its "
          f"TMPDIR.")
        w("")
        if down < 50:
            pres = (proj.get("client_default") or {}).get("download_mbps")
            w(f"Note on downloads: every download here reads from moto, and boto3's ranged multipart download of a "
              f"{mib:,} MiB object from moto ran at {_f(down, 0)} MiB/s"
              + (f", while the MLflow client's default download of the same object (a presigned URL read "
                 f"straight from S3 in 100 MiB ranged GETs) ran at "
                 f"{_f(pres, 0)} MiB/s" if pres else "")
              + ". Stock's proxy downloads from S3 with boto3's ranged download too (into its spool, before the "
                "first byte), so its percentage compares two paths bound by moto's ranged GETs; the project's "
                "proxy streams one GetObject straight to the client (image/plugins/mlflow_stream_download, no "
                "spool), which is why it is many times the direct rate here.")
            w("")
        w("| Path | upload MiB/s (% of direct) | download MiB/s (% of direct) | server RSS growth up / down, MiB | "
          "spool peak up / down, MiB |")
        w("|---|---|---|---|---|")
        rng = lambda k: (f" ({_f(min(x[k] for x in d), 0)}–{_f(max(x[k] for x in d), 0)})" if len(d) > 1 else "")
        w(f"| direct to S3 (boto3; mean, range) | {_f(up, 0)}{rng('upload_mbps')} | {_f(down, 0)}{rng('download_mbps')} "
          f"| – | – |")
        rows = [("stock, proxy", stock.get("proxy_raw")), ("project, proxy", proj.get("proxy_raw"))]
        for label, pr in rows:
            if not pr:
                continue
            u, dn = pr["upload"], pr["download"]
            bad = "" if (u["ok"] and dn["ok"]) else " (**failed**)"
            w(f"| {label}{bad} | {_f(u['mbps'], 0)} ({_f(100 * u['mbps'] / up, 0)} %) | {_f(dn['mbps'], 0)} "
              f"({_f(100 * dn['mbps'] / down, 0)} %) | {_f(u['rss_growth_mib'], 0)} / {_f(dn['rss_growth_mib'], 0)} | "
              f"{_f(u['spool_peak_mib'], 0)} / {_f(dn['spool_peak_mib'], 0)} |")
        for key, label in (("client_forced_proxy", "project, MLflow client, forced proxy"),
                           ("client_default", "project, MLflow client, default (for a file ≥ 500 MiB: presigned "
                                             "S3 multipart upload; any download: presigned S3 URL)")):
            c = proj.get(key)
            if not c:
                continue
            if not c.get("ok"):
                w(f"| {label} | failed: {c.get('error')} | | | |")
                continue
            w(f"| {label} | {_f(c['upload_mbps'], 0)} ({_f(100 * c['upload_mbps'] / up, 0)} %) | "
              f"{_f(c['download_mbps'], 0)} ({_f(100 * c['download_mbps'] / down, 0)} %) | "
              f"{_f(c['rss_growth_mib'], 0)} (both) | {_f(c['spool_peak_mib'], 0)} (both) |")
        w("")
        pr = proj.get("proxy_raw")
        if pr:
            u, dn = pr["upload"], pr["download"]
            targets.append((f"proxy upload ≥ 70 % of direct ({_f(100 * u['mbps'] / up, 1)} %)",
                            u["ok"] and u["mbps"] >= 0.7 * up,
                            f"the upload failed (HTTP {u.get('status')})" if not u["ok"] else
                            "" if u["mbps"] >= 0.7 * up else LIMITS["upload"]))
            targets.append((f"proxy download ≥ 50 % of direct ({_f(100 * dn['mbps'] / down, 1)} %)",
                            dn["ok"] and dn["mbps"] >= 0.5 * down,
                            f"the download failed (HTTP {dn.get('status')})" if not dn["ok"] else
                            "" if dn["mbps"] >= 0.5 * down else LIMITS["download"]))
            g = max(u["rss_growth_mib"], dn["rss_growth_mib"]) * 1.048576  # MiB -> MB
            targets.append((f"server RSS growth < 200 MB during a {mib:,} MiB transfer ({_f(g, 0)} MB)", g < 200,
                            "" if g < 200 else LIMITS["rss"]))

    # ---------------------------------------------------------------- variants
    var = r.get("variants") or {}
    if var:
        w(f"Tuning (the first two rows are stock for reference; then the project's entrypoint, one setting changed from its defaults per row; {_f(s.get('variant_duration'))} s "
          f"windows, each on a fresh database; start-up here includes creating the schema):")
        w("")
        w("| Variant (MLflow client) | log_metric 1 | log_metric 8 | log_metric 32 | log_batch 8 | "
          "server CPU ms / log_metric (8 clients) | database connections, peak at 8 / 32 clients | "
          "idle PSS MiB (processes) | first start s |")
        w("|---|---|---|---|---|---|---|---|---|")
        for key, x in var.items():
            if x.get("error"):
                w(f"| {x.get('label', key)} | failed: {x['error'][:80]} | | | | | | | |")
                continue
            cells = [x.get("cells", {}).get(f"client:{k}")
                     for k in ("log-metric/1", "log-metric/8", "log-metric/32", "log-batch/8")]
            w(f"| {x.get('label', key)} | " + " | ".join(_cell(c) for c in cells)
              + f" | {_f((cells[1] or {}).get('server_cpu_ms_per_call'))} | "
                f"{(cells[1] or {}).get('db_connections_peak', '–')} / {(cells[2] or {}).get('db_connections_peak', '–')} | "
                f"{_f(x.get('idle_pss_mib'), 0)} "
                f"({x.get('processes', '–')}) | {_f(x.get('start_s'))} |")
        w("")

    # ---------------------------------------------------------------- program and suite
    prog = r.get("program") or {}
    w("The Pulumi program (`program.define_stack()` under the unit tests' mocks, a fresh interpreter per stack, "
      "worst of 2):")
    w("")
    if prog.get("skipped"):
        w(f"- {prog['skipped']}")
    else:
        w("| Stack | wall s (process) | of which the program s | resources | target | |")
        w("|---|---|---|---|---|---|")
        for stack in ("dev", "prod"):
            p = prog.get(stack)
            if not p:
                continue
            ok = p["wall_s"] < 10
            targets.append((f"whole program under mocks, {stack}: < 10 s ({_f(p['wall_s'], 2)} s)", ok, ""))
            w(f"| {stack} | {_f(p['wall_s'], 2)} | {_f(p['program_s'], 2)} | {p['resources']} | < 10 s | {_mark(ok)} |")
    suite = r.get("suite")
    if suite:
        w("")
        w(f"Whole test suite (`pytest tests -q`): {_f(suite['wall_s'], 0)} s wall ({suite['summary']}).")
    else:
        w("")
        w("Whole test suite: not timed in this run (`--suite`).")
    w("")

    # ---------------------------------------------------------------- targets
    w("Targets (issue 5):")
    w("")
    for what, ok, why in targets:
        w(f"- {_mark(ok)}: {what}" + (f" — limited by: {why}" if (ok is False and why) else ""))
    errs = {k: x["error"] for k, x in {**con, **var}.items() if x.get("error")}
    for k, e in errs.items():
        w(f"- **{k} failed**: {e}")
    w("")
    return "\n".join(out)
