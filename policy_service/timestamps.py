"""Protobuf timestamps from the Unix milliseconds the domain uses; shared by the servicers."""

from __future__ import annotations

from google.protobuf import timestamp_pb2


def timestamp(ms: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp at Unix milliseconds `ms`."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp
