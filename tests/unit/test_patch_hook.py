"""image/plugins/mlflow_patch_hook.py: the import hook the image's plugins share (mlflow_db_pool,
mlflow_spool_guard, mlflow_stream_download, mlflow_fast_json), on throwaway modules (no MLflow): a
target is patched once, right after its first import, or at once when it is already imported; two
targets hooked in one process are both patched (the server processes load every plugin); hooking a
target again adds no second finder; the entry-point base installs its patch when MLflow creates it. The finder protocol is
the Python documentation's (importlib, ``MetaPathFinder.find_spec``; "The import system", the meta path).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "image" / "plugins"
sys.path.insert(0, str(PLUGINS))
import mlflow_patch_hook as hook  # noqa: E402

sys.path.remove(str(PLUGINS))


@pytest.fixture()
def targets(tmp_path, monkeypatch):
    """Two importable modules of unique names (patch_target_a_<n>, ..._b_<n>) and the finders they leave."""
    suffix = tmp_path.name.replace("-", "_")
    names = [f"patch_target_a_{suffix}", f"patch_target_b_{suffix}"]
    for name in names:
        (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield names
    for name in names:
        sys.modules.pop(name, None)
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not (isinstance(f, hook.PatchAfterImport) and f.module_name in names)]


def marking(seen: list):
    def patch(module):
        seen.append(module.__name__)
        module.patched = getattr(module, "patched", 0) + 1
    return patch


def finders(name: str) -> int:
    return sum(isinstance(f, hook.PatchAfterImport) and f.module_name == name for f in sys.meta_path)


def test_a_target_is_patched_right_after_its_first_import_and_the_finder_is_gone(targets):
    name, seen = targets[0], []
    hook.install(name, marking(seen))
    assert seen == [] and finders(name) == 1
    module = importlib.import_module(name)
    assert module.VALUE == 1 and module.patched == 1 and seen == [name]
    assert finders(name) == 0
    importlib.import_module(name)  # cached: not patched again
    assert module.patched == 1


def test_an_imported_target_is_patched_at_once(targets):
    name, seen = targets[0], []
    module = importlib.import_module(name)
    hook.install(name, marking(seen))
    assert module.patched == 1 and finders(name) == 0


def test_two_targets_in_one_process_are_both_patched(targets):
    """What the server processes do: the pool hook and the spool guard, each with its own target."""
    seen = []
    for name in targets:
        hook.install(name, marking(seen))
    assert [finders(n) for n in targets] == [1, 1]
    modules = [importlib.import_module(n) for n in targets]
    assert [m.patched for m in modules] == [1, 1] and seen == targets


def test_hooking_a_target_again_adds_no_second_finder(targets):
    name, seen = targets[0], []
    hook.install(name, marking(seen))
    hook.install(name, marking(seen))
    assert finders(name) == 1
    assert importlib.import_module(name).patched == 1


def test_an_entry_point_hook_installs_its_patch_when_created_and_is_never_in_context(targets):
    """MLflow creates every ``mlflow.default_experiment_provider`` it loads and asks ``in_context()``."""
    first, _ = targets
    seen = []

    class Hook(hook.EntryPointHook):
        target = first
        patch = staticmethod(seen.append)

    provider = Hook()
    assert provider.in_context() is False
    module = importlib.import_module(first)
    assert seen == [module]


def test_an_entry_point_hook_without_a_target_is_refused_when_defined():
    """MLflow's registry would only warn about the AttributeError at load, leaving the plugin off."""
    with pytest.raises(TypeError, match="target"):
        class NoTarget(hook.EntryPointHook):
            patch = staticmethod(print)


def test_every_plugin_is_installed_in_one_mlflow_process():
    """`import mlflow` loads every entry point (the dist-infos beside them); each target is patched."""
    code = ("import mlflow, mlflow.server.fastapi_app as f, mlflow.store.db.utils as u, mlflow.server.handlers as h, "
            "mlflow_spool_guard as g, mlflow_db_pool as p, mlflow_stream_download as d, mlflow_fast_json as j; "
            "assert g.installed(f), 'spool guard'; assert p.installed(u), 'db pool'; "
            "assert d.installed(f), 'stream download'; assert j.installed(h), 'fast json'; print('ok')")
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env={"PYTHONPATH": str(PLUGINS), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.strip().endswith("ok"), p.stderr[-2000:]
