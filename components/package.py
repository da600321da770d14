"""The tracking server as a Pulumi component package, for programs in other languages.

``TrackingServer`` (type ``mlflowtracking:index:TrackingServer``) takes the stack settings of this
program as its inputs (same names, defaults and checks: ``config.SPECS``), resolves the data
sources as ``program.resolve_server_args`` does for a stack, and builds one
:class:`components.tracking_server.MlflowTrackingServer` as its child. Its inputs
(``TrackingServerArgs``) are generated from ``config.SPECS`` into ``components/package_args.py``
by ``bin/update-schema``, which also writes the schema the SDK's analyzer infers from them to
``mlflow_tracking/schema.json``. ``mlflow_tracking/`` is the plugin (``PulumiPlugin.yaml``,
``__main__.py``): docs/component-package.md.

No ``from __future__ import annotations`` in this module or in package_args.py: the analyzer
(pulumi.provider.experimental.analyzer) reads ``__init__``'s and the class's annotations as types.
"""

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

import pulumi
from pulumi.errors import InputPropertiesError, InputPropertyError
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.provider.server import ComponentInitError

import config
import program
from components.naming import check_resource_name
from components.package_args import TrackingServerArgs
from components.tracking_server import MlflowTrackingServer

PACKAGE = "mlflowtracking"
"""The package name: the type tokens' first part (``mlflowtracking:index:*``, as the program's own)."""
COMPONENT = "TrackingServer"
TYPE = f"{PACKAGE}:index:{COMPONENT}"
VERSION = "0.0.0"
"""What ``component_provider_host`` reports without a version (the git tag versions the package)."""
ROOT = Path(__file__).resolve().parent.parent
ARGS_FILE = ROOT / "components" / "package_args.py"
SCHEMA_FILE = ROOT / "mlflow_tracking" / "schema.json"
IMAGE_CONTEXT = ROOT / "image"
"""The server image's build context, absolute: the plugin runs in the consumer's directory."""
EXTRA_INPUTS = ("tags",)
"""Inputs that are not stack settings."""
_SETTING_RE = re.compile(rf"invalid setting {re.escape(config.NAMESPACE)}:(\w+)")


