"""CreationPolicyService: translates protobuf to a policy decision and back."""

from __future__ import annotations

import logging
import time

import grpc

from chatpolicy.v1 import creation_policy_service_pb2, creation_policy_service_pb2_grpc
from policy_service.errors import InvalidArgument
from policy_service.policy import CreationRequest, Effect, Policy
from policy_service.status import maps_errors

pb = creation_policy_service_pb2
log = logging.getLogger(__name__)

_DECISIONS = {Effect.ALLOW: pb.DECISION_ALLOW, Effect.DENY: pb.DECISION_DENY}


class CreationPolicyServicer(creation_policy_service_pb2_grpc.CreationPolicyServiceServicer):
    """Answers group-creation checks from one loaded policy."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    @maps_errors
    def CheckGroupCreation(
        self, request: pb.CheckGroupCreationRequest, context: grpc.ServicerContext
    ) -> pb.CheckGroupCreationResponse:
        """Decide one group creation and log the decision."""
        started = time.perf_counter()
        if request.sdk_app_id == 0:
            raise InvalidArgument("sdk_app_id", "is required")
        decision = self._policy.decide(
            CreationRequest(
                sdk_app_id=request.sdk_app_id,
                operator_account=request.operator_account,
                owner_account=request.owner_account,
                group_type=request.group_type,
                name=request.name,
                create_group_num=(
                    request.create_group_num if request.HasField("create_group_num") else None
                ),
                member_accounts=tuple(request.member_accounts),
                event_time_ms=(
                    request.event_time.ToMilliseconds() if request.HasField("event_time") else None
                ),
                client_ip=request.client_ip,
                opt_platform=request.opt_platform,
            )
        )
        outcome = decision.outcome
        log.info(
            "decision decision_id=%s revision=%s rule=%s effect=%s error_code=%d latency_us=%d",
            decision.decision_id,
            decision.policy_revision,
            decision.rule_id,
            outcome.effect.value,
            outcome.error_code,
            (time.perf_counter() - started) * 1e6,
        )
        return pb.CheckGroupCreationResponse(
            decision=_DECISIONS[outcome.effect],
            error_code=outcome.error_code,
            error_info=outcome.error_info,
            rule_id=decision.rule_id,
            policy_revision=decision.policy_revision,
            decision_id=decision.decision_id,
        )
