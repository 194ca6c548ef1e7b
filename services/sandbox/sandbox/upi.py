"""UPI Core: the simulated UPI switch.

Only the VPA lookup is built so far; initiation, status inquiry and refunds answer
UNIMPLEMENTED until the payments-core issue builds the approval flow.
"""

from __future__ import annotations

import re

from gateway_core.auth import RpcContext
from paygate.sandbox.v1 import upi_pb2, upi_pb2_grpc
from sandbox.magic import UpiOutcome, holder_name, upi_outcome

# What a switch accepts as a VPA at all; malformed ones simply do not exist.
_VPA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,255}@[A-Za-z][A-Za-z0-9]{1,63}")


class UpiCoreServicer(upi_pb2_grpc.UpiCoreServiceServicer):
    async def ValidateVpa(
        self, request: upi_pb2.ValidateVpaRequest, context: RpcContext
    ) -> upi_pb2.ValidateVpaResponse:
        vpa = request.vpa.strip()
        if not _VPA.fullmatch(vpa) or upi_outcome(vpa) is UpiOutcome.NO_SUCH_VPA:
            return upi_pb2.ValidateVpaResponse(exists=False)
        return upi_pb2.ValidateVpaResponse(exists=True, holder_name=holder_name(vpa))