class TrackingServer(pulumi.ComponentResource):
    """An MLflow tracking server on AWS: VPC, Aurora Serverless v2, S3, ECS Fargate behind an ALB, basic auth."""

    # The docstring above is the schema's description (one line: an indented line is a code block in
    # the SDKs' Markdown). The inputs are the stack settings of the Python program (same names,
    # defaults and validation); a wrong value fails before any resource is registered.

    tracking_uri: pulumi.Output[str]
    """MLFLOW_TRACKING_URI for clients."""
    load_balancer_dns_name: pulumi.Output[str]
    """DNS name of the load balancer."""
    artifact_bucket_name: pulumi.Output[str]
    """S3 bucket of the artifacts."""
    database_endpoint: pulumi.Output[str]
    """Aurora writer endpoint (reachable from the service only)."""
    image_ref: pulumi.Output[str]
    """Digest reference of the running image (promote it to another stack with imageRef)."""
    admin_secret_arn: pulumi.Output[str]
    """Secrets Manager secret holding the admin username and password (never the password itself)."""
    service_security_group_id: pulumi.Output[str]
    """Security group of the server's tasks."""

    def __init__(self, name: str, args: TrackingServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        # Everything that can fail on a setting (or the name) fails here, before anything is registered.
        check_resource_name(name)
        settings = settings_from_inputs(args)
        server_args = program.resolve_server_args(settings)
        tags = {**server_args.tags, **dict(args.get("tags") or {})}
        server_args = dataclasses.replace(server_args, image_context=str(IMAGE_CONTEXT), tags=tags)

        super().__init__(TYPE, name, None, opts)
        server = MlflowTrackingServer(name, server_args, opts=pulumi.ResourceOptions(parent=self))
        self.tracking_uri = server.tracking_uri
        self.load_balancer_dns_name = server.load_balancer_dns_name
        self.artifact_bucket_name = server.artifact_bucket_name
        self.database_endpoint = server.database_endpoint
        self.image_ref = server.image_ref
        self.admin_secret_arn = server.admin_secret_arn
        self.service_security_group_id = server.service_security_group_id
        self.register_outputs({
            "trackingUri": self.tracking_uri, "loadBalancerDnsName": self.load_balancer_dns_name,
            "artifactBucketName": self.artifact_bucket_name, "databaseEndpoint": self.database_endpoint,
            "imageRef": self.image_ref, "adminSecretArn": self.admin_secret_arn,
            "serviceSecurityGroupId": self.service_security_group_id,
        })


def settings_from_inputs(args: Mapping[str, Any]) -> config.Settings:
    """The validated settings of a component's inputs (Python names, as the provider maps them):
    each input is the setting of the same name and goes through ``config.load_settings``.

    :raises config.SettingsError: the one-line message a stack setting gets, naming the input.
    """
    raw: dict[str, Any] = {}
    for spec in config.SPECS:
        value = args.get(input_name(spec.key))
        if value is None:
            continue
        if _holds_output(value):
            raise config.SettingsError(
                f"invalid setting {config.NAMESPACE}:{spec.key} = (an output of another resource, or a secret); "
                f"allowed: a plain value known at preview (it decides which resources exist)")
        if isinstance(value, Mapping):  # a nested type (takeover, alarms): its keys as the setting spells them
            value = {_camel(k): v for k, v in value.items() if v is not None}
        raw[spec.key] = value
    tags = args.get("tags") or {}
    if _holds_output(tags) or not all(isinstance(v, str) for v in tags.values()):
        raise config.SettingsError(f"invalid setting {config.NAMESPACE}:tags = (not plain strings); allowed: a map "
                                   f"of plain strings known at preview")
    return config.load_settings(raw)


def _holds_output(value: Any) -> bool:
    if isinstance(value, pulumi.Output):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_output(v) for v in value)
    if isinstance(value, Mapping):
        return any(_holds_output(v) for v in value.values())
    return False


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


class Provider(ComponentProvider):
    """The SDK's component provider for :class:`TrackingServer`, with one change: a wrong input
    (a ``config.SettingsError`` from the constructor) is reported as an input property error, its
    one-line message and the input's name, and a resource name AWS cannot use as an invalid-argument
    error of one line, instead of the message followed by a Python stack (what the SDK's server
    does with any other exception from a component's constructor)."""

    def __init__(self) -> None:
        super().__init__([TrackingServer], PACKAGE, None, VERSION)

    def construct(self, name, resource_type, inputs, options=None):
        try:
            return super().construct(name, resource_type, inputs, options)
        except ComponentInitError as err:
            if isinstance(err.inner, config.SettingsError):
                found = _SETTING_RE.search(str(err.inner))
                raise InputPropertyError(found.group(1) if found else "", str(err.inner)) from None
            if isinstance(err.inner, ValueError) and str(err.inner).startswith("resource name "):
                raise InputPropertiesError(str(err.inner)) from None  # components.naming
            raise


def serve(argv: list[str]) -> None:
    """Run the provider (what ``component_provider_host`` does, with :class:`Provider`)."""
    from pulumi.provider import main

    main(Provider(), argv)


# --------------------------------------------------------------------------------------------
# bin/update-schema: the generated inputs and the schema
# --------------------------------------------------------------------------------------------

_FIELD_TEXT = {
    ("Takeover", "dump"): "File name of the MLflow database dump under s3://<artifact bucket>/takeover/.",
    ("Takeover", "auth_dump"): "File name of the basic-auth database dump under s3://<artifact bucket>/takeover/.",
    ("Takeover", "artifact_root"): "s3://<old bucket>/<old prefix>: the old server's artifact root, only when its "
                                   "clients wrote to S3 directly.",
}
"""Descriptions of nested fields whose dataclass has no attribute docstring."""
_CLASS_TEXT = {
    "Takeover": "An old MLflow's dumps for the admin step to import into the new, empty databases (docs/takeover.md).",
}


