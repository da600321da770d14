"""The Application Load Balancer of the Service, its certificate and the name clients use.

Built by :class:`components.service.Service` with itself as parent (these resources were part of
``service.py``; their names and URNs are unchanged).

- Security group admitting 80 (and 443 with HTTPS) only from ``allowed_cidrs``; egress only to
  the service security group on the container port, which admits the ALB's group.
- HTTPS when there is a certificate: the one given (``certificate_arn``), or one requested here
  (``hosted_zone_id``: ACM with DNS validation, the validation record in the zone, and a wait
  until ACM issues it). HTTP then only redirects. Without a certificate: plain HTTP forward.
- DNS with ``hosted_zone_id``: an alias A record ``domain_name`` -> ALB (the ALB is IPv4 only,
  so no AAAA).
- Single sign-on (``sso``, :mod:`components.sso`, docs/sso.md): the HTTPS listener's default action
  logs the person in (``authenticate-oidc`` / ``authenticate-cognito``) then forwards; listener
  rules of higher priority forward the programmatic paths without the login; the security group
  may then also leave on 443 (the IdP's token and user info endpoints).
- Target group: health check ``/health``; deregistration delay :data:`DEREGISTRATION_DELAY_SECONDS`.
- The host clients use is ``domain_name`` when set (the only name a certificate covers), else
  the ALB's DNS name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.naming import fitted_name
from components.sso import SingleSignOn, authenticate_action, build_sso_listener

DEREGISTRATION_DELAY_SECONDS = 900
"""How long a deregistered task keeps serving its in-flight requests during a deployment (ELB
allows 0-3600 s, default 300). 15 minutes carries a 10 GiB proxied transfer at about 12 MB/s;
every update waits for it (see ``service.ROLLOUT_TIMEOUTS``), so longer would slow each deploy."""
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass(frozen=True)
class LoadBalancerParts:
    alb: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    listeners: list[pulumi.Resource]
    """What the ECS service waits for (a target group must be attached to a listener first; with
    sso, the programmatic rules too)."""
    security_group_id: pulumi.Output[str]
    host: pulumi.Output[str]
    """The host name of the tracking URI: ``domain_name`` or the ALB's DNS name."""
    https: bool


