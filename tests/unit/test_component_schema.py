"""The component package (components/package.py, mlflow_tracking/): the schema the SDK infers from
``TrackingServer``, the YAML example against it, and what a consumer's wrong input gets.

No Pulumi CLI here: the schema comes from the installed SDK's own analyzer
(``pulumi.provider.experimental``: ``ComponentProvider`` runs ``Analyzer`` and ``generate_schema``,
as ``component_provider_host`` does), and the plugin entry point is run as Pulumi's Python language
host runs a plugin directory (``python <plugin dir> <engine address>``, pulumi-language-python
RunPlugin) and asked for its schema over gRPC (GetSchema, what ``pulumi package add`` reads).
Documents: Pulumi docs "Authoring a Source-Based Plugin Package" and "PulumiPlugin.yaml Reference";
the SDK's provider/experimental/ComponentProvider.md (docstrings are the schema's descriptions,
outputs are annotated attributes, ``<package>:index:<ClassName>``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import typing
from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi.errors import InputPropertiesError, InputPropertyError

import config
from components import package
from tests.unit.harness import run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "yaml" / "Pulumi.yaml"
STALE = "stale: run bin/update-schema (it regenerates components/package_args.py and mlflow_tracking/schema.json)"
OUTPUTS = {"trackingUri", "loadBalancerDnsName", "artifactBucketName", "databaseEndpoint", "imageRef",
           "adminSecretArn", "serviceSecurityGroupId"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return package.schema()


@pytest.fixture(scope="module")
def component(schema) -> dict:
    return schema["resources"][package.TYPE]


def test_generated_inputs_are_current():
    assert package.ARGS_FILE.read_text() == package.args_source(), f"components/package_args.py is {STALE}"


def test_committed_schema_is_current(schema):
    assert json.loads(package.SCHEMA_FILE.read_text()) == schema, f"mlflow_tracking/schema.json is {STALE}"


def test_every_setting_is_an_input_typed_and_described(component, schema):
    inputs = component["inputProperties"]
    assert set(inputs) == set(config.KEYS) | set(package.EXTRA_INPUTS), \
        f"inputs and settings differ: {sorted(set(inputs) ^ (set(config.KEYS) | set(package.EXTRA_INPUTS)))}; {STALE}"
    assert component["requiredInputs"] == []  # every setting has a default or is optional
    for name, prop in inputs.items():
        assert prop.get("type") or prop.get("$ref"), f"{name}: no type"
        assert (prop.get("description") or "").strip(), f"{name}: no description"
        assert prop.get("plain") is True, f"{name}: not plain (a setting decides which resources exist)"
    for token, typ in schema["types"].items():
        assert typ["description"].strip(), token
        assert not typ["description"].startswith(token.split(":")[-1][:-4] + "("), f"{token}: a signature"
        for name, prop in typ["properties"].items():
            assert prop.get("type") and prop["description"].strip(), f"{token}.{name}"
    assert (component.get("description") or "").strip()
    texts = [component["description"], *(p["description"] for p in inputs.values())]
    texts += [p["description"] for t in schema["types"].values() for p in t["properties"].values()]
    assert not [t for t in texts if "\n " in t], "an indented line is a code block in the SDKs' Markdown"


def test_every_output_is_typed_and_described(component):
    assert set(component["properties"]) == OUTPUTS
    assert set(component["required"]) == OUTPUTS
    for name, prop in component["properties"].items():
        assert prop["type"] == "string" and prop["description"].strip(), name
        assert "plain" not in prop


def test_input_types_follow_the_settings(component, schema):
    """Each input's schema type is its setting's Python type (config.Settings), read independently here."""
    inputs = component["inputProperties"]
    hints = typing.get_type_hints(config.Settings, vars(config))
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    for spec in config.SPECS:
        hint = hints[spec.field]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) is typing.Union else hint
        prop = inputs[spec.key]
        if base in simple:
            assert prop["type"] == simple[base], spec.key
        elif typing.get_origin(base) is tuple:
            assert prop["type"] == "array" and prop["items"]["type"] == "string", spec.key
        else:
            assert prop["$ref"] == f"#/types/{package.PACKAGE}:index:{base.__name__}Args", spec.key
    assert inputs["tags"]["type"] == "object" and inputs["tags"]["additionalProperties"]["type"] == "string"
    takeover = schema["types"][f"{package.PACKAGE}:index:TakeoverArgs"]
    assert set(takeover["properties"]) == {"dump", "authDump", "artifactRoot"}  # components.takeover.KEYS
    assert takeover["required"] == ["dump"]


def test_plugin_manifest_and_requirements():
    """PulumiPlugin.yaml next to the entry point; the plugin venv gets the program's requirements."""
    assert yaml.safe_load((ROOT / "mlflow_tracking" / "PulumiPlugin.yaml").read_text()) == {"runtime": "python"}
    assert "-r ../requirements.txt" in (ROOT / "mlflow_tracking" / "requirements.txt").read_text().splitlines()
    assert (ROOT / "mlflow_tracking" / "__main__.py").is_file()


