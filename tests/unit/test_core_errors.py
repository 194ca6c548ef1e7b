"""Domain errors: their gRPC and HTTP codes, and the google.rpc status they travel as."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway_core.errors import (
    Aborted,
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    FieldViolation,
    GatewayError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
    invalid_field,
    to_rpc_status,
)


def as_client_error(err: GatewayError) -> grpc.aio.AioRpcError:
    """The error a grpc.aio client raises when a server ends the call with `err`."""
    status = to_rpc_status(err)
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
        debug_error_string=None,
    )


def rich_status(err: GatewayError) -> status_pb2.Status:
    status = to_rpc_status(err)
    (key, value), *_ = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(value)


@pytest.mark.parametrize(
    ("error", "grpc_code", "http_status"),
    [
        (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 400),
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
        (NotFound, grpc.StatusCode.NOT_FOUND, 404),
        (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
        (Aborted, grpc.StatusCode.ABORTED, 409),
        (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (Internal, grpc.StatusCode.INTERNAL, 500),
        (Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
    ],
)
def test_each_error_knows_its_grpc_code_and_http_status(
    error: type[GatewayError], grpc_code: grpc.StatusCode, http_status: int
) -> None:
    assert error.grpc_code == grpc_code
    assert error.http_status == http_status
    assert to_rpc_status(error("x")).code == grpc_code


def test_conflicts_share_one_family() -> None:
    assert issubclass(AlreadyExists, Conflict)
    assert issubclass(Aborted, Conflict)


def test_status_always_carries_error_info_with_reason_and_domain() -> None:
    err = NotFound("payment not found", reason="PAYMENT_NOT_FOUND", metadata={"id": "PAY_1"})

    details = rich_status(err).details
    info = error_details_pb2.ErrorInfo()

    assert len(details) == 1
    assert details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "PAYMENT_NOT_FOUND",
        "paygate",
        {"id": "PAY_1"},
    )


def test_field_violations_travel_as_bad_request() -> None:
    err = InvalidArgument.for_fields(
        [FieldViolation("amount_paisa", "must be greater than 0"), FieldViolation("vpa", "bad")]
    )

    bad_request = error_details_pb2.BadRequest()
    assert rich_status(err).details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("amount_paisa", "must be greater than 0"),
        ("vpa", "bad"),
    ]
    assert err.message == "amount_paisa: must be greater than 0; vpa: bad"


def test_invalid_field_names_the_field_and_a_default_reason() -> None:
    err = invalid_field("currency", "only INR is supported")

    assert err.reason == "INVALID_FIELD"
    assert err.field_violations == [FieldViolation("currency", "only INR is supported")]


def test_round_trip_gives_the_client_the_error_the_server_raised() -> None:
    sent = InvalidArgument(
        "invalid card",
        reason="CARD_EXPIRED",
        field_violations=[FieldViolation("card.expiry_year", "in the past")],
        metadata={"hint": "use a newer card"},
    )

    received = from_rpc_error(as_client_error(sent))

    assert type(received) is InvalidArgument
    assert received.message == "invalid card"
    assert received.reason == "CARD_EXPIRED"
    assert received.field_violations == sent.field_violations
    assert received.metadata == {"hint": "use a newer card"}


def test_retry_advice_travels_as_retry_info_and_a_retry_after_header() -> None:
    sent = Unavailable("at capacity", reason="OVERLOADED", retry_after_s=2)

    status = to_rpc_status(sent)
    retry = error_details_pb2.RetryInfo()
    assert rich_status(sent).details[-1].Unpack(retry)
    assert retry.retry_delay.seconds == 2
    # Envoy hands trailing metadata of a failed call to a REST client as response headers.
    assert ("retry-after", "2") in status.trailing_metadata
    received = from_rpc_error(as_client_error(sent))
    assert (type(received), received.reason, received.retry_after_s) == (
        Unavailable,
        "OVERLOADED",
        2,
    )
    assert from_rpc_error(as_client_error(Unavailable("down"))).retry_after_s is None
    assert ("retry-after", "2") not in to_rpc_status(Unavailable("down")).trailing_metadata


def test_error_without_details_maps_by_code_with_the_default_reason() -> None:
    plain = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="down",
        debug_error_string=None,
    )

    received = from_rpc_error(plain)

    assert type(received) is Unavailable
    assert (received.message, received.reason) == ("down", "UNAVAILABLE")


def test_details_for_another_code_are_ignored() -> None:
    status = to_rpc_status(NotFound("gone", reason="PAYMENT_NOT_FOUND"))
    rewritten = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details="proxy failure",
        debug_error_string=None,
    )

    received = from_rpc_error(rewritten)

    assert type(received) is Internal
    assert received.reason == "INTERNAL"


def test_status_message_never_carries_a_card_number() -> None:
    err = InvalidArgument(
        "card 4111 1111 1111 1111 declined",
        field_violations=[FieldViolation("card.number", "4111111111111111 fails Luhn")],
    )

    status = to_rpc_status(err)

    assert "4111 1111 1111 1111" not in status.details
    assert status.details == "card ************1111 declined"
    assert b"4111111111111111" not in status.trailing_metadata[0][1]
