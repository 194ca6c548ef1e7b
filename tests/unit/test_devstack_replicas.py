"""`make up REPLICAS=orchestrator=2,webhook=2`: copies of a service, each with its own ports,
all behind the service's one Envoy cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack.config import (
    REPLICA_PORT_STEP,
    StackConfigError,
    ephemeral_ports,
    fixed_ports,
    parse_replicas,
)
from devstack.envoy import PAGES_CLUSTER, STREAM_CLUSTER, render_envoy_config
from gateway_core.services import BY_NAME, SERVICES

SECRET = "x" * 32


def test_replicas_name_copies_of_services_and_default_to_one() -> None:
    counts = parse_replicas({"REPLICAS": "orchestrator=2, webhook=3"})
    assert counts == {s.name: 1 for s in SERVICES} | {"orchestrator": 2, "webhook": 3}
    assert parse_replicas({}) == {s.name: 1 for s in SERVICES}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("payments=2", "unknown service 'payments'"),
        ("orchestrator=0", "from 1 to 8"),
        ("orchestrator=two", "from 1 to 8"),
        ("orchestrator=9", "from 1 to 8"),
        ("sandbox=2", "books in memory"),
    ],
)
def test_a_bad_replicas_value_is_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(StackConfigError, match=problem):
        parse_replicas({"REPLICAS": value})


def test_each_copy_has_ports_of_its_own() -> None:
    replicas = parse_replicas({"REPLICAS": "orchestrator=2,webhook=2,web=2"})
    for ports in (fixed_ports({}, replicas), ephemeral_ports(replicas)):
        copies = {copy.name: copy for copy in ports.copies()}
        assert {"orchestrator-2", "webhook-2", "web-2"} <= set(copies)
        assert "fraud-2" not in copies
        assert copies["webhook-2"].http_port
        assert copies["web-2"].http_port
        assert copies["orchestrator-2"].http_port == 0
        owned = list(ports.by_owner().values())
        assert len(owned) == len(set(owned)), "a port is handed out twice"
    fixed = {copy.name: copy for copy in fixed_ports({}, replicas).copies()}
    orchestrator = BY_NAME["orchestrator"]
    assert fixed["orchestrator-2"].grpc_port == orchestrator.default_port + REPLICA_PORT_STEP


def test_envoy_balances_over_every_copy_of_a_service(tmp_path: Path) -> None:
    env = {"JWT_SECRET": SECRET, "ORCHESTRATOR_ADDR": "127.0.0.1:50061"}
    config = yaml.safe_load(
        render_envoy_config(
            env,
            tmp_path / "d.pb",
            more_copies={"orchestrator": [50161], STREAM_CLUSTER: [18191], PAGES_CLUSTER: []},
        )
    )

    def ports(cluster: str) -> list[int]:
        (found,) = [c for c in config["static_resources"]["clusters"] if c["name"] == cluster]
        return [
            e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in found["load_assignment"]["endpoints"][0]["lb_endpoints"]
        ]

    assert ports("orchestrator") == [50061, 50161]
    assert len(ports(STREAM_CLUSTER)) == 2
    assert len(ports("reconciliation")) == 1
    assert len(ports(PAGES_CLUSTER)) == 1
