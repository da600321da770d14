"""The server's JSON responses through image/plugins/mlflow_fast_json are byte for byte MLflow's.

MLflow 3.17.2 writes every REST response with ``message_to_json`` (mlflow/utils/proto_json_utils.py:
``json_format.MessageToDict``, then its own int64 walk and merge, then ``json.dumps(indent=2)``); the
plugin builds the same dict in one walk. Compared here:

* random instances of every message type in MLflow's protos (``mlflow.protos``), with the values
  json_format writes in special forms (NaN, infinities, -0.0, float32 rounding, the int64 limits,
  non-ASCII and control characters), pretty and compact, against MLflow's own function; the types
  that must go to MLflow's function (maps, ``google.protobuf`` types, bytes) do, and still match;
* a running server with the plugin against one on the same databases with ``MLFLOW_FAST_JSON=false``:
  the bytes of the responses the UI and the MLflow client read most;
* that the entry point installs it on ``import mlflow`` wherever ``mlflow.server.handlers`` is
  imported, and that ``MLFLOW_FAST_JSON=false`` leaves MLflow's function.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.auth_pair import shared_env
from tests.support.server import PYTHON, Server

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "image" / "plugins"
API = "/api/2.0/mlflow"


def _plugin():
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    import mlflow_fast_json

    return mlflow_fast_json


def _message_types() -> list:
    """Every message descriptor (nested ones too) of the modules under ``mlflow.protos``."""
    import mlflow.protos

    seen, out = set(), []

    def walk(desc):
        if desc.full_name in seen:
            return
        seen.add(desc.full_name)
        out.append(desc)
        for nested in desc.nested_types:
            walk(nested)

    for info in pkgutil.walk_packages(mlflow.protos.__path__, "mlflow.protos."):
        if not info.name.endswith("_pb2"):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - a proto module needing an optional package is not a server's
            continue
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            walk(desc)
    return out


STRINGS = ["", "a", "run-1", "ünïcödé", "日本語", "emoji 😀", 'quote " and \\ backslash', "tab\tnew\nline",
           "\x00\x1f control", "\u2028\u2029", "</script>", "x" * 300]
DOUBLES = [0.0, -0.0, 0.1, 1.5, -2.25, 1e-300, 1e300, 5e-324, 123456789.123456789, 1e16, 1e-7,
           math.nan, math.inf, -math.inf]
FLOATS = [0.0, -0.0, 0.1, 1.5, 3.4e38, 1e-45, 1e-5, 123.456, 16777217.0, math.nan, math.inf, -math.inf]
INTS = {"int32": [0, 1, -1, 2**31 - 1, -(2**31)], "uint32": [0, 1, 2**32 - 1],
        "int64": [0, 1, -1, 2**53 + 1, 2**63 - 1, -(2**63), 1_764_547_200_000], "uint64": [0, 1, 2**64 - 1]}


def _fill(message, rnd: random.Random, depth: int = 0) -> None:
    """Set a random subset of ``message``'s fields to random values (nested messages to depth 3)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    cpp_ints = {F.CPPTYPE_INT32: "int32", F.CPPTYPE_UINT32: "uint32", F.CPPTYPE_INT64: "int64",
                F.CPPTYPE_UINT64: "uint64"}

    def value(field):
        kind = field.cpp_type
        if kind == F.CPPTYPE_STRING:
            return rnd.randbytes(rnd.randint(0, 8)) if field.type == F.TYPE_BYTES else rnd.choice(STRINGS)
        if kind == F.CPPTYPE_BOOL:
            return rnd.random() < 0.5
        if kind in cpp_ints:
            return rnd.choice(INTS[cpp_ints[kind]])
        if kind == F.CPPTYPE_FLOAT:
            return rnd.choice(FLOATS)
        if kind == F.CPPTYPE_DOUBLE:
            return rnd.choice(DOUBLES)
        if kind == F.CPPTYPE_ENUM:
            return rnd.choice(field.enum_type.values).number
        raise AssertionError(kind)

    for field in message.DESCRIPTOR.fields:
        if rnd.random() < 0.35:
            continue
        if field.cpp_type == F.CPPTYPE_MESSAGE:
            sub = field.message_type
            if sub.has_options and sub.GetOptions().map_entry:
                target = getattr(message, field.name)
                key_f, val_f = sub.fields_by_name["key"], sub.fields_by_name["value"]
                for _ in range(rnd.randint(0, 3)):
                    key = value(key_f)
                    if val_f.cpp_type == F.CPPTYPE_MESSAGE:
                        if depth < 3 and not val_f.message_type.full_name.startswith("google.protobuf."):
                            _fill(target[key], rnd, depth + 1)
                    else:
                        target[key] = value(val_f)
                continue
            if depth >= 3 or sub.full_name.startswith("google.protobuf."):
                if not field.is_repeated and rnd.random() < 0.3 and sub.full_name not in (
                        "google.protobuf.Any", "google.protobuf.Value"):
                    getattr(message, field.name).SetInParent()  # present, empty
                continue
            if field.is_repeated:
                for _ in range(rnd.randint(0, 3)):
                    _fill(getattr(message, field.name).add(), rnd, depth + 1)
            else:
                child = getattr(message, field.name)
                child.SetInParent()
                _fill(child, rnd, depth + 1)
            continue
        try:
            if field.is_repeated:
                getattr(message, field.name).extend(value(field) for _ in range(rnd.randint(0, 4)))
            else:
                setattr(message, field.name, value(field))
        except (ValueError, TypeError):  # e.g. a value the field's type refuses: leave it unset
            pass


