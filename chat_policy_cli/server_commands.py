"""`chat-policy service`, `adapter` and `run`: the servers. They take no arguments (the
CHAT_POLICY_* environment configures them), log JSON lines to stdout, and each imports its
deployable only when it starts."""

from __future__ import annotations

import argparse

from chat_policy_shared import logs


def run_service(args: argparse.Namespace) -> int:
    """Run the gRPC policy service until it is stopped; its exit status."""
    logs.configure()
    from policy_service.server import main

    return main()


def run_adapter(args: argparse.Namespace) -> int:
    """Run the webhook adapter under gunicorn until it is stopped; its exit status."""
    logs.configure()
    from adapter.gunicorn_app import main

    return main()


def run_both(args: argparse.Namespace) -> int:
    """Run the service and the adapter as supervised children (chat_policy_cli.supervisor)."""
    logs.configure()
    from chat_policy_cli import supervisor

    return supervisor.run_both()
