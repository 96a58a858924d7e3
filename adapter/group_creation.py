"""Group.CallbackBeforeCreateGroup -> CreationPolicyService.CheckGroupCreation."""

from __future__ import annotations

import logging
from dataclasses import replace

import grpc

from adapter import payload
from adapter.answers import Answer, WebhookError, grpc_failure, ok, refusal
from adapter.metrics import count_fallback
from adapter.policy_client import PolicyClient, timestamp_from_ms
from adapter.settings import AdapterSettings, OnPolicyError
from adapter.webhook import Webhook
from chatpolicy.v1 import creation_policy_service_pb2 as pb

COMMAND = "Group.CallbackBeforeCreateGroup"
log = logging.getLogger(__name__)


class GroupCreationFamily:
    """Asks the policy whether a group may be created and answers Chat with its decision.

    When the policy service cannot answer, CHAT_POLICY_ON_POLICY_ERROR decides: allow (the
    default, and what Chat itself does when this webhook times out) or deny with the
    configured refusal code.
    """

    def __init__(self, client: PolicyClient, settings: AdapterSettings) -> None:
        self._client = client
        self._settings = settings

    async def handle(self, webhook: Webhook) -> Answer:
        """Answer one creation request: allowed, refused, or the configured fail-open/closed."""
        request = check_request(webhook)
        try:
            response = await self._client.check_group_creation(request, webhook.request_id, COMMAND)
        except grpc.RpcError as error:
            return self._undecided(webhook, grpc_failure(error))
        decided = decision_fields(response)
        if response.decision == pb.DECISION_DENY:
            decided["reason"] = response.reason
            return refusal(response.error_code, response.error_info, decided)
        return ok("allowed", decided)

    def _undecided(self, webhook: Webhook, cause: WebhookError) -> Answer:
        settings = self._settings
        if settings.on_policy_error is OnPolicyError.DENY:
            count_fallback("fail-closed", cause)
            log.warning(
                "fail-closed: refusing group creation because %s",
                cause,
            )
            answer = refusal(settings.deny_error_code, settings.deny_error_info)
            return replace(answer, outcome="fail-closed")
        count_fallback("fail-open", cause)
        log.warning(
            "fail-open: allowing group creation because %s",
            cause,
        )
        return ok("fail-open")


def decision_fields(response: pb.CheckGroupCreationResponse) -> dict[str, object]:
    """The decision on the webhook's log line, named as on the service's line for the call:
    the rule, the decision's ID and the policy revision, and the shadow and erring rules when
    there are any. All come from the policy (never from the webhook's query string)."""
    fields: dict[str, object] = {
        "rule": response.rule_id,
        "decision_id": response.decision_id,
        "revision": response.policy_revision,
    }
    if response.shadow_rule_ids:
        fields["shadow_rules"] = list(response.shadow_rule_ids)
    if response.error_rule_ids:
        fields["error_rules"] = list(response.error_rule_ids)
    return fields


def check_request(webhook: Webhook) -> pb.CheckGroupCreationRequest:
    """The CheckGroupCreation request for a before-create webhook."""
    body = webhook.body
    request = pb.CheckGroupCreationRequest(
        sdk_app_id=webhook.sdk_app_id,
        operator_account=payload.text(body, "Operator_Account"),
        owner_account=payload.text(body, "Owner_Account"),
        group_type=payload.text(body, "Type"),
        name=payload.text(body, "Name"),
        member_accounts=payload.member_accounts(body),
        client_ip=webhook.client_ip,
        opt_platform=webhook.opt_platform,
    )
    create_group_num = payload.integer(body, "CreateGroupNum")
    if create_group_num is not None:
        request.create_group_num = create_group_num
    event_time_ms = payload.event_time_ms(body)
    if event_time_ms is not None:
        request.event_time.CopyFrom(timestamp_from_ms(event_time_ms))
    return request
