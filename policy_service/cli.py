"""The `chat-policy` command: `service`, `adapter` or `run` (both, supervised)."""

from __future__ import annotations

import argparse
import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it; the exit status is the command's."""
    parser = argparse.ArgumentParser(
        prog="chat-policy",
        description="Policy backend for Tencent Cloud Chat group webhooks."
        " Configured by CHAT_POLICY_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("service", help="run the gRPC policy service")
    commands.add_parser("adapter", help="run the webhook adapter (gunicorn)")
    commands.add_parser("run", help="run both, supervised; Ctrl-C stops both")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    if args.command == "service":
        from policy_service.server import main as service_main

        return service_main()
    if args.command == "adapter":
        from adapter.gunicorn_app import main as adapter_main

        return adapter_main()
    from policy_service.supervisor import run_both

    return run_both()


if __name__ == "__main__":
    sys.exit(main())
