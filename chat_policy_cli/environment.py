"""Defaults the operator commands read from the deployment's CHAT_POLICY_* settings: the
SdkAppid and the callback token. (Where to dial the service is
chat_policy_shared.channel.dial_target.)"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from chat_policy_cli.arguments import sdk_app_id


class ConfigError(ValueError):
    """A setting or argument the command cannot use; the message names it."""


def default_sdk_app_id(environ: Mapping[str, str] = os.environ) -> int:
    """The first SdkAppid of CHAT_POLICY_SDKAPPIDS, else the demo id the adapter accepts then."""
    first = environ.get("CHAT_POLICY_SDKAPPIDS", "").split(",")[0].strip()
    if not first:
        from adapter.settings import DEMO_SDKAPPID

        return DEMO_SDKAPPID
    try:
        return sdk_app_id(first)
    except argparse.ArgumentTypeError as error:
        raise ConfigError(f"CHAT_POLICY_SDKAPPIDS: {error}") from None


def first_callback_token(environ: Mapping[str, str] = os.environ) -> str:
    """The first token of CHAT_POLICY_CALLBACK_TOKENS; empty when none is set."""
    tokens = [t.strip() for t in environ.get("CHAT_POLICY_CALLBACK_TOKENS", "").split(",")]
    return next((token for token in tokens if token), "")
