"""Run Pulumi code under mocks and record what it registers.

``run(fn, config=..., stack=...)`` sets the config (as the engine passes it: namespaced keys,
string values), installs :class:`Recorder` mocks with a monitor that also records each
resource's parent, ``protect`` and ``ignoreChanges``, runs ``fn`` with ``preview=False`` (so
every Output resolves and no assertion is skipped on unknowns), and returns a :class:`Run`
with the resources and the resolved stack exports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from unittest import mock

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.sync_await import _ensure_event_loop

from tests.unit import fake_awsx, stand_ins

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "mlflow-tracking"
ACCOUNT = "123456789012"
REGION = stand_ins.REGION
ZONES = stand_ins.ZONES
DIGEST = "b" * 64
PROMOTED_REF = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlflow-dev@sha256:{DIGEST}"
CERT = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/11111111-2222-3333-4444-555555555555"
SECRET_STRING = "sm-value-7f3c9e1d2b4a6c8e0f1a3b5d7e9c1f2a"
"""What ``getSecretVersion`` answers for any secret (the OIDC client secret of the ``sso`` tests)."""


def _h(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass
class Res:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    parent: str = ""
    protect: bool = False
    retain_on_delete: bool = False
    ignore_changes: tuple[str, ...] = ()
    custom: bool = True
    id: str = ""
    raw_inputs: dict[str, Any] = field(default_factory=dict)
    """Inputs as sent, secrets still wrapped (see :func:`is_secret`)."""
    dependencies: tuple[str, ...] = ()
    """URNs this resource waits for: ``depends_on`` plus the resources its inputs came from."""
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    """``customTimeouts`` as sent (``create``/``update``/``delete``, e.g. ``"30m"``), empty if unset."""

    def container_definitions(self) -> list[dict[str, Any]]:
        defs = self.inputs["containerDefinitions"]
        return json.loads(defs) if isinstance(defs, str) else defs

    def policy(self, key: str = "policy") -> dict[str, Any]:
        doc = self.inputs[key]
        return json.loads(doc) if isinstance(doc, str) else doc


class Recorder(pulumi.runtime.Mocks):
    """Answers with camelCase outputs (DESIGN §3) and keeps every registration."""

    def __init__(self) -> None:
        self.resources: dict[str, Res] = {}
        self.calls: list[tuple[str, dict]] = []
        self.awsx_children: list[fake_awsx.Child] = []
        """What the awsx provider would create for an ``awsx:ec2:Vpc`` (see ``fake_awsx.py``)."""
        self._awsx_pending: dict[str, tuple[str, dict]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        t, name, inputs = args.typ, args.name, dict(args.inputs)
        if t == fake_awsx.VPC_TYPE:  # computed by RecordingMonitor, which knows the parent's URN
            return self._awsx_pending.pop(name)
        out: dict[str, Any] = dict(inputs)
        rid = f"{name}-id"
        svc = t.split(":")[1].split("/")[0] if ":" in t else "x"
        out.setdefault("arn", f"arn:aws:{svc}:{REGION}:{ACCOUNT}:{t.split(':')[-1].lower()}/{name}-{_h(name)}")
        if t == "aws:ec2/securityGroup:SecurityGroup":
            rid = f"sg-{_h(name, 12)}"
        elif t == "aws:ec2/vpc:Vpc":
            rid = f"vpc-{_h(name, 12)}"
        elif t == "aws:ec2/subnet:Subnet":
            rid = f"subnet-{_h(name, 12)}"
        elif t == "aws:rds/cluster:Cluster":
            out.update(endpoint=f"{name}.cluster-abc.{REGION}.rds.amazonaws.com",
                       readerEndpoint=f"{name}.cluster-ro-abc.{REGION}.rds.amazonaws.com",
                       clusterIdentifier=f"{name}-{_h(name)}")
            # RDS API, CreateDBCluster: "Can't manage the master user password with AWS Secrets Manager if
            # MasterUserPassword is specified"; with ManageMasterUserPassword RDS creates the secret and
            # reports it as MasterUserSecret (terraform-provider-aws: master_user_secret, one block).
            if inputs.get("manageMasterUserPassword"):
                if inputs.get("masterPassword"):
                    raise ValueError("InvalidParameterCombination: ManageMasterUserPassword with MasterUserPassword")
                out["masterUserSecrets"] = [{
                    "secretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!cluster-{_h(name, 8)}-"
                                 f"{_h(name, 4)}-4c6a-8f3e-{_h(name + 'x', 12)}-{_h(name + 'y', 6)}",
                    "secretStatus": "active", "kmsKeyId": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/aws-secretsmanager"}]
            else:
                out["masterUserSecrets"] = []
        elif t == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{name}-{_h(name)}"
            rid = bucket
            out.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
        elif t == "aws:ecr/repository:Repository":
            repo = f"{name}-{_h(name)}"
            out.update(name=repo, repositoryUrl=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repo}",
                       registryId=ACCOUNT, arn=f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repo}")
        elif t == "docker:index/image:Image":
            image_name = str(inputs["imageName"])
            repo = image_name.rsplit(":", 1)[0]
            out.update(imageName=image_name, repoDigest=f"{repo}@sha256:{hashlib.sha256(image_name.encode()).hexdigest()}")
        elif t in ("random:index/randomPassword:RandomPassword", "random:index/randomString:RandomString"):
            out.update(result=f"pw-{_h('secret' + name, 24)}")
        elif t == "random:index/randomId:RandomId":
            out.update(hex=_h(name), b64Std="x")
        elif t == "aws:lb/loadBalancer:LoadBalancer":
            out.update(dnsName=f"{name}-{_h(name)}.{REGION}.elb.amazonaws.com", zoneId="Z32O12XQLNTSW2",
                       arnSuffix=f"app/{name[:24]}/{_h(name, 16)}")
            out["arn"] = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/{out['arnSuffix']}"
        elif t == "aws:lb/targetGroup:TargetGroup":  # the CloudWatch dimensions are the ARN's suffix
            out.update(arnSuffix=f"targetgroup/{name[:24]}/{_h(name, 16)}")
            out["arn"] = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:{out['arnSuffix']}"
        elif t == "aws:cloudwatch/logGroup:LogGroup":
            lg = f"{name}-{_h(name)}"
            out.update(name=lg, arn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{lg}")
        elif t == "aws:secretsmanager/secret:Secret":
            out.update(arn=f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-{_h(name, 6)}")
            rid = out["arn"]
        elif t == "aws:acm/certificate:Certificate":
            # ACM answers one DNS validation record per name (domain + SANs) once the certificate
            # is requested with validation_method DNS (ACM User Guide, "DNS validation").
            cert_id = f"{_h(name, 8)}-0000-4000-8000-{_h(name + 'id', 12)}"
            out.update(arn=f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/{cert_id}", domainValidationOptions=[{
                "domainName": d, "resourceRecordName": f"_{_h(d, 32)}.{d}.", "resourceRecordType": "CNAME",
                "resourceRecordValue": f"_{_h(d + 'v', 32)}.acm-validations.aws."}
                for d in [inputs["domainName"], *inputs.get("subjectAlternativeNames", [])]] if (
                inputs.get("validationMethod") == "DNS") else [])
            rid = out["arn"]
        elif t == "aws:route53/record:Record":
            out.update(fqdn=str(inputs["name"]).rstrip("."))
        elif t == "aws:acm/certificateValidation:CertificateValidation":
            rid = str(inputs["certificateArn"])
        elif t == "aws:rds/clusterParameterGroup:ClusterParameterGroup":
            stand_ins.cluster_parameter_group(inputs)
            out.setdefault("name", f"{name}-{_h(name)}")
        elif t in ("aws:ecs/cluster:Cluster", "aws:ecs/service:Service", "aws:rds/subnetGroup:SubnetGroup",
                   "aws:cloudwatch/eventRule:EventRule", "aws:cloudwatch/metricAlarm:MetricAlarm"):
            out.setdefault("name", f"{name}-{_h(name)}")
        return rid, out

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        tok = args.token
        try:
            if tok == "aws:index/getAvailabilityZones:getAvailabilityZones":
                return stand_ins.availability_zones(dict(args.args))
            if tok == "aws:rds/getEngineVersion:getEngineVersion":
                return stand_ins.engine_version(dict(args.args))
            if tok == "aws:rds/getClusterSnapshot:getClusterSnapshot":
                return stand_ins.cluster_snapshot(dict(args.args))
        except stand_ins.DataSourceError as err:  # a failed invoke, as the engine reports it
            return {}, [("", str(err))]
        if tok == "aws:index/getRegion:getRegion":
            return {"name": REGION, "region": REGION, "id": REGION, "endpoint": f"ec2.{REGION}.amazonaws.com",
                    "description": "Europe (Ireland)"}
        if tok == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDAMOCK", "id": ACCOUNT}
        if tok == "aws:secretsmanager/getSecretVersion:getSecretVersion":
            # Secrets Manager API, GetSecretValue (pulumi-aws aws.secretsmanager.getSecretVersion): the
            # current version's SecretString.
            arn = str(args.args["secretId"])
            return {"arn": arn, "id": f"{arn}|AWSCURRENT", "secretId": arn, "secretString": SECRET_STRING,
                    "secretBinary": "", "versionId": "00000000-0000-4000-8000-000000000001",
                    "versionStage": "AWSCURRENT", "versionStages": ["AWSCURRENT"],
                    "createdDate": "2026-01-01T00:00:00Z"}
        if tok == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {"authorizationToken": "QVdTOm1vY2s=", "userName": "AWS", "password": "ecr-token-password",
                    "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
                    "expiresAt": "2030-01-01T00:00:00Z", "id": REGION}
        raise AssertionError(f"unexpected data-source call {tok}")


class RecordingMonitor(MockMonitor):
    """Also records parent, protect, ignoreChanges, dependencies and customTimeouts
    (MockResourceArgs carries none of them)."""

    def __init__(self, recorder: Recorder, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        super().__init__(recorder)
        self.recorder = recorder
        self.loop = loop
        """The program's event loop (the one ``pulumi.runtime.test`` runs the program on)."""
        self.lock = threading.Lock()
        """Guards ``recorder.resources``: worker threads add to it while the awsx stand-in, on the
        program's loop, reads it ("dictionary changed size during iteration", 1 build in 200)."""

    def RegisterResource(self, request):
        # The SDK calls this in a worker thread of the event loop's executor (``run_in_executor``,
        # pulumi/runtime/resource.py), which has no event loop of its own until MockMonitor's
        # RegisterResource sets one; the awsx stand-in runs on the program's loop instead (below).
        if request.type == fake_awsx.VPC_TYPE:
            self._on_program_loop(self._awsx_vpc, request)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            urn = self.make_urn(request.parent, request.type, request.name)
            registration = self.resources[urn]
            state = registration.state
            record = Res(
                urn=urn, type=request.type, name=request.name,
                inputs=_unwrap(raw := pulumi.runtime.rpc.deserialize_properties(request.object)), raw_inputs=raw,
                outputs=dict(state), parent=request.parent, protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                ignore_changes=tuple(request.ignoreChanges), custom=bool(request.custom),
                id=registration.id, dependencies=tuple(request.dependencies),
                custom_timeouts={k: v for k in ("create", "update", "delete")
                                 if (v := getattr(request.customTimeouts, k, ""))})
            with self.lock:
                self.recorder.resources[urn] = record
        return response

    def _on_program_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the program's event loop, waited for from this worker thread.

        A real engine runs a component's transforms through the program's callback server, whose
        handlers are coroutines on the program's loop (pulumi/runtime/_callbacks.py,
        ``_CallbackServicer``: ``self._loop = asyncio.get_running_loop()``); they build
        ``DependencyResource`` objects, whose ``asyncio.Future()`` needs a current loop. Run from
        this worker thread, that failed with "There is no current event loop in thread
        'asyncio_N'" whenever the registration landed on a thread no earlier RPC had given a loop
        (MockMonitor's own RPCs call ``_ensure_event_loop`` first; this override ran before it)."""
        loop = self.loop
        if loop is None or not loop.is_running():
            raise AssertionError("harness: the program's event loop is not running (use harness.run)")
        if asyncio._get_running_loop() is loop:  # already on the program's loop (not the SDK's path today)
            return fn(*args)

        async def call() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), loop).result()

    def _awsx_vpc(self, request) -> None:
        urn = self.make_urn(request.parent, request.type, request.name)
        inputs = _unwrap(pulumi.runtime.rpc.deserialize_properties(request.object))
        transforms = pulumi.runtime.mocks._resolve_callbacks(request.transforms)

        def urn_of(resource: Any) -> str:
            with self.lock:
                recorded = list(self.recorder.resources.values())
            return next(r.urn for r in recorded if r.type == resource._type and r.name == resource._name)
        state, children = fake_awsx.build(urn, request.name, inputs, transforms, self.make_urn, urn_of)
        for c in children:
            self.resources[c.urn] = MockMonitor.ResourceRegistration(c.urn, c.id, fake_awsx.state_of(c))
        self.recorder.awsx_children.extend(children)
        self.recorder._awsx_pending[request.name] = (f"{request.name}-id", state)


