"""Channels to other services of the mesh, traced and kept alive the same way everywhere."""

from __future__ import annotations

import json

import grpc

from gateway_core.services import grpc_target
from gateway_core.telemetry import client_interceptors

# Round robin spreads calls over every address a name resolves to (a headless Kubernetes
# service); locally there is one address and it changes nothing.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.service_config", _SERVICE_CONFIG),
    # Pings detect a dead peer behind a silent network (NAT, a killed pod) within ~40 s. The
    # servers of this mesh accept pings this frequent (see server.SERVER_OPTIONS).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A restarted peer is found again within about a second: gRPC's default backoff grows to
    # two minutes, during which a fail-open caller (fraud) would quietly skip the peer.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


def insecure_channel(address: str) -> grpc.aio.Channel:
    """A channel to `host:port` (a leading `http://` is accepted, as the seed writes addresses).

    Plaintext because the mesh runs inside one network boundary; mTLS belongs to the platform
    (service mesh sidecars), not to each service.
    """
    return grpc.aio.insecure_channel(
        grpc_target(address), options=CHANNEL_OPTIONS, interceptors=client_interceptors()
    )
