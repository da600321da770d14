"""The Amazon RDS CA bundle in the image (image/certs/rds-global-bundle.pem, bin/update-rds-ca).

Amazon Aurora User Guide, "Using SSL/TLS to encrypt a connection to a DB cluster": RDS signs
each DB server certificate with one of the CAs rds-ca-rsa2048-g1 (the default), rds-ca-rsa4096-g1
or rds-ca-ecc384-g1, whose certificates are named "Amazon RDS <region> Root CA RSA2048 G1" (and
RSA4096 G1, ECC384 G1) and are in the global bundle. A client that verifies needs the root of
its cluster's region and CA in its bundle.
"""

from __future__ import annotations

import datetime
import importlib.machinery
import importlib.util
import re
import ssl
import warnings

import pytest

from tests.unit.harness import ROOT

BUNDLE = ROOT / "image" / "certs" / "rds-global-bundle.pem"
PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.+?-----END CERTIFICATE-----", re.S)
# the regions where most deployments live; every one must have all three G1 roots
MAJOR_REGIONS = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1", "eu-west-2",
                 "eu-west-3", "eu-central-1", "eu-north-1", "ap-northeast-1", "ap-northeast-2",
                 "ap-southeast-1", "ap-southeast-2", "ap-south-1", "sa-east-1")
G1_CAS = ("RSA2048 G1", "RSA4096 G1", "ECC384 G1")


@pytest.fixture(scope="module")
def certs():
    from cryptography import x509

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [x509.load_pem_x509_certificate(p.encode()) for p in PEM.findall(BUNDLE.read_text())]


def cn(name) -> str:
    from cryptography.x509.oid import NameOID

    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_bundle_records_its_source_and_loads_in_openssl(certs):
    head = BUNDLE.read_text().split("-----BEGIN", 1)[0]
    assert "truststore.pki.rds.amazonaws.com/global/global-bundle.pem" in head  # the canonical source
    assert re.search(r"This copy: .+\d", head) and re.search(r"taken on \d{4}-\d{2}-\d{2}", head), head
    context = ssl.create_default_context(cafile=str(BUNDLE))
    assert len(context.get_ca_certs()) == len(certs) >= 60


def test_only_amazon_rds_ca_certificates(certs):
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID, NameOID

    for cert in certs:
        subject = cn(cert.subject)
        assert subject.startswith("Amazon RDS ") and cn(cert.issuer).startswith("Amazon RDS "), subject
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Amazon Web Services, Inc."
        constraints = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        assert isinstance(constraints, x509.BasicConstraints) and constraints.ca, f"{subject} is not a CA"


def test_the_g1_roots_of_the_major_regions(certs):
    subjects = {cn(c.subject) for c in certs}
    missing = [f"Amazon RDS {r} Root CA {ca}" for r in MAJOR_REGIONS for ca in G1_CAS
               if f"Amazon RDS {r} Root CA {ca}" not in subjects]
    assert not missing, missing


def test_valid_today(certs):
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = [cn(c.subject) for c in certs if c.not_valid_before_utc <= now <= c.not_valid_after_utc]
    assert valid and len(valid) == len(certs), sorted({cn(c.subject) for c in certs} - set(valid))


def test_the_image_ships_it_where_the_task_definitions_point():
    from components.container_definition import DB_TLS_CA

    dockerfile = (ROOT / "image" / "Dockerfile").read_text()
    assert re.search(r"^COPY certs /app/certs$", dockerfile, re.M)
    assert f"MLFLOW_DB_TLS_CA={DB_TLS_CA}" in dockerfile and DB_TLS_CA == "/app/certs/rds-global-bundle.pem"
    assert "!certs" in (ROOT / "image" / ".dockerignore").read_text().split()


def update_script():
    path = ROOT / "bin" / "update-rds-ca"
    spec = importlib.util.spec_from_loader("update_rds_ca", importlib.machinery.SourceFileLoader("update_rds_ca",
                                                                                                 str(path)))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_update_script_refuses_what_is_not_an_rds_ca(tmp_path):
    from tests.support.tls import TestCA

    script = update_script()
    now = datetime.datetime.now(datetime.timezone.utc)
    foreign = TestCA(tmp_path / "ca", "Some Other Root CA")
    server = foreign.issue_server(tmp_path / "server")
    rds_like_leaf = TestCA(tmp_path / "rds", "Amazon RDS test Root CA").issue_server(tmp_path / "leaf")
    for path, words in ((foreign.cert_path, "is not an Amazon RDS certificate"),
                        (server.cert_path, "is not a CA certificate"),
                        (rds_like_leaf.cert_path, "is not a CA certificate")):
        with pytest.raises(script.BundleError) as refused:
            script.check([path.read_text().strip()], now)
        assert words in str(refused.value)
    kept, expired = script.check(PEM.findall(BUNDLE.read_text()), now)
    assert (len(kept), expired) == (len(PEM.findall(BUNDLE.read_text())), 0)
