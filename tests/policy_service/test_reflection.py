"""gRPC server reflection, read with grpc_reflection's client as generic tools read it."""

from __future__ import annotations

from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.policy_service.servers import APP, Serve

CREATION_POLICY_SERVICE = "chatpolicy.v1.CreationPolicyService"


def test_reflection_lists_every_service(serve: Serve) -> None:
    """Reflection lists the chatpolicy services, health and reflection itself, nothing else."""
    server = serve()
    database = ProtoReflectionDescriptorDatabase(server.channel)
    assert sorted(database.get_services()) == [
        "chatpolicy.v1.AuditService",
        CREATION_POLICY_SERVICE,
        "chatpolicy.v1.GroupStateService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]


def test_reflection_resolves_a_method_and_a_call_built_from_it_works(serve: Serve) -> None:
    """CheckGroupCreation's types resolve over reflection alone, and a call made with them is
    answered, as grpcurl would make it."""
    server = serve()
    # A pool of its own: nothing comes from the generated modules this process imported.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(server.channel))
    method = pool.FindServiceByName(CREATION_POLICY_SERVICE).methods_by_name["CheckGroupCreation"]
    assert method.input_type.full_name == "chatpolicy.v1.CheckGroupCreationRequest"
    assert method.output_type.full_name == "chatpolicy.v1.CheckGroupCreationResponse"
    fields = {field.name for field in method.input_type.fields}
    assert {"sdk_app_id", "operator_account", "group_type", "member_accounts"} <= fields
    event_time = method.input_type.fields_by_name["event_time"].message_type
    assert event_time is not None and event_time.full_name == "google.protobuf.Timestamp"

    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = server.channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    request = request_class(sdk_app_id=APP, operator_account="alice", group_type="Public")
    response = call(request, timeout=5)
    decision = method.output_type.fields_by_name["decision"].enum_type
    assert decision is not None
    assert decision.values_by_number[response.decision].name == "DECISION_ALLOW"
