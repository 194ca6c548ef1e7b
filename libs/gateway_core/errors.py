"""The one domain error hierarchy: each error knows its gRPC code and the HTTP status Envoy maps
it to, so servicers `raise NotFound(...)` and callers get the same error over gRPC and REST.

On the wire an error is a `google.rpc.Status` with details: `ErrorInfo` (stable `reason`, domain
`paygate`, metadata) always, `BadRequest` when fields are at fault, `RetryInfo` when the caller
should come back later (with a `retry-after` header in seconds, which Envoy hands a REST client
as its HTTP Retry-After). `from_rpc_error` reads that back, so a client of another service gets
the same typed error the server raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway_core.masking import mask_sensitive

DOMAIN = "paygate"
_DETAILS_KEY = "grpc-status-details-bin"
RETRY_AFTER_KEY = "retry-after"


@dataclass(frozen=True)
class FieldViolation:
    field: str  # request field path, e.g. "card.expiry_month"
    description: str


class GatewayError(Exception):
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    http_status: ClassVar[int] = 500
    reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field_violations: Iterable[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.field_violations = list(field_violations)
        self.metadata = dict(metadata or {})
        # Seconds after which a retry may succeed (load shedding); None: no advice.
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(GatewayError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    reason = "INVALID_ARGUMENT"

    @classmethod
    def for_fields(
        cls, violations: Sequence[FieldViolation], reason: str = "INVALID_FIELD"
    ) -> InvalidArgument:
        """One error for a request with several bad fields, so the client fixes them at once."""
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        return cls(message or "invalid request", reason=reason, field_violations=violations)


class FailedPrecondition(GatewayError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 400
    reason = "FAILED_PRECONDITION"


class OutOfRange(GatewayError):
    grpc_code = grpc.StatusCode.OUT_OF_RANGE
    http_status = 400
    reason = "OUT_OF_RANGE"


class Unauthenticated(GatewayError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    reason = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    reason = "PERMISSION_DENIED"


class NotFound(GatewayError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    reason = "NOT_FOUND"


class Conflict(GatewayError):
    """HTTP 409 family (as in google.api_core): catches AlreadyExists and Aborted too."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    reason = "CONFLICT"


class AlreadyExists(Conflict):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class Aborted(Conflict):
    reason = "ABORTED"


class Cancelled(GatewayError):
    grpc_code = grpc.StatusCode.CANCELLED
    http_status = 499
    reason = "CANCELLED"


class ResourceExhausted(GatewayError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    reason = "RESOURCE_EXHAUSTED"


class Unknown(GatewayError):
    reason = "UNKNOWN"


class Internal(GatewayError):
    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    reason = "INTERNAL"


class DataLoss(GatewayError):
    grpc_code = grpc.StatusCode.DATA_LOSS
    http_status = 500
    reason = "DATA_LOSS"


class Unimplemented(GatewayError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    http_status = 501
    reason = "UNIMPLEMENTED"


class Unavailable(GatewayError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    reason = "UNAVAILABLE"


class DeadlineExceeded(GatewayError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    reason = "DEADLINE_EXCEEDED"


_BY_CODE: dict[grpc.StatusCode, type[GatewayError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        FailedPrecondition,
        OutOfRange,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        Aborted,
        Cancelled,
        ResourceExhausted,
        Unknown,
        Internal,
        DataLoss,
        Unimplemented,
        Unavailable,
        DeadlineExceeded,
    )
}


def invalid_field(field: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
    return InvalidArgument.for_fields([FieldViolation(field, description)], reason=reason)


def to_rpc_status(err: GatewayError) -> grpc.Status:
    """The status a server ends the call with; messages are masked, as they reach logs and UIs."""
    message = mask_sensitive(err.message)
    info = error_details_pb2.ErrorInfo(
        reason=err.reason,
        domain=DOMAIN,
        metadata={k: mask_sensitive(v) for k, v in err.metadata.items()},
    )
    details = [_pack(info)]
    if err.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=mask_sensitive(v.description)
                )
                for v in err.field_violations
            ]
        )
        details.insert(0, _pack(bad_request))
    if err.retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromSeconds(err.retry_after_s)
        details.append(_pack(retry))
    status = status_pb2.Status(code=err.grpc_code.value[0], message=message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    if err.retry_after_s is None:
        return result
    return _Status(
        result.code,
        result.details,
        (*result.trailing_metadata, (RETRY_AFTER_KEY, str(err.retry_after_s))),
    )


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def from_rpc_error(e: grpc.aio.AioRpcError) -> GatewayError:
    """The typed error behind a failed call, with the reason and violations the server sent."""
    code = e.code()
    cls = _BY_CODE.get(code, Unknown)
    message = e.details() or code.name
    rich = _rich_status(e)
    if rich is None:
        return cls(message)
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after_s: int | None = None
    for detail in rich.details:
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad_request):
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
        elif detail.Unpack(retry):
            retry_after_s = retry.retry_delay.seconds
    return cls(
        rich.message or message,
        reason=reason,
        field_violations=violations,
        metadata=metadata,
        retry_after_s=retry_after_s,
    )


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _rich_status(e: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    metadata = cast(Iterable[tuple[str, str | bytes]], e.trailing_metadata() or ())
    for key, value in metadata:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            # A proxy may rewrite the status; details that disagree with it describe another error.
            return status if status.code == e.code().value[0] else None
    return None
