"""CreationPolicyService: translates protobuf to policy decisions and decision records."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import grpc

from chat_policy_shared.logs import describe_call
from chatpolicy.v1 import creation_policy_service_pb2, creation_policy_service_pb2_grpc
from policy_service.access.caller import current_caller
from policy_service.api.metrics import count_decision
from policy_service.api.page_tokens import (
    decode_decisions_token,
    encode_decisions_token,
    page_size_from_request,
)
from policy_service.api.status import maps_errors
from policy_service.api.timestamps import milliseconds, timestamp
from policy_service.clock import now_ms
from policy_service.engine.decision_log import (
    DecisionCursor,
    DecisionLog,
    DecisionQuery,
    DecisionRecord,
)
from policy_service.engine.decision_recorder import DecisionRecorder
from policy_service.engine.policy import CreationRequest, Effect, RuleEvaluation, RuleResult
from policy_service.engine.policy_reload import PolicyHolder
from policy_service.engine.rate_limit import RateCounter
from policy_service.engine.rule_counts import RuleCounts
from policy_service.errors import InvalidArgument

if TYPE_CHECKING:
    from policy_service.api.rpc_spans import OperationSpans

pb = creation_policy_service_pb2
log = logging.getLogger(__name__)

_DECISIONS = {Effect.ALLOW: pb.DECISION_ALLOW, Effect.DENY: pb.DECISION_DENY}
_EFFECTS = {pb.DECISION_ALLOW: Effect.ALLOW.value, pb.DECISION_DENY: Effect.DENY.value}
_RESULTS = {
    RuleResult.NOT_APPLICABLE: pb.RULE_RESULT_NOT_APPLICABLE,
    RuleResult.PASSED: pb.RULE_RESULT_PASSED,
    RuleResult.DECIDED: pb.RULE_RESULT_DECIDED,
    RuleResult.SHADOW: pb.RULE_RESULT_SHADOW,
    RuleResult.ERROR: pb.RULE_RESULT_ERROR,
}


class CreationPolicyServicer(creation_policy_service_pb2_grpc.CreationPolicyServiceServicer):
    """Answers group-creation checks from the running policy and lists recorded decisions;
    with `spans` (tracing on), each decision is a span."""

    def __init__(
        self,
        policy: PolicyHolder,
        counter: RateCounter,
        decisions: DecisionLog,
        recorder: DecisionRecorder,
        spans: OperationSpans | None = None,
    ) -> None:
        self._spans = spans
        self._policy = policy
        self._counter = counter
        self._decisions = decisions
        self._recorder = recorder
        self._counts = RuleCounts()

    @maps_errors
    async def CheckGroupCreation(
        self, request: pb.CheckGroupCreationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckGroupCreationResponse:
        """Decide one group creation; describe it on the RPC's log line and, unless it is a
        dry run, count it and queue its record (with its caller)."""
        started = time.perf_counter_ns()
        creation = creation_request(request)
        creation.validate()
        decided_at = now_ms()
        dry_run = request.dry_run
        deciding = self._policy.policy.decide(
            creation,
            counter=self._counter,
            now_ms=decided_at,
            explain=request.explain,
            dry_run=dry_run,
        )
        if self._spans is None:
            decision = await deciding
        else:
            decision = await self._spans.decision(deciding, dry_run)
        latency_us = (time.perf_counter_ns() - started) // 1000
        outcome = decision.outcome
        describe_call(
            f"decided {outcome.effect.value} by rule {decision.rule_id}",
            decision_id=decision.decision_id,
            revision=decision.policy_revision,
            rule=decision.rule_id,
            effect=outcome.effect.value,
            error_code=outcome.error_code,
            shadow_rules=[hit.rule_id for hit in decision.shadow_hits],
            error_rules=[error.rule_id for error in decision.errors],
            latency_us=latency_us,
            reason=decision.reason,
            dry_run=dry_run,
        )
        for error in decision.errors:
            log.warning(
                "rule %s skipped: %s",
                error.rule_id,
                error.reason,
                extra={"decision_id": decision.decision_id, "rule": error.rule_id},
            )
        if not dry_run:
            self._counts.add(decision)
            count_decision(decision)
            self._recorder.record(creation, decision, decided_at, latency_us, current_caller().name)
        return pb.CheckGroupCreationResponse(
            decision=_DECISIONS[outcome.effect],
            error_code=outcome.error_code,
            error_info=outcome.error_info,
            rule_id=decision.rule_id,
            policy_revision=decision.policy_revision,
            decision_id=decision.decision_id,
            reason=decision.reason,
            shadow_rule_ids=[e.rule_id for e in decision.shadow_hits],
            error_rule_ids=[e.rule_id for e in decision.errors],
            evaluations=[_evaluation_pb(e) for e in decision.evaluations],
            dry_run=dry_run,
        )

    @maps_errors
    async def GetPolicy(
        self, request: pb.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPolicyResponse:
        """Describe the running policy and the latest reload."""
        holder = self._policy
        policy, status = holder.policy, holder.status
        response = pb.GetPolicyResponse(
            policy_revision=policy.revision,
            source=holder.source,
            loaded_at=timestamp(holder.loaded_at_ms),
            rule_ids=[rule.id for rule in policy.rules],
            last_reload_error=status.error,
            rule_stats=[
                pb.RuleStats(
                    rule_id=rule_id,
                    decided=count.decided,
                    shadow_hits=count.shadow_hits,
                    errors=count.errors,
                )
                for rule_id, count in sorted(self._counts.of(policy.revision).items())
            ],
        )
        if status.attempted_at_ms is not None:
            response.last_reload_at.CopyFrom(timestamp(status.attempted_at_ms))
        return response

    @maps_errors
    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDecisionsResponse:
        """One page of recorded decisions, newest first."""
        if request.decision not in (pb.DECISION_UNSPECIFIED, *_EFFECTS):
            raise InvalidArgument("decision", f"unknown value {request.decision}")
        query = DecisionQuery(
            sdk_app_id=request.sdk_app_id,
            operator_account=request.operator_account,
            effect=_EFFECTS.get(request.decision, ""),
            rule_id=request.rule_id,
            decision_id=request.decision_id,
            decided_at_least_ms=(
                milliseconds("decided_at_or_after", request.decided_at_or_after)
                if request.HasField("decided_at_or_after")
                else None
            ),
            decided_at_most_ms=(
                milliseconds("decided_at_or_before", request.decided_at_or_before)
                if request.HasField("decided_at_or_before")
                else None
            ),
            caller=request.caller,
        )
        size = page_size_from_request(request.page_size)
        after = decode_decisions_token(request.page_token, query)
        records = await self._decisions.list_decisions(query, size + 1, after)
        page = records[:size]
        next_token = ""
        if len(records) > size:
            last = page[-1]
            next_token = encode_decisions_token(
                query, DecisionCursor(last.decided_at_ms, last.decision_id)
            )
        return pb.ListDecisionsResponse(
            decisions=[_record_pb(r) for r in page], next_page_token=next_token
        )


def creation_request(request: pb.CheckGroupCreationRequest) -> CreationRequest:
    """The domain request of a CheckGroupCreationRequest."""
    return CreationRequest(
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
            milliseconds("event_time", request.event_time)
            if request.HasField("event_time")
            else None
        ),
        client_ip=request.client_ip,
        opt_platform=request.opt_platform,
    )


def _record_pb(record: DecisionRecord) -> pb.DecisionRecord:
    fields = json.loads(record.request_json)
    request = pb.CheckGroupCreationRequest(
        sdk_app_id=fields["sdk_app_id"],
        operator_account=fields["operator_account"],
        owner_account=fields["owner_account"],
        group_type=fields["group_type"],
        name=fields["name"],
        member_accounts=fields["member_accounts"],
        client_ip=fields["client_ip"],
        opt_platform=fields["opt_platform"],
    )
    if fields["create_group_num"] is not None:
        request.create_group_num = fields["create_group_num"]
    if fields["event_time_ms"] is not None:
        request.event_time.CopyFrom(timestamp(fields["event_time_ms"]))
    return pb.DecisionRecord(
        decision_id=record.decision_id,
        decided_at=timestamp(record.decided_at_ms),
        request=request,
        decision=_DECISIONS[Effect(record.effect)],
        error_code=record.error_code,
        error_info=record.error_info,
        rule_id=record.rule_id,
        reason=record.reason,
        policy_revision=record.policy_revision,
        shadow_rule_ids=record.shadow_rule_ids,
        latency_us=record.latency_us,
        caller=record.caller,
    )


def _evaluation_pb(evaluation: RuleEvaluation) -> pb.RuleEvaluation:
    return pb.RuleEvaluation(
        rule_id=evaluation.rule_id,
        kind=evaluation.kind,
        result=_RESULTS[evaluation.result],
        effect=_DECISIONS[evaluation.effect],
        reason=evaluation.reason,
    )