_SECRET_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def is_secret(value: Any) -> bool:
    """Whether a raw input value was sent as a secret."""
    return isinstance(value, dict) and value.get(_SECRET_SIG) == _SECRET_VALUE


def _unwrap(value: Any) -> Any:
    """Inputs as plain values: secret envelopes ({sig: secret, value: v}) replaced by v."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIG) == _SECRET_VALUE:
            return _unwrap(value.get("value"))
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


@dataclass
class Run:
    resources: list[Res]
    exports: dict[str, Any]
    result: Any
    recorder: Recorder

    def of_type(self, t: str) -> list[Res]:
        """The resources of type ``t``, with the children the awsx stand-in reports for an
        ``awsx:ec2:Vpc`` (the subnets, route tables, NAT gateways the awsx provider creates; not
        in :attr:`resources`, which holds the program's own registrations)."""
        return [r for r in self.resources if r.type == t] + [
            Res(urn=c.urn, type=c.type, name=c.name, inputs=c.inputs, outputs=fake_awsx.state_of(c), parent=c.parent,
                id=c.id) for c in self.recorder.awsx_children if c.type == t]

    def one(self, t: str) -> Res:
        found = self.of_type(t)
        assert len(found) == 1, f"expected one {t}, got {[r.name for r in found]}"
        return found[0]

    def named(self, name: str) -> Res:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"expected one resource named {name}, got {len(found)}"
        return found[0]

    def by_urn(self, urn: str) -> Res:
        return next(r for r in self.resources if r.urn == urn)

    def secret_values(self) -> list[str]:
        """Every value a random password/secret generator produced."""
        return [r.outputs["result"] for r in self.resources
                if r.type == "random:index/randomPassword:RandomPassword"]


def run(fn: Callable[[], Any], config: Optional[dict[str, str]] = None, stack: str = "dev",
        secret_keys: Optional[list[str]] = None) -> Run:
    recorder = Recorder()
    pulumi.runtime.set_all_config(dict(config or {}), list(secret_keys or []))
    pulumi.runtime.settings.ROOT.set(None)  # a fresh root stack for this stack name
    pulumi.runtime.set_mocks(recorder, project=PROJECT, stack=stack, preview=False,
                             monitor=RecordingMonitor(recorder, loop=_ensure_event_loop()))  # body()'s loop
    exports: dict[str, Any] = {}
    resolved: dict[str, Any] = {}
    holder: dict[str, Any] = {}

    def fake_export(name: str, value: Any) -> None:
        exports[name] = value

    @pulumi.runtime.test
    def body():
        holder["result"] = fn()
        if not exports:
            return None
        return pulumi.Output.all(**{k: pulumi.Output.from_input(v) for k, v in exports.items()}).apply(
            lambda values: resolved.update(values))

    with mock.patch.object(pulumi, "export", fake_export):
        body()
    return Run(list(recorder.resources.values()), resolved, holder.get("result"), recorder)


def stack_config(stack: str, **overrides: Any) -> dict[str, str]:
    """``Pulumi.<stack>.yaml``'s config as the engine passes it (namespaced, strings, objects as
    JSON), plus ``overrides`` (keys without namespace; ``None`` removes a key)."""
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    config: dict[str, str] = {}
    for key, value in (doc.get("config") or {}).items():
        key = key if ":" in key else f"{PROJECT}:{key}"
        config[key] = _as_engine_string(value)
    for key, value in overrides.items():
        full = f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = _as_engine_string(value)
    return config


def _as_engine_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