def input_name(key: str) -> str:
    """The Python name of the input for setting ``key``: the analyzer camel-cases it back to ``key``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def _attribute_docs(cls: type) -> dict[str, str]:
    """A dataclass's attribute docstrings (the string after each annotated field)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    body = ast.parse(inspect.getsource(cls)).body[0].body
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.replace("``", "").split())
    return docs


def _python_type(hint: Any, nested: dict[str, list[str]], about: str = "") -> str:
    """The input type of a ``config.Settings`` field: plain (a setting decides which resources exist);
    a dataclass becomes a ``<Name>Args`` TypedDict, added to ``nested`` (described by its docstring,
    else by ``about``, the setting's meaning)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _python_type(inner, nested, about)
    if hint in (str, int, float, bool):
        return hint.__name__
    if typing.get_origin(hint) is tuple and args and args[0] is str:
        return "list[str]"
    if dataclasses.is_dataclass(hint):
        name = f"{hint.__name__}Args"
        if name not in nested:
            nested[name] = []  # before the fields: a recursive type ends here
            hints, docs = typing.get_type_hints(hint), _attribute_docs(hint)
            doc = " ".join((hint.__doc__ or "").replace("``", "").split())
            if doc.startswith(f"{hint.__name__}("):  # the signature dataclasses put in for a missing docstring
                doc = ""
            doc = _CLASS_TEXT.get(hint.__name__) or doc or about[:1].upper() + about[1:] + "."
            lines = [f"class {name}(TypedDict, total=False):", f"    {doc!r}"]
            def text_of(field: str) -> str:
                return docs.get(field) or _FIELD_TEXT.get((hint.__name__, field), "")

            for f in dataclasses.fields(hint):
                typ = _python_type(hints[f.name], nested, text_of(f.name))
                required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                text = text_of(f.name)
                if not required and f.default is not None and f.default is not dataclasses.MISSING:
                    text += f" Default: {f.default}."
                lines += [f"    {f.name}: {'Required[' + typ + ']' if required else typ}", f"    {text.strip()!r}"]
            nested[name] = lines
        return name
    raise TypeError(f"config.Settings: no input type for {hint!r}; extend components/package.py _python_type")


def _default_text(default: Any) -> str:
    if isinstance(default, bool):
        return f" Default: {str(default).lower()}."
    if isinstance(default, (str, int, float)):
        return f" Default: {default}."
    if isinstance(default, type(config.FOLLOWS_PROTECT)):
        return f" Default: {default!r}."  # protectData, or its opposite
    return ""  # None, or an object whose fields say their defaults


def args_source() -> str:
    """The text of components/package_args.py, from ``config.SPECS`` and ``config.Settings``."""
    hints = typing.get_type_hints(config.Settings, vars(config))
    nested: dict[str, list[str]] = {}
    fields = []
    for spec in config.SPECS:
        text = spec.meaning + "." + _default_text(spec.default)
        fields += [f"    {input_name(spec.key)}: {_python_type(hints[spec.field], nested, spec.meaning)}",
                   f"    {text!r}"]
    fields += ["    tags: dict[str, str]",
               f"    {'Tags added to every resource, over project, stack and environment.'!r}"]
    lines = [
        '"""Inputs of the component package (components/package.py): one per stack setting.',
        "",
        "GENERATED by bin/update-schema from config.SPECS and config.Settings: do not edit. Change the",
        "setting in config.py, then run bin/update-schema. No `from __future__ import annotations`: the",
        "SDK's schema analyzer reads these annotations as types and the string after each as its description.",
        '"""',
        "",
        "from typing import Required, TypedDict",
        "",
    ]
    for cls_lines in nested.values():
        lines += ["", *cls_lines, ""]
    lines += [
        "",
        "class TrackingServerArgs(TypedDict, total=False):",
        '    """The settings of one tracking server: the stack settings of the Python program (README.md',
        '    "Settings"), same names, defaults and validation."""',
        "",
        *fields,
        "",
    ]
    return "\n".join(lines)


def schema() -> dict[str, Any]:
    """The package schema, as the provider serves it (GetSchema) and ``pulumi package add`` reads it."""
    return json.loads(Provider().schema)


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"
