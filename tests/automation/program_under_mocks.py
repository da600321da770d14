"""Run the Pulumi program (``program.define_stack()``) under ``pulumi.runtime.set_mocks``.

Used by ``test_program_entry.py`` in a child process (``python -m tests.automation.program_under_mocks``)
so that the global Pulumi runtime state (mocks, config, root stack) never leaks into other tests.
Reads ``{"stack": ..., "config": {key: value}, "secret_keys": [...]}`` as JSON on stdin; prints
``{"resources": [{"type", "name", "inputs"}], "error": null|str}`` as JSON on stdout.

The mocks answer with camelCase output names (DESIGN §3): ``docker.Image`` gets a ``repoDigest``,
the awsx ``Vpc`` its subnet ids, and the data-source calls the program makes at the top level
(availability zones, region, caller identity, ECR authorization token) are answered.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

ACCOUNT = "123456789012"
REGION = "eu-west-1"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def make_mocks(records: list[dict[str, Any]]):
    import pulumi

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            inputs = dict(args.inputs)
            records.append({"type": args.typ, "name": args.name, "inputs": _jsonable(inputs)})
            name = inputs.get("name") or args.name
            out: dict[str, Any] = {
                **inputs,
                "arn": inputs.get("arn", f"arn:aws:mock:{REGION}:{ACCOUNT}:{args.typ.split(':')[-1]}/{name}"),
                "name": name,
            }
            t = args.typ
            if t == "docker:index/image:Image":
                image_name = str(inputs.get("imageName", f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}"))
                repo = image_name.rsplit(":", 1)[0] if ":" in image_name.rsplit("/", 1)[-1] else image_name
                digest = hashlib.sha256(image_name.encode()).hexdigest()
                out.update(imageName=image_name, repoDigest=f"{repo}@sha256:{digest}", baseImageName=image_name)
            elif t == "awsx:ec2:Vpc":
                out.update(
                    vpcId="vpc-0123456789abcdef0",
                    publicSubnetIds=["subnet-pub-a", "subnet-pub-b"],
                    privateSubnetIds=["subnet-prv-a", "subnet-prv-b"],
                    isolatedSubnetIds=["subnet-iso-a", "subnet-iso-b"],
                )
            elif t == "aws:ecr/repository:Repository":
                out.update(repositoryUrl=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}", registryId=ACCOUNT)
            elif t == "aws:lb/loadBalancer:LoadBalancer":
                out.update(dnsName=f"{name}-123.{REGION}.elb.amazonaws.com", zoneId="Z32O12XQLNTSW2")
            elif t.startswith("aws:rds/cluster"):
                out.update(endpoint=f"{name}.cluster-abc.{REGION}.rds.amazonaws.com",
                           readerEndpoint=f"{name}.cluster-ro-abc.{REGION}.rds.amazonaws.com",
                           port=inputs.get("port", 3306), clusterIdentifier=name)
            elif t == "aws:s3/bucket:Bucket":
                out.update(bucket=inputs.get("bucket", name), bucketDomainName=f"{name}.s3.amazonaws.com")
            elif t in ("random:index/randomPassword:RandomPassword", "random:index/randomString:RandomString"):
                out.update(result="mock-" + hashlib.sha256(name.encode()).hexdigest()[:24])
            elif t == "aws:ec2/securityGroup:SecurityGroup":
                out.update(id=f"sg-{hashlib.sha256(name.encode()).hexdigest()[:12]}")
            return f"{name}-id", out

        def call(self, args: pulumi.runtime.MockCallArgs):
            tok = args.token
            if tok == "aws:index/getAvailabilityZones:getAvailabilityZones":
                return {"names": [f"{REGION}a", f"{REGION}b", f"{REGION}c"],
                        "zoneIds": ["euw1-az1", "euw1-az2", "euw1-az3"], "id": REGION}
            if tok == "aws:index/getRegion:getRegion":
                return {"name": REGION, "region": REGION, "id": REGION, "endpoint": f"ec2.{REGION}.amazonaws.com",
                        "description": "Europe (Ireland)"}
            if tok == "aws:index/getCallerIdentity:getCallerIdentity":
                return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDAMOCK",
                        "id": ACCOUNT}
            if tok == "aws:index/getPartition:getPartition":
                return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
            if tok == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
                return {"authorizationToken": "QVdTOm1vY2s=", "userName": "AWS", "password": "mock",
                        "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
                        "expiresAt": "2030-01-01T00:00:00Z", "id": REGION}
            if tok == "aws:iam/getPolicyDocument:getPolicyDocument":
                return {"json": json.dumps({"Version": "2012-10-17", "Statement": []}), "id": "doc"}
            return {}

    return Mocks()


def run(stack: str, config: dict[str, str], secret_keys: list[str]) -> dict[str, Any]:
    import pulumi

    records: list[dict[str, Any]] = []
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(make_mocks(records), project="mlflow-tracking", stack=stack, preview=False)

    import program  # the module the project's __main__.py runs

    error = None

    @pulumi.runtime.test
    def _run():
        program.define_stack()

    try:
        _run()
    except Exception as e:  # noqa: BLE001 - reported to the parent test
        error = f"{type(e).__name__}: {e}"
    return {"resources": records, "error": error}


if __name__ == "__main__":
    req = json.load(sys.stdin)
    result = run(req["stack"], req["config"], req.get("secret_keys", []))
    sys.stdout.write("\n@@RESULT@@" + json.dumps(result) + "\n")
