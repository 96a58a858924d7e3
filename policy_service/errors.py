"""Errors of the policy service's domain, free of any transport; servicers map them to gRPC."""

from __future__ import annotations


class PolicyServiceError(Exception):
    """Base of every error the policy service reports to its callers."""


class InvalidArgument(PolicyServiceError):
    """A request field is missing or out of range."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidPageToken(PolicyServiceError):
    """A page token was not issued by this service for the same request parameters."""


class GroupNotFound(PolicyServiceError):
    """No event was ever recorded for the group."""

    def __init__(self, sdk_app_id: int, group_id: str, topic_id: str) -> None:
        where = f" topic {topic_id!r}" if topic_id else ""
        super().__init__(f"group {group_id!r}{where} of SdkAppid {sdk_app_id} is not known")
        self.sdk_app_id = sdk_app_id
        self.group_id = group_id
        self.topic_id = topic_id


class StoreUnavailable(PolicyServiceError):
    """The state store could not be reached or failed; the caller may retry."""
