#!/usr/bin/env python3
"""The image's dependency set: constraints.txt pins MLflow's whole closure, the image installs it
without the packages below, and this module checks that what is installed is exactly that.

    python3 dependency_set.py --install-list   # constraints.txt without OMITTED (image build, pip --no-deps)
    python3 dependency_set.py --check          # exit 1 listing every inconsistency (image build, tests)

`mlflow` (the full distribution: it alone has the UI's js build, the SQL stores' alembic migrations and
the auth app) declares data-science packages that `mlflow server` never imports: the image installs
`mlflow[auth]` with `pip install --no-deps` and every other pin of constraints.txt except OMITTED. So
`pip check` reports exactly those as "not installed"; `--check` is the honest replacement: it evaluates
every installed distribution's Requires-Dist (markers, and the extras requirements.txt asks for) and
fails on anything missing or at a wrong version unless its name is in OMITTED, on an installed
package that is in OMITTED, on one not pinned (or pinned at another version) in constraints.txt, on a
pin that is neither installed nor omitted, on an OMITTED name nothing declares (a stale entry), and on
an installed package nothing installed needs any more (an orphan, e.g. a dependency of an omitted one).

Each omission was checked with an import trace (docs/image.md, "Size"): the server (both apps,
uvicorn workers, the fastapi app with its gateway routes, the UI's static files, GraphQL), alembic
migrations of both schemas on both engines, the admin step, the takeover import and gc import none of
them, or import them only inside try/except ImportError (mlflow.data's dataset registry, mlflow.types'
optional pyarrow/pandas schema helpers). numpy and pandas stay: mlflow.server.fastapi_app imports
mlflow.gateway, which imports numpy (gateway/providers/base.py) and pandas
(metrics/genai/genai_metric.py) unguarded.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name (PEP 503 normalized) -> why the image can do without it
OMITTED: dict[str, str] = {
    "pyarrow": "mlflow: Parquet/dataset helpers and the pyfunc schema; the server's imports of it are guarded",
    "scipy": "mlflow: model evaluation; scikit-learn",
    "scikit-learn": "mlflow: model evaluation and the sklearn flavor (client side)",
    "joblib": "scikit-learn",
    "threadpoolctl": "scikit-learn",
    "narwhals": "scikit-learn",
    "matplotlib": "mlflow: plots of model evaluation and autologging (client side)",
    "contourpy": "matplotlib",
    "cycler": "matplotlib",
    "fonttools": "matplotlib",
    "kiwisolver": "matplotlib",
    "pillow": "matplotlib (mlflow's image logging imports PIL lazily, client side)",
    "pyparsing": "matplotlib",
    "skops": "mlflow: the sklearn flavor's skops serialization (client side)",
    "prettytable": "skops",
    "wcwidth": "prettytable",
    "docker": "mlflow: `mlflow models build-docker` / serving (client side)",
    "gunicorn": "mlflow: `mlflow server --gunicorn-opts`; the image's server runs uvicorn",
    "gitpython": "mlflow-skinny: the git commit tag of runs started by a client",
    "gitdb": "gitpython",
    "smmap": "gitdb",
}
# in the base image, not in the closure
BASE = {"pip", "setuptools", "wheel"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lines(path: Path) -> list[str]:
    return [s for s in (line.split("#", 1)[0].strip() for line in path.read_text().splitlines()) if s]


def pins(path: Path = HERE / "constraints.txt") -> dict[str, str]:
    """constraints.txt as {normalized name: version} (every line name==version)."""
    out = {}
    for line in _lines(path):
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path.name}: {line!r} is not pinned with ==")
        out[normalize(name)] = version.strip()
    return out


def install_list(path: Path = HERE / "constraints.txt") -> list[str]:
    return [f"{name}=={version}" for name, version in pins(path).items() if name not in OMITTED]


def check(root_file: Path = HERE / "requirements.txt", pin_file: Path = HERE / "constraints.txt",
          path: list[str] | None = None) -> list[str]:
    """Every inconsistency of the distributions installed on `path` (default sys.path) with
    requirements.txt, constraints.txt and OMITTED (empty: consistent)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pinned = pins(pin_file)
    installed: dict[str, metadata.Distribution] = {}
    for dist in (metadata.distributions(path=path) if path is not None else metadata.distributions()):
        installed.setdefault(normalize(dist.metadata["Name"]), dist)
    problems: list[str] = []
    for name in sorted(set(installed) - BASE):
        version = installed[name].version
        if name in OMITTED:
            problems.append(f"{name} {version} is installed but OMITTED says the image does without it")
        elif name not in pinned:
            problems.append(f"{name} {version} is installed but not pinned in {pin_file.name}")
        elif pinned[name] != version:
            problems.append(f"{name} is installed at {version}, {pin_file.name} pins {pinned[name]}")
    for name in sorted(set(pinned) - set(installed) - set(OMITTED)):
        problems.append(f"{name}=={pinned[name]} is pinned but not installed (nor OMITTED)")

    roots = [Requirement(line) for line in _lines(root_file)]
    declared: set[str] = set()       # every name some installed or omitted distribution requires
    needed: set[str] = set()         # installed names reachable from requirements.txt over installed ones
    todo: list[tuple[Requirement, str]] = [(r, root_file.name) for r in roots]
    extras_of: dict[str, set[str]] = {}
    while todo:
        req, by = todo.pop()
        name = normalize(req.name)
        declared.add(name)
        if name in OMITTED:
            continue
        dist = installed.get(name)
        if dist is None:
            problems.append(f"{by} requires {req}, which is not installed (nor OMITTED)")
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{by} requires {req}, but {name} {dist.version} is installed")
        new_extras = set(req.extras) - extras_of.get(name, set())
        if name in needed and not new_extras:
            continue
        needed.add(name)
        extras_of.setdefault(name, set()).update(req.extras)
        for text in dist.requires or []:
            sub = Requirement(text)
            envs = [{"extra": e} for e in sorted(extras_of[name])] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append((sub, f"{name} {dist.version}"))
    for name in sorted(OMITTED):
        if not _declared(name, declared):
            problems.append(f"OMITTED names {name}, which nothing in the closure declares (a stale entry)")
    for name in sorted(set(installed) - BASE - needed - set(OMITTED)):
        problems.append(f"{name} is installed but nothing requirements.txt pulls in needs it (an orphan)")
    return problems


def _declared(name: str, declared: set[str]) -> bool:
    """Required by an installed distribution, or by another OMITTED entry that is: a chained entry's
    reason starts with the package that pulls it in (not installed, so its metadata cannot be read)."""
    parent = normalize(re.split(r"[ :(]", OMITTED[name], maxsplit=1)[0])
    return name in declared or (parent in OMITTED and parent != name and _declared(parent, declared))


def main(argv: list[str]) -> int:
    if argv[1:] == ["--install-list"]:
        print("\n".join(install_list()))
        return 0
    if argv[1:] == ["--check"]:
        problems = check()
        for p in problems:
            print(f"dependency set: {p}", file=sys.stderr)
        if not problems:
            print(f"dependency set: consistent ({len(install_list())} pinned packages installed, "
                  f"{len(OMITTED)} omitted: {', '.join(sorted(OMITTED))})")
        return 1 if problems else 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