@pytest.fixture(scope="module")
def functions():
    from google.protobuf import message_factory
    from mlflow.utils import proto_json_utils

    original = proto_json_utils.message_to_json
    fast = _plugin().make_message_to_json(original)
    return original, fast, message_factory


def _spied(original):
    """(the plugin's function over ``original``, the list of messages it handed to ``original``)."""
    handed = []

    def spy(message, **kw):
        handed.append(message.DESCRIPTOR.full_name)
        return original(message, **kw)

    return _plugin().make_message_to_json(spy), handed


def test_every_message_type_of_mlflows_protos_gives_mlflows_bytes(functions):
    """Random instances of every MLflow message type: the plugin's output equals MLflow's
    ``message_to_json`` exactly, pretty and compact; int64 kept as strings when asked (MLflow's path).
    A type with a plan is written by the one walk itself, never handed to MLflow's function (which
    would be correct but slow, and would hide a walk that always fails)."""
    original, _, factory = functions
    fast, handed = _spied(original)
    plugin = _plugin()
    types = _message_types()
    assert len(types) > 200, len(types)  # the walk found MLflow's protos
    rnd = random.Random(20261201)
    one_walk, checked = 0, 0
    for desc in types:
        cls = factory.GetMessageClass(desc)
        if plugin.plan_for(desc) is not None:
            one_walk += 1
        for _ in range(12):
            msg = cls()
            _fill(msg, rnd)
            try:
                want = original(msg)
            except Exception as e:  # noqa: BLE001 - MLflow's own error must be the plugin's too
                with pytest.raises(type(e)):
                    fast(msg)
                continue
            handed.clear()
            assert fast(msg) == want, (desc.full_name, msg)
            if plugin.plan_for(desc) is not None:
                assert handed == [], f"{desc.full_name}: the one walk gave up on {msg}"
            assert fast(msg, pretty=False) == original(msg, pretty=False), desc.full_name
            assert fast(msg, convert_int64_to_number=False) == original(msg, convert_int64_to_number=False)
            checked += 1
    assert checked > 2000, checked
    assert one_walk > 150, one_walk  # most types take the one walk (the rest go to MLflow's function)


def test_the_responses_the_server_sends_most_take_the_one_walk(functions):
    """The search and read responses must not silently fall back (which would be correct but slow)."""
    from mlflow.protos import model_registry_pb2 as mr
    from mlflow.protos import service_pb2 as s

    original, _, _ = functions
    fast, handed = _spied(original)
    rnd = random.Random(14)
    for cls in (s.SearchRuns.Response, s.GetRun.Response, s.GetMetricHistory.Response,
                s.SearchExperiments.Response, s.GetExperiment.Response, s.CreateRun.Response,
                mr.SearchRegisteredModels.Response, mr.SearchModelVersions.Response):
        assert _plugin().plan_for(cls.DESCRIPTOR) is not None, cls.DESCRIPTOR.full_name
        for _ in range(20):
            msg = cls()
            _fill(msg, rnd)
            assert fast(msg) == original(msg)
        assert handed == [], cls.DESCRIPTOR.full_name


