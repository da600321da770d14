"""The single sign-on settings the mocks tests share (tests/unit/test_sso.py, test_sso_settings.py):
an OIDC provider and a Cognito user pool, and the four stack variants with each."""

from __future__ import annotations

import config
from tests.unit.conftest import PROD_OVERRIDES, PROD_ZONE
from tests.unit.harness import ACCOUNT, REGION

NS = config.NAMESPACE
LISTENER, RULE = "aws:lb/listener:Listener", "aws:lb/listenerRule:ListenerRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
GET_SECRET = "aws:secretsmanager/getSecretVersion:getSecretVersion"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:mlflow-oidc-client-AbCdEf"
POOL_ID = f"{REGION}_AbC123xyZ"
OIDC = {"provider": "oidc", "issuer": "https://idp.example.com", "authorizationEndpoint": "https://idp.example.com/authorize",
        "tokenEndpoint": "https://idp.example.com/token", "userInfoEndpoint": "https://idp.example.com/userinfo",
        "clientId": "mlflow-ui", "clientSecretArn": SECRET_ARN,
        "adminUsers": ["alice@example.com", "bob@example.com"], "adminGroupClaim": "groups", "adminGroup": "mlflow-admins"}
COGNITO = {"provider": "cognito", "userPoolArn": f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{POOL_ID}",
           "userPoolClientId": "1example23456789", "userPoolDomain": "my-mlflow", "sessionTimeoutSeconds": 3600}
DEV_HTTPS = {"domainName": "mlflow-dev.example.com", "hostedZoneId": PROD_ZONE}
"""dev's stack file serves plain HTTP; single sign-on needs HTTPS (its comment shows these two)."""
VARIANTS = {"dev-oidc": ("dev", {**DEV_HTTPS, "sso": OIDC}), "dev-cognito": ("dev", {**DEV_HTTPS, "sso": COGNITO}),
            "prod-oidc": ("prod", {**PROD_OVERRIDES, "sso": OIDC}),
            "prod-cognito": ("prod", {**PROD_OVERRIDES, "sso": COGNITO})}
