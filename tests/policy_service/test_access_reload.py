"""The access file's watcher: reloads on a change and on request (SIGHUP), telling its hook;
and the caller a servicer sees while it serves a call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc

from policy_service.access.access_file import load_access, token_digest_line
from policy_service.access.access_reload import AccessFileWatcher, AccessHolder
from policy_service.access.caller import current_caller
from policy_service.api.caller_check import CallerCheck
from policy_service.api.rpc_interceptor import InterceptedServer, RpcInterceptor

ACCESS = f"""\
[callers.adapter]
relays_chat = true
tokens = ["{token_digest_line("t0ken")}"]
allow = ["group-state.read"]
"""


async def until(condition: Callable[[], bool]) -> None:
    """Wait on the loop until `condition()` is true (failing after 5 s)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


def test_the_hook_hears_of_each_reload_and_why(tmp_path: Path) -> None:
    """A change is reloaded ("file changed", the new revision); a broken file is refused
    (the error, the old rules kept); a request reloads at once ("SIGHUP")."""
    path = tmp_path / "access.toml"
    path.write_text(ACCESS)
    holder = AccessHolder(path, load_access(path))
    first = holder.rules.revision
    heard: list[tuple[str, bool, str]] = []

    async def hook(reason: str, loaded: bool, detail: str) -> None:
        heard.append((reason, loaded, detail))

    async def scenario() -> None:
        watcher = AccessFileWatcher(holder, 0.02, on_reload=hook)
        watcher.start()
        try:
            path.write_text(ACCESS + "# edited\n")
            await until(lambda: len(heard) == 1)
            path.write_text(ACCESS + "[callers.x]\n")
            await until(lambda: len(heard) == 2)
            watcher.request_reload()
            await until(lambda: len(heard) == 3)
        finally:
            await watcher.stop()

    asyncio.run(scenario())
    assert heard[0][:2] == ("file changed", True) and heard[0][2] != first
    assert heard[1][:2] == ("file changed", False)
    assert "access.toml:5: caller 'x': cannot be recognised" in heard[1][2]
    assert heard[2][:2] == ("SIGHUP", False)
    assert heard[0][2] == f"revision {holder.rules.revision}"
    assert "cannot be recognised" in holder.last_reload_error
    path.write_text(ACCESS)
    assert holder.reload()[0] and holder.last_reload_error == ""


def test_the_servicer_serves_as_the_caller(tmp_path: Path) -> None:
    """Inside a handler current_caller() is the caller the token named."""
    path = tmp_path / "access.toml"
    path.write_text(ACCESS)
    holder = AccessHolder(path, load_access(path))

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        caller = current_caller()
        return f"{caller.name} {caller.relays_chat}".encode()

    async def scenario() -> bytes:
        server = InterceptedServer(RpcInterceptor(None, CallerCheck(holder, False)))
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "chatpolicy.v1.GroupStateService",
                    {"GetGroupState": grpc.unary_unary_rpc_method_handler(who)},
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/chatpolicy.v1.GroupStateService/GetGroupState")
                answer: bytes = await call(
                    b"", metadata=(("authorization", "Bearer t0ken"),), timeout=5
                )
                return answer
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) == b"adapter True"
