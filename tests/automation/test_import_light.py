"""``import deploy`` is what a user's own Python code runs to drive a stack with the Automation API
(issue 13: "import deploy should not import the AWS and Docker SDKs just to know the output names").

pulumi-aws alone takes about a second to import; the Automation API needs none of the providers'
SDKs: the Pulumi program that uses them runs in the engine's own Python process (``__main__.py``)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pulumi_aws", "pulumi_awsx", "pulumi_docker", "pulumi_random", "boto3", "docker")


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_import_deploy_loads_no_provider_sdk():
    loaded = _modules_after("import deploy")
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], f"import deploy imported {heavy[:5]}"


def test_output_names_without_provider_sdk():
    loaded = _modules_after("from deploy import StackOutputs\nfrom components import outputs\nassert outputs")
    assert not any(m.split(".")[0] in HEAVY for m in loaded)


def test_components_still_offer_every_name():
    import components

    for name in components.__all__:
        assert getattr(components, name).__name__ == name
