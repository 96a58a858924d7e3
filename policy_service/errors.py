"""Errors of the policy service's domain, free of any transport; servicers map them to gRPC."""

from __future__ import annotations

from chat_policy_shared.field_limits import echo


class PolicyServiceError(Exception):
    """Base of every error the policy service reports to its callers."""


class InvalidArgument(PolicyServiceError):
    """A request field is missing or out of range."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class InvalidPageToken(PolicyServiceError):
    """A page token was not issued by this service for the same request parameters."""


class GroupNotFound(PolicyServiceError):
    """No event was ever recorded for the group.

    The message and ErrorInfo metadata echo the IDs cut to a short prefix (echo): an
    unknown ID of any length must not make the answer larger than a client accepts.
    """

    def __init__(self, sdk_app_id: int, group_id: str, topic_id: str) -> None:
        where = f" topic {echo(topic_id)!r}" if topic_id else ""
        super().__init__(f"group {echo(group_id)!r}{where} of SdkAppid {sdk_app_id} is not known")
        self.sdk_app_id = sdk_app_id
        self.group_id = group_id
        self.topic_id = topic_id


class StoreUnavailable(PolicyServiceError):
    """The state store could not be reached or failed; the caller may retry."""


class ValueNotStorable(PolicyServiceError):
    """The store refused a value as it stands (too large, out of range, text it cannot hold):
    the same call fails the same way again, so it is not retried, nor a store failure."""


class ChangeLogExpired(PolicyServiceError):
    """A watch asked to resume after a sequence whose following changes were pruned."""

    def __init__(self, after_sequence: int, pruned_through: int) -> None:
        super().__init__(
            f"the change log no longer holds the changes after sequence {after_sequence}"
            f" (it starts after {pruned_through}): list the state again, then watch from now"
        )
        self.after_sequence = after_sequence
        self.oldest_sequence = pruned_through + 1


class SequenceAhead(PolicyServiceError):
    """A watch asked to resume after a sequence the change log has not reached."""

    def __init__(self, after_sequence: int, head: int) -> None:
        super().__init__(
            f"sequence {after_sequence} is ahead of the change log (newest {head}): this is"
            " another database, or it was reset; list the state again, then watch from now"
        )
        self.after_sequence = after_sequence
        self.head_sequence = head


class TooManyWatchers(PolicyServiceError):
    """The replica already serves as many watch streams as it is configured to."""


class ShuttingDown(PolicyServiceError):
    """The service is stopping; the caller should reconnect to it or another replica."""


class UnknownCaller(PolicyServiceError):
    """The service checks callers and this call carried no credential of one it knows."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method


class MethodNotAllowed(PolicyServiceError):
    """A known caller called a method the access file does not let it call."""

    def __init__(self, caller: str, method: str, permission: str) -> None:
        super().__init__(
            f"caller {caller!r} may not call {method}: the access file does not give it"
            f" the permission {permission!r}"
        )
        self.caller, self.method, self.permission = caller, method, permission