# --- the YAML example ---------------------------------------------------------------------------

def _example_properties() -> dict:
    doc = yaml.safe_load(EXAMPLE.read_text())
    found = [r for r in doc["resources"].values()
             if r["type"] in (package.TYPE, f"{package.PACKAGE}:{package.COMPONENT}")]
    assert len(found) == 1, "examples/yaml/Pulumi.yaml: one mlflowtracking:index:TrackingServer"
    assert doc["runtime"] == "yaml"
    return found[0]["properties"]


def _check_value(path: str, value, prop: dict, schema: dict) -> None:
    if "$ref" in prop:
        typ = schema["types"][prop["$ref"].split("/")[-1]]
        assert isinstance(value, dict), f"{path}: an object"
        for key, item in value.items():
            assert key in typ["properties"], f"{path}.{key}: not a property of {prop['$ref']}"
            _check_value(f"{path}.{key}", item, typ["properties"][key], schema)
        assert set(typ.get("required", [])) <= set(value), f"{path}: missing {typ.get('required')}"
        return
    kind = prop["type"]
    if kind == "array":
        assert isinstance(value, list), f"{path}: a list"
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item, prop["items"], schema)
    elif kind == "object":
        assert isinstance(value, dict), f"{path}: a map"
        for key, item in value.items():
            _check_value(f"{path}.{key}", item, prop["additionalProperties"], schema)
    else:
        python = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}[kind]
        assert isinstance(value, python) and (kind == "boolean" or not isinstance(value, bool)), \
            f"{path}: {value!r} is not a {kind}"
        assert not (isinstance(value, str) and "${" in value), f"{path}: a plain value, not an interpolation"


def test_yaml_example_properties_are_inputs_of_the_right_type(component, schema):
    props = _example_properties()
    assert len(props) >= 10, "the example sets its own settings"
    for name, value in props.items():
        assert name in component["inputProperties"], f"examples/yaml: {name} is not an input of {package.TYPE}"
        _check_value(name, value, component["inputProperties"][name], schema)


def test_yaml_example_builds_the_server_with_its_settings():
    """The example's properties through the provider's construct (name mapping, integer conversion),
    under the unit tests' mocks: the whole server, with the example's choices, in the component."""
    props = _example_properties()
    r = run(lambda: package.Provider().construct("mlflow", package.TYPE, props, pulumi.ResourceOptions()))
    outer = r.one(package.TYPE)
    inner = r.one("mlflowtracking:index:MlflowTrackingServer")
    assert inner.parent == outer.urn
    assert set(r.result.state) == OUTPUTS
    assert r.one("aws:lb/loadBalancer:LoadBalancer").inputs["internal"] is True  # albScheme: internal
    assert r.one("aws:rds/cluster:Cluster").inputs["engine"] == "aurora-postgresql"
    assert not r.of_type("aws:ec2/natGateway:NatGateway")  # natMode: none
    task = r.named("mlflow-service-task")
    assert task.inputs["cpu"] == "512" and task.inputs["runtimePlatform"]["cpuArchitecture"] == "ARM64"
    build = r.one("docker:index/image:Image").inputs["build"]
    assert build["context"] == str(ROOT / "image")  # absolute: the plugin runs in the consumer's directory
    assert r.one("aws:rds/cluster:Cluster").inputs["tags"]["team"] == "ml-platform"
    assert not r.one("aws:rds/cluster:Cluster").protect  # protectData: false


