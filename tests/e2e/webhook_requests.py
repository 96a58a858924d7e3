"""Webhook requests as Chat sends them (query string and JSON body), for the e2e tests whose
deployment accepts SDKAPPID."""

from __future__ import annotations

import json

SDKAPPID = 1400187352


def query(command: str, sdk_app_id: int = SDKAPPID, **extra: str) -> str:
    """The query string Chat sends for `command`."""
    params = {
        "SdkAppid": str(sdk_app_id),
        "CallbackCommand": command,
        "contenttype": "json",
        "ClientIP": "203.0.113.7",
        "OptPlatform": "iOS",
        **extra,
    }
    return "&".join(f"{key}={value}" for key, value in params.items())


def body(document: dict[str, object], **changes: object) -> bytes:
    """A webhook body: the document with `changes` applied, as Chat's JSON."""
    return json.dumps({**document, **changes}).encode()
