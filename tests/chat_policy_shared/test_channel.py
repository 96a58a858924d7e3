"""Where clients dial the policy service: one rule for the adapter and the command line."""

from __future__ import annotations

from chat_policy_shared.channel import dial_target


def test_the_target_follows_the_adapters_rule() -> None:
    """CHAT_POLICY_GRPC_TARGET, else CHAT_POLICY_GRPC_BIND, else 127.0.0.1:50051."""
    assert dial_target({}) == "127.0.0.1:50051"
    assert dial_target({"CHAT_POLICY_GRPC_BIND": "0.0.0.0:7000"}) == "0.0.0.0:7000"
    assert (
        dial_target(
            {"CHAT_POLICY_GRPC_BIND": "0.0.0.0:7000", "CHAT_POLICY_GRPC_TARGET": "dns:///p:1"}
        )
        == "dns:///p:1"
    )
    assert dial_target({"CHAT_POLICY_GRPC_TARGET": "", "CHAT_POLICY_GRPC_BIND": ""}) == (
        "127.0.0.1:50051"
    )
