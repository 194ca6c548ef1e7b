"""Structured JSON logs, one line per event, that can never print a PAN or a CVV.

structlog events and the stdlib records of libraries (grpc, aiokafka, asyncio) go through one
pipeline: stdlib's root handler renders both with the same processors, and the masking step runs
after exceptions are rendered to text, so a card number inside a traceback is masked too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from gateway_core.masking import mask_sensitive

__all__ = ["configure_logging", "get_logger", "mask_sensitive"]

EventDict = MutableMapping[str, Any]


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every log of this process to stdout as JSON lines; safe to call again."""

    def add_service(_: Any, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_service,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Reconfiguring (tests, a CLI that logs before its service starts) must take effect
        # for loggers that already logged.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _mask,
            # After masking: hex trace ids can contain long digit runs that are not cards.
            _add_trace_context,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def _mask(_: Any, __: str, event: EventDict) -> EventDict:
    masked: EventDict = mask_sensitive(event)
    return masked


def _add_trace_context(_: Any, __: str, event: EventDict) -> EventDict:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
