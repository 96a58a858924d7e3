"""Protobuf timestamps to and from the Unix milliseconds the domain uses; shared by the
servicers."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from policy_service.errors import InvalidArgument


def timestamp(ms: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp at Unix milliseconds `ms`."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def milliseconds(field: str, stamp: timestamp_pb2.Timestamp) -> int:
    """The Unix milliseconds of the request's Timestamp `field`; InvalidArgument naming it
    unless it is a valid Timestamp (years 1 to 9999, nanos below a second)."""
    try:
        return stamp.ToMilliseconds()
    except ValueError:  # protobuf checks the range as it converts
        raise InvalidArgument(
            field, "is not a valid Timestamp (years 1 to 9999, nanos 0 to 999,999,999)"
        ) from None