def test_types_json_format_writes_in_special_forms_go_to_mlflows_function(functions):
    """A map, a google.protobuf type or a bytes field anywhere below a type: MLflow's function."""
    from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2, timestamp_pb2

    plugin = _plugin()
    assert plugin.plan_for(struct_pb2.Struct.DESCRIPTOR) is None
    assert plugin.plan_for(timestamp_pb2.Timestamp.DESCRIPTOR) is None
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(name="fastjson_test.proto", package="fastjson_test", syntax="proto2",
                                           dependency=["google/protobuf/timestamp.proto"])
    inner = f.message_type.add(name="Inner")
    inner.field.add(name="blob", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                    label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    outer = f.message_type.add(name="Outer")
    outer.field.add(name="inner", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                    type_name=".fastjson_test.Inner", label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    stamped = f.message_type.add(name="Stamped")
    stamped.field.add(name="at", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                      type_name=".google.protobuf.Timestamp", label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool.Add(f)
    for name in ("Inner", "Outer", "Stamped"):
        assert plugin.plan_for(pool.FindMessageTypeByName(f"fastjson_test.{name}")) is None, name


def _proto3_with_open_enum():
    """A proto3 message type with an open enum field (json_format writes an unknown number as a number)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="fastjson_open.proto", package="fastjson_open", syntax="proto3")
    enum = f.enum_type.add(name="Color")
    enum.value.add(name="COLOR_UNSET", number=0)
    enum.value.add(name="RED", number=1)
    msg = f.message_type.add(name="Paint")
    msg.field.add(name="color", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
                  type_name=".fastjson_open.Color", label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    msg.field.add(name="count", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fastjson_open.Paint"))


def test_values_only_mlflows_function_writes_right_go_to_it(functions):
    """An open (proto3) enum holding a number without a name: json_format writes the number. A
    proto2 string field parsed from bytes that are not UTF-8: upb returns ``bytes`` and json_format
    writes ``str()`` of them. Both are MLflow's answer, through MLflow's function."""
    from mlflow.protos import service_pb2 as s

    original, _, _ = functions
    fast, handed = _spied(original)
    paint_cls = _proto3_with_open_enum()
    paint = paint_cls(color=7, count=2**40)
    got = fast(paint)
    assert got == original(paint) and '"color": 7' in got
    tag = s.RunTag()
    tag.ParseFromString(b"\x0a\x02\xff\xfe\x12\x01v")  # key: 0xff 0xfe (not UTF-8), value: "v"
    assert fast(tag) == original(tag)
    assert len(handed) == 2  # both went to MLflow's function
    named = paint_cls(color=1, count=3)
    handed.clear()
    assert fast(named) == original(named) and handed == []


def test_a_message_the_walk_cannot_finish_gets_mlflows_answer(functions, monkeypatch):
    """A field the plan does not know (as an extension would be): MLflow's function answers."""
    from mlflow.protos import service_pb2 as s

    original, fast, _ = functions
    plugin = _plugin()
    msg = s.GetRun.Response()
    msg.run.info.run_id = "r1"
    msg.run.info.start_time = 2**62
    msg.run.data.metrics.add(key="m", value=math.nan, timestamp=1, step=2**40)
    plan = plugin.plan_for(s.RunInfo.DESCRIPTOR)
    field = s.RunInfo.DESCRIPTOR.fields_by_name["start_time"]
    monkeypatch.delitem(plan, field)
    calls = []
    fast = plugin.make_message_to_json(lambda m, **kw: calls.append(kw) or original(m, **kw))
    assert fast(msg) == original(msg)
    assert calls == [{"pretty": True, "convert_int64_to_number": True}]


def test_an_option_it_does_not_know_goes_to_mlflows_function(functions):
    """A keyword a later MLflow's ``message_to_json`` may take is passed on, never refused."""
    from mlflow.protos import service_pb2 as s

    calls = []
    fast = _plugin().make_message_to_json(lambda m, **kw: calls.append(kw) or "theirs")
    assert fast(s.GetRun.Response(), new_option=1) == "theirs"
    assert calls == [{"pretty": True, "convert_int64_to_number": True, "new_option": 1}]


def _installed(env: dict[str, str], imports: str) -> str:
    code = f"import mlflow, {imports}, mlflow.server.handlers as h, mlflow_fast_json as j; print(j.installed(h))"
    p = subprocess.run([PYTHON, "-c", code], env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PLUGINS), **env},
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip()


@pytest.mark.parametrize("imports", ["mlflow.server.handlers", "mlflow.server.fastapi_app"])
def test_the_entry_point_installs_it_where_the_server_imports_the_handlers(imports):
    """As in every server process: the plugins' directory on PYTHONPATH (image/server_launch.py),
    ``import mlflow`` loads the entry point, the handlers' ``message_to_json`` is the plugin's;
    ``MLFLOW_FAST_JSON=false`` leaves MLflow's."""
    assert _installed({}, imports) == "True"
    assert _installed({"MLFLOW_FAST_JSON": "false"}, imports) == "False"


@pytest.fixture(scope="module")
def pair(stack):
    """(a server with the plugin, one with MLFLOW_FAST_JSON=false), one worker each, on the stack's
    databases."""
    env = shared_env(stack.a) | {"MLFLOW_WORKERS": "1"}
    fast, plain = Server(env), Server({**env, "MLFLOW_FAST_JSON": "false"})
    try:
        fast.start()
        plain.start()
        yield fast, plain
    finally:
        fast.close()
        plain.close()


def test_a_running_server_sends_the_bytes_mlflow_sends(pair):
    """Runs with NaN and infinite metrics, int64 steps and timestamps, non-ASCII params and tags,
    dataset inputs, a registered model with a version: the same request to both servers, the
    same status and body bytes."""
    fast, plain = pair
    line = "REST responses: JSON built in one walk (mlflow_fast_json"
    assert line in fast.output() and line not in plain.output()  # the plugin is on in one only
    auth = (ADMIN, ADMIN_PASSWORD)
    s = requests.Session()
    s.auth = auth

    def call(method, path, **body):
        r = s.request(method, fast.url + path, timeout=60, **({"json": body} if method == "POST" else
                                                              {"params": body}))
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r.json()

    name = f"fastjson-{uuid.uuid4().hex[:8]}"
    exp = call("POST", API + "/experiments/create", name=name)["experiment_id"]
    runs = []
    for i in range(3):
        run = call("POST", API + "/runs/create", experiment_id=exp, run_name=f"rün-{i}",
                   start_time=1_764_547_200_000 + i, tags=[{"key": "team", "value": "vision 👁"}])["run"]
        rid = run["info"]["run_id"]
        runs.append(rid)
        call("POST", API + "/runs/log-batch", run_id=rid,
             metrics=[{"key": "loss", "value": v, "timestamp": 1_764_547_200_000 + j, "step": 2**40 + j}
                      for j, v in enumerate([0.5, 1e-7, 1e300, -0.0])]
             + [{"key": "odd", "value": "NaN", "timestamp": 1, "step": 0},
                {"key": "big", "value": "Infinity", "timestamp": 2, "step": 1}],
             params=[{"key": "lr", "value": "0.01"}, {"key": "note", "value": 'quote " \\ \u2028 日本'}],
             tags=[{"key": "mlflow.note.content", "value": "line 1\nline 2\t</script>"}])
        call("POST", API + "/runs/log-inputs", run_id=rid, datasets=[{"dataset": {
            "name": "train", "digest": "abc123", "source_type": "local", "source": '{"uri": "/data"}'},
            "tags": [{"key": "mlflow.data.context", "value": "training"}]}])
    call("POST", API + "/runs/update", run_id=runs[0], status="FINISHED", end_time=1_764_547_300_000)
    model = call("POST", API + "/registered-models/create", name=name, tags=[{"key": "stage", "value": "ünï"}])
    call("POST", API + "/model-versions/create", name=name, source=f"runs:/{runs[0]}/model", run_id=runs[0])

    requests_ = [
        ("POST", API + "/runs/search", {"experiment_ids": [exp]}),
        ("POST", API + "/runs/search", {"experiment_ids": [exp], "filter": "metrics.loss > 0",
                                        "order_by": ["metrics.loss DESC"], "max_results": 2}),
        ("GET", API + "/runs/get", {"run_id": runs[0]}),
        ("GET", API + "/metrics/get-history", {"run_id": runs[1], "metric_key": "loss"}),
        ("GET", API + "/metrics/get-history", {"run_id": runs[1], "metric_key": "odd"}),
        ("GET", API + "/experiments/get", {"experiment_id": exp}),
        ("POST", API + "/experiments/search", {"max_results": 50}),
        ("GET", API + "/registered-models/get", {"name": model["registered_model"]["name"]}),
        ("GET", API + "/model-versions/search", {"filter": f"name = '{name}'"}),
        ("GET", API + "/registered-models/search", {"filter": f"name = '{name}'"}),
    ]
    for method, path, body in requests_:
        got = []
        for server in (fast, plain):
            kw = {"json": body} if method == "POST" else {"params": body}
            r = s.request(method, server.url + path, timeout=60, **kw)
            got.append((r.status_code, r.content))
        assert got[0][0] == 200, (path, got[0])
        assert got[0] == got[1], (path, body)
