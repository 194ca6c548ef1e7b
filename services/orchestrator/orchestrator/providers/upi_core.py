"""Client for the UPI switch (UPI Core) over gRPC."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gateway_core.errors import DeadlineExceeded, Unavailable
from paygate.sandbox.v1 import upi_pb2, upi_pb2_grpc

PROVIDER_NAME = "upi_core"
# A VPA lookup is on the merchant's request path: fail fast rather than hang the checkout.
LOOKUP_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class VpaLookup:
    exists: bool
    holder_name: str


class UpiCoreClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = upi_pb2_grpc.UpiCoreServiceStub(channel)

    async def validate_vpa(self, vpa: str) -> VpaLookup:
        try:
            reply = await self._stub.ValidateVpa(
                upi_pb2.ValidateVpaRequest(vpa=vpa), timeout=LOOKUP_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(
                    "the UPI network did not answer the VPA lookup in time; retry",
                    reason="PROVIDER_TIMEOUT",
                ) from exc
            raise Unavailable(
                "the UPI network is unavailable; retry shortly", reason="PROVIDER_UNAVAILABLE"
            ) from exc
        return VpaLookup(exists=reply.exists, holder_name=reply.holder_name)
