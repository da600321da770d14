"""Patch one MLflow module right after it is first imported: the import hook the image's plugins share.

``mlflow_db_pool`` (``mlflow.store.db.utils``) and ``mlflow_spool_guard``
(``mlflow.server.fastapi_app``) are loaded as ``mlflow.default_experiment_provider`` entry points
while ``import mlflow`` is still loading its plugins, so neither may import its target then (a
circular import). :func:`install` patches the target at once if it is already imported, and
otherwise puts a finder first on ``sys.meta_path`` that, when the target is first imported, takes
itself off the path, lets the normal finders find the module, and wraps its loader's
``exec_module`` so that the patch runs on the module as soon as its code has run. One finder per
target: installing the same target again adds none.

:class:`EntryPointHook` is the entry point itself: MLflow instantiates every
``mlflow.default_experiment_provider`` while it loads its plugins, and the instance installs its
plugin's patch; as a provider it is never in context, so MLflow asks the next provider.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys


class PatchAfterImport(importlib.abc.MetaPathFinder):
    """Calls ``patch(module)`` right after ``module_name`` is first imported (once; then it is gone)."""

    def __init__(self, module_name: str, patch) -> None:
        self.module_name = module_name
        self.patch = patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module_name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module
            patch = self.patch

            def exec_then_patch(module):
                exec_module(module)
                patch(module)

            spec.loader.exec_module = exec_then_patch
        return spec


def install(module_name: str, patch) -> None:
    """``patch(module)`` now if ``module_name`` is imported, else as soon as it is."""
    if module_name in sys.modules:
        patch(sys.modules[module_name])
    elif not any(isinstance(f, PatchAfterImport) and f.module_name == module_name for f in sys.meta_path):
        sys.meta_path.insert(0, PatchAfterImport(module_name, patch))


class EntryPointHook:
    """Base of the plugins' ``mlflow.default_experiment_provider`` entry points. A subclass names the
    module it patches (``target``) and the patch (``patch``, a staticmethod); creating it installs
    the patch (:func:`install`). It is never in context."""

    target: str

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        if not isinstance(getattr(cls, "target", None), str):  # MLflow would only warn, plugin off
            raise TypeError(f"{cls.__name__}: an EntryPointHook names the module it patches in `target`")

    @staticmethod
    def patch(module) -> None:
        raise NotImplementedError

    def __init__(self) -> None:
        install(self.target, type(self).patch)

    def in_context(self) -> bool:
        return False

    def get_experiment_id(self):  # pragma: no cover - never called (never in context)
        return None
