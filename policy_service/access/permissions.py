"""The permissions an access file grants, and the one table from every method to its
permission.

A permission is a group of methods that go together (reading group state, writing it, ...).
Every method the service serves is in METHOD_PERMISSIONS (a test checks it against the
protos' descriptors), so a new RPC cannot be served before someone decides who may call it;
a method missing from it anyway needs `*`.
"""

from __future__ import annotations

from collections.abc import Mapping

ALL = "*"
"""The permission of every method."""

_CREATION = "/chatpolicy.v1.CreationPolicyService/"
_GROUP_STATE = "/chatpolicy.v1.GroupStateService/"
_HEALTH = "/grpc.health.v1.Health/"
_REFLECTION_METHOD = "ServerReflection/ServerReflectionInfo"

METHOD_PERMISSIONS: Mapping[str, str] = {
    f"{_CREATION}CheckGroupCreation": "creation.check",
    f"{_CREATION}GetPolicy": "policy.read",
    f"{_CREATION}ListDecisions": "decisions.read",
    f"{_GROUP_STATE}GetGroupState": "group-state.read",
    f"{_GROUP_STATE}BatchGetGroupStates": "group-state.read",
    f"{_GROUP_STATE}CountGroupStates": "group-state.read",
    f"{_GROUP_STATE}ListFullGroups": "group-state.read",
    f"{_GROUP_STATE}WatchGroupStates": "group-state.read",
    f"{_GROUP_STATE}RecordGroupFull": "group-state.write",
    f"{_GROUP_STATE}RecordMemberExit": "group-state.write",
    f"{_GROUP_STATE}RecordGroupDestroyed": "group-state.write",
    f"{_GROUP_STATE}ClearGroupFull": "admin",
    "/chatpolicy.v1.AuditService/ListAuditEvents": "audit.read",
    f"{_HEALTH}Check": "health",
    f"{_HEALTH}Watch": "health",
    f"/grpc.reflection.v1alpha.{_REFLECTION_METHOD}": "reflection",
    f"/grpc.reflection.v1.{_REFLECTION_METHOD}": "reflection",
}

PERMISSIONS: frozenset[str] = frozenset(METHOD_PERMISSIONS.values())
"""Every permission but ALL, which an access file may name as well."""

OPEN_BY_DEFAULT: frozenset[str] = frozenset({"health", "reflection"})
"""What anyone may call, identified or not, when the access file does not say `open`."""


def permission_of(method: str) -> str:
    """The permission a full method name (`/package.Service/Method`) needs; ALL for a
    method the table does not know."""
    return METHOD_PERMISSIONS.get(method, ALL)


def methods_of(permission: str) -> list[str]:
    """The full method names a permission lets a caller call (ALL: every one)."""
    return [m for m, p in METHOD_PERMISSIONS.items() if permission in (p, ALL)]