# --- a consumer's wrong input -------------------------------------------------------------------

def _construct_error(inputs: dict) -> tuple[InputPropertyError, list]:
    def attempt():
        with pytest.raises(InputPropertyError) as info:
            package.Provider().construct("mlflow", package.TYPE, inputs, pulumi.ResourceOptions())
        return info.value

    r = run(attempt)
    return r.result, r.resources


def test_wrong_input_gets_the_settings_one_line_error_and_nothing_is_registered():
    err, registered = _construct_error({"azCount": 7, "natMode": "single"})
    with pytest.raises(config.SettingsError) as stack_setting:
        config.load_settings({"azCount": 7, "natMode": "single"})
    assert err.property_path == "azCount"
    assert err.reason == str(stack_setting.value)  # the same message a stack setting gets
    assert "\n" not in err.reason and "azCount" in err.reason
    assert registered == []


def test_wrong_nested_input_and_cross_setting_rule():
    err, _ = _construct_error({"takeover": {"dump": "a.sql.gz", "authDump": "a.sql.gz"}})
    assert err.property_path == "takeover" and "two different files" in err.reason
    err, _ = _construct_error({"environment": "prod", "imageRef": None})
    with pytest.raises(config.SettingsError) as stack_setting:
        config.load_settings({"environment": "prod"})
    assert err.reason == str(stack_setting.value) and "\n" not in err.reason


def test_output_input_is_refused_in_one_line():
    """A setting decides which resources exist: an output (unknown at preview) or a secret is refused."""
    err, registered = _construct_error({"natMode": pulumi.Output.from_input("none")})
    assert err.property_path == "natMode" and "plain value" in err.reason and "\n" not in err.reason
    assert registered == []
    err, registered = _construct_error({"tags": {"team": pulumi.Output.from_input("ml")}})
    assert err.property_path == "tags" and "plain strings" in err.reason and registered == []


# --- the plugin entry point, as Pulumi runs it --------------------------------------------------

def test_plugin_entry_point_serves_the_committed_schema(tmp_path):
    """``python mlflow_tracking <engine>`` from another directory (the consumer's), as the language
    host runs the plugin: it prints its port, and GetSchema returns mlflow_tracking/schema.json."""
    import grpc
    from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

    proc = subprocess.Popen([sys.executable, str(ROOT / "mlflow_tracking"), "127.0.0.1:9"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port: list[str] = []
        reader = threading.Thread(target=lambda: port.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)  # a guard against a hung plugin, not a timing assertion
        assert port and port[0].strip().isdigit(), f"no port printed; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        with grpc.insecure_channel(f"127.0.0.1:{port[0].strip()}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            served = json.loads(stub.GetSchema(provider_pb2.GetSchemaRequest(version=0), timeout=60).schema)
        assert served == json.loads(package.SCHEMA_FILE.read_text())
    finally:
        proc.kill()
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()


def test_resource_name_aws_cannot_use_is_refused_in_one_line():
    def attempt():
        with pytest.raises(InputPropertiesError) as info:
            package.Provider().construct("ML_flow", package.TYPE, {}, pulumi.ResourceOptions())
        return info.value

    r = run(attempt)
    assert r.result.message.startswith("resource name 'ML_flow': use 1-30 lower-case letters")
    assert "\n" not in r.result.message and r.resources == []