def build_load_balancer(name: str, *, parent: pulumi.Resource, vpc_id: pulumi.Input[str],
                        subnet_ids: list[pulumi.Input[str]], internal: bool,
                        service_security_group_id: pulumi.Input[str], container_port: int,
                        allowed_cidrs: tuple[str, ...], certificate_arn: Optional[str],
                        hosted_zone_id: Optional[str], domain_name: Optional[str], idle_timeout_seconds: int,
                        deletion_protection: bool, tags: dict[str, str],
                        access_logs_bucket: Optional[pulumi.Input[str]] = None,
                        sso: Optional[SingleSignOn] = None) -> LoadBalancerParts:
    """Create the load balancer's resources as children of ``parent``, named ``<name>-...``."""
    child = pulumi.ResourceOptions(parent=parent)
    https = certificate_arn is not None or hosted_zone_id is not None
    assert sso is None or https, "sso needs an HTTPS listener"

    alb_sg = aws.ec2.SecurityGroup(f"{name}-alb-sg", vpc_id=vpc_id,
                                   description="MLflow ALB: HTTP(S) from the allowed networks",
                                   tags={**tags, "Name": f"{name}-alb"}, opts=child)
    for i, cidr in enumerate(allowed_cidrs):
        v6 = ipaddress.ip_network(cidr).version == 6
        for port in ([80, 443] if https else [80]):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-alb-in-{port}-{i}", security_group_id=alb_sg.id, ip_protocol="tcp",
                from_port=port, to_port=port, description=f"clients ({cidr})",
                **({"cidr_ipv6": cidr} if v6 else {"cidr_ipv4": cidr}), opts=child)
    aws.vpc.SecurityGroupEgressRule(f"{name}-alb-to-service", security_group_id=alb_sg.id, ip_protocol="tcp",
                                    from_port=container_port, to_port=container_port,
                                    referenced_security_group_id=service_security_group_id,
                                    description="MLflow tasks", opts=child)
    aws.vpc.SecurityGroupIngressRule(f"{name}-service-from-alb", security_group_id=service_security_group_id,
                                     ip_protocol="tcp", from_port=container_port, to_port=container_port,
                                     referenced_security_group_id=alb_sg.id, description="MLflow ALB", opts=child)

    alb = aws.lb.LoadBalancer(
        f"{name}-alb", load_balancer_type="application", internal=internal, subnets=subnet_ids,
        security_groups=[alb_sg.id], idle_timeout=idle_timeout_seconds, drop_invalid_header_fields=True,
        enable_deletion_protection=deletion_protection, tags=tags,
        # Access logs (ELB User Guide, "Access logs for your Application Load Balancer"): the bucket
        # resolves once its delivery policy exists, which ELB checks when logging is turned on.
        **({"access_logs": {"bucket": access_logs_bucket, "enabled": True}} if access_logs_bucket is not None else {}),
        **fitted_name(f"{name}-alb", 32, 6), opts=child)
    target_group = aws.lb.TargetGroup(
        f"{name}-tg", port=container_port, protocol="HTTP", target_type="ip", vpc_id=vpc_id,
        deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
        health_check={"path": "/health", "matcher": "200", "protocol": "HTTP", "interval": 15,
                      "timeout": 5, "healthy_threshold": 2, "unhealthy_threshold": 3},
        tags=tags, **fitted_name(f"{name}-tg", 32, 6), opts=child)

    forward = [{"type": "forward", "target_group_arn": target_group.arn}]
    listeners = []
    if https:
        cert = certificate_arn or _issued_certificate(name, parent, domain_name, hosted_zone_id, tags)
        # With sso: log in first (order 1), then forward (order 2); the programmatic paths skip it.
        https_actions = forward if sso is None else [authenticate_action(sso), {**forward[0], "order": 2}]
        https_listener = aws.lb.Listener(
            f"{name}-https", load_balancer_arn=alb.arn, port=443, protocol="HTTPS", certificate_arn=cert,
            ssl_policy=TLS_POLICY, default_actions=https_actions, tags=tags, opts=child)
        listeners.append(https_listener)
        listeners.append(aws.lb.Listener(
            f"{name}-http", load_balancer_arn=alb.arn, port=80, protocol="HTTP",
            default_actions=[{"type": "redirect",
                              "redirect": {"protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}}],
            tags=tags, opts=child))
        if sso is not None:
            listeners.extend(build_sso_listener(name, parent=parent, sso=sso, listener=https_listener,
                                                target_group_arn=target_group.arn, alb_security_group_id=alb_sg.id,
                                                tags=tags))
    else:
        listeners.append(aws.lb.Listener(f"{name}-http", load_balancer_arn=alb.arn, port=80, protocol="HTTP",
                                         default_actions=forward, tags=tags, opts=child))

    if hosted_zone_id is not None:
        assert domain_name, "hosted_zone_id needs domain_name"
        aws.route53.Record(f"{name}-dns", zone_id=hosted_zone_id, name=domain_name, type="A",
                           aliases=[{"name": alb.dns_name, "zone_id": alb.zone_id, "evaluate_target_health": True}],
                           opts=child)

    host = pulumi.Output.from_input(domain_name) if domain_name else alb.dns_name
    return LoadBalancerParts(alb, target_group, listeners, alb_sg.id, host, https)


def _issued_certificate(name: str, parent: pulumi.Resource, domain_name: Optional[str], hosted_zone_id: str,
                        tags: dict[str, str]) -> pulumi.Output[str]:
    """Request an ACM certificate for ``domain_name``, publish its DNS validation record in the
    zone and return its ARN once ACM has issued it (ACM User Guide, "DNS validation")."""
    assert domain_name, "hosted_zone_id needs domain_name"
    child = pulumi.ResourceOptions(parent=parent)
    cert = aws.acm.Certificate(f"{name}-certificate", domain_name=domain_name, validation_method="DNS",
                               tags={**tags, "Name": domain_name}, opts=child)
    option = cert.domain_validation_options.apply(lambda options: options[0])  # one name: one record
    record = aws.route53.Record(
        f"{name}-certificate-validation", zone_id=hosted_zone_id,
        name=option.apply(lambda o: o.resource_record_name), type=option.apply(lambda o: o.resource_record_type),
        records=[option.apply(lambda o: o.resource_record_value)], ttl=300,
        # ACM gives the same record to every certificate of this name in the account: another
        # (or an earlier) certificate may have created it already.
        allow_overwrite=True, opts=child)
    issued = aws.acm.CertificateValidation(f"{name}-certificate-issued", certificate_arn=cert.arn,
                                           validation_record_fqdns=[record.fqdn], opts=child)
    return issued.certificate_arn
