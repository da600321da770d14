"""The server's JSON responses, built from the protobuf message in one walk instead of three: the same bytes.

What MLflow 3.17.2 does for every REST response (``mlflow/server/handlers.py`` calls
``message_to_json`` of ``mlflow/utils/proto_json_utils.py`` on the response message):

1. ``google.protobuf.json_format.MessageToDict(message, preserving_proto_field_name=True)``: a walk
   over every message, in Python, that writes int64 fields as strings (the proto3 JSON mapping);
2. ``_mark_int64_fields(message)``: a second walk, collecting the int64 fields as numbers;
3. ``_merge_json_dicts``: a third walk, putting those numbers back into the first dict;
4. ``json.dumps(..., indent=2)`` (or compact, ``pretty=False``).

For a 1,000-run ``search_runs`` page (in-process, MariaDB store) ``message_to_json`` took 178 ms of
CPU, 64 of them in step 4, of a call of about 690 (docs/performance.md). This module does 1-3 in one
walk (33 ms; the whole function 97): per message type a plan, made once from the descriptors, says
for each field its JSON name and how its value is written, exactly as ``json_format`` writes it
(enums by name; float through ``ToShortestFloat``; float and double infinities and NaN as
``"Infinity"``, ``"-Infinity"``, ``"NaN"``; strings, bools and integers as they are), with int64
fields as numbers, which is what 2-3 leave. Step 4 is MLflow's own call. The result is the same
dict, in the same key order (``ListFields`` order, as in 1), so ``json.dumps`` gives the same bytes;
tests/server/test_fast_json.py compares both on random instances of every message type of MLflow's
protos and on a running server's responses.

Only message trees made of those field kinds take the one walk. A message type that contains, at any
depth, a map, a ``google.protobuf`` type (well-known types, wrappers and ``NullValue``, which
``json_format`` writes in their own forms), a group or a bytes field goes to MLflow's
``message_to_json``, as does a call with ``convert_int64_to_number=False`` (or with an option this
module does not know, which a later MLflow may add) and any message the walk cannot finish (an
extension set on it, an enum number without a name): MLflow's function then gives its own output, or
its own error; so does anything else the walk or ``json.dumps`` of its dict raises (a string field
holding bytes that are not UTF-8, which upb returns as ``bytes``).

Not every response is faster: for a user who is not an admin, MLflow's basic-auth filters of
``search_experiments``, ``search_registered_models``, ``search_model_versions`` and
``search_logged_models`` (``mlflow/server/auth/__init__.py``) parse the response and write it again
with their own binding of MLflow's function. ``get_run`` and the metric history are not filtered that
way, and a ``search_runs`` page only when it holds run -> logged-model links (mlflow_auth_fastpath/search.py).

Where it hooks in: ``mlflow_patch_hook`` on ``mlflow.server.handlers`` (no other plugin patches
that module): right after it is imported, its global ``message_to_json``, which every handler's
response goes through, is replaced; ``mlflow.utils.proto_json_utils`` itself is left alone (MLflow's
REST clients and other modules keep their binding). Installed like the other plugins: the
``*.dist-info`` beside this package declares a ``mlflow.default_experiment_provider`` entry point,
loaded in every MLflow process at ``import mlflow``. ``MLFLOW_FAST_JSON=false`` in the server's
environment leaves MLflow's function in place (for comparisons; the entrypoint does not set it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading

import mlflow_patch_hook  # beside this package (image/plugins): the import hook the plugins share

TARGET = "mlflow.server.handlers"
ENABLE_ENV = "MLFLOW_FAST_JSON"
_MARK = "_mlflow_fast_json"
_log = logging.getLogger("mlflow.server.fast_json")  # under MLflow's configured "mlflow" logger

# message type (descriptor) -> {field descriptor: (JSON name, converter or None, repeated)}, or None
# when the type's tree holds something only json_format writes correctly
_PLANS: dict = {}
_lock = threading.Lock()


class _Unsupported(Exception):
    pass


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "true").strip().lower() not in ("false", "0", "no", "off")


def installed(module) -> bool:
    """True when ``module`` (``mlflow.server.handlers``) answers through this module's function."""
    return getattr(getattr(module, "message_to_json", None), _MARK, False)


def _special(value: float):
    """json_format's forms of the non-finite floats, or None for a finite one."""
    if math.isinf(value):
        return "-Infinity" if value < 0.0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return None


def _double(value: float):
    special = _special(value)
    return value if special is None else special


def _float_converter():
    from google.protobuf.internal.type_checkers import ToShortestFloat

    def convert(value: float):
        special = _special(value)
        return ToShortestFloat(value) if special is None else special

    return convert


def _enum(enum_type):
    # values_by_number, as json_format looks the name up (with aliases: the same name it finds)
    names = {number: value.name for number, value in enum_type.values_by_number.items()}

    def name(value):
        return names[value]  # KeyError (a number without a name): MLflow's function decides

    return name


def _build(desc, plans: dict) -> None:
    """Plans for ``desc`` and every message type below it, into ``plans``; _Unsupported if any of
    them needs json_format's special handling."""
    from google.protobuf.descriptor import FieldDescriptor as F

    if desc in plans or desc in _PLANS:
        return
    if desc.full_name.startswith("google.protobuf."):
        raise _Unsupported(desc.full_name)  # well-known types and wrappers: their own JSON forms
    plan = plans[desc] = {}
    for field in desc.fields:
        kind = field.cpp_type
        if field.type == F.TYPE_GROUP:  # MLflow's int64 walk looks into TYPE_MESSAGE only
            raise _Unsupported(f"{desc.full_name}.{field.name}: a group")
        if kind == F.CPPTYPE_MESSAGE:
            sub = field.message_type
            if sub.has_options and sub.GetOptions().map_entry:
                raise _Unsupported(f"{desc.full_name}.{field.name}: a map")
            if _PLANS.get(sub, ...) is None:
                raise _Unsupported(sub.full_name)
            _build(sub, plans)
            convert = to_dict
        elif kind == F.CPPTYPE_ENUM:
            if field.enum_type.full_name.startswith("google.protobuf."):  # NullValue is written as null
                raise _Unsupported(field.enum_type.full_name)
            convert = _enum(field.enum_type)
        elif field.type == F.TYPE_BYTES:
            raise _Unsupported(f"{desc.full_name}.{field.name}: bytes")
        elif kind == F.CPPTYPE_FLOAT:
            convert = _float_converter()
        elif kind == F.CPPTYPE_DOUBLE:
            convert = _double
        else:  # string, bool, 32- and 64-bit integers: as they are (int64 as numbers, as MLflow leaves them)
            convert = None
        plan[field] = (field.name, convert, field.is_repeated)


def plan_for(desc):
    """The plan of a message type (made once), or None when it goes to MLflow's function."""
    try:
        return _PLANS[desc]
    except KeyError:
        pass
    with _lock:
        if desc not in _PLANS:
            plans: dict = {}
            try:
                _build(desc, plans)
            except _Unsupported:
                _PLANS[desc] = None
            else:
                _PLANS.update(plans)
        return _PLANS[desc]


def to_dict(message) -> dict:
    """MLflow's dict for ``message`` (steps 1-3 above); its type must have a plan."""
    plan = _PLANS[message.DESCRIPTOR]
    js = {}
    for field, value in message.ListFields():
        name, convert, repeated = plan[field]  # KeyError for an extension: MLflow's function decides
        if convert is None:
            js[name] = list(value) if repeated else value
        elif repeated:
            js[name] = [convert(v) for v in value]
        else:
            js[name] = convert(value)
    return js


def make_message_to_json(original):
    """``message_to_json`` with MLflow's signature and output, falling back to ``original``."""

    def message_to_json(message, *, pretty: bool = True, convert_int64_to_number: bool = True, **other):
        if convert_int64_to_number and not other:  # options a later MLflow may add: its function knows them
            try:
                if plan_for(message.DESCRIPTOR) is not None:
                    js = to_dict(message)
                    return json.dumps(js, indent=2) if pretty else json.dumps(js, separators=(",", ":"))
            except Exception:  # noqa: BLE001 - anything the one walk cannot do: MLflow's answer, or its error
                pass
        return original(message, pretty=pretty, convert_int64_to_number=convert_int64_to_number, **other)

    message_to_json.__doc__ = original.__doc__
    message_to_json._mlflow_fast_json_original = original
    setattr(message_to_json, _MARK, True)
    return message_to_json


def patch(module) -> None:
    """Replace ``module.message_to_json`` (``mlflow.server.handlers``; idempotent); one log line."""
    if installed(module) or not enabled():
        return
    module.message_to_json = make_message_to_json(module.message_to_json)
    _log.info("REST responses: JSON built in one walk (mlflow_fast_json; %s=false: MLflow's message_to_json)",
              ENABLE_ENV)


def install() -> None:
    """Patch now if MLflow's handlers are loaded, else right after they are first imported."""
    mlflow_patch_hook.install(TARGET, patch)


class JsonHook(mlflow_patch_hook.EntryPointHook):
    """The ``mlflow.default_experiment_provider`` entry point: loading it installs the function."""

    target = TARGET
    patch = staticmethod(patch)
