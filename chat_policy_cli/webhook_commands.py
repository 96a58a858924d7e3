"""`chat-policy sign` and `chat-policy simulate`: Chat's side of a webhook, for operators.

`sign TOKEN [--time UNIX_SECONDS]` prints the Sign Chat sends with a callback token:
hex SHA-256 of token + RequestTime (adapter/signature.py).

`simulate COMMAND --url URL ...` sends a deployment the webhook Chat would send: a POST with
SdkAppid, CallbackCommand, contenttype=json, ClientIP, OptPlatform and, with a token, Sign and
RequestTime, and a body like Chat's documented sample (chat_policy_cli/webhook_samples.py);
then prints the HTTP status, the X-Request-ID and the answer, and judges it by what the adapter
says it did (adapter/answer_headers.py): an ErrorCode 0 the adapter gave without a decision
(fail-open) or for an event it only spooled is a failure, and so is a token sent to an adapter
that checks no signatures. Only the standard library speaks HTTP here; HTTPS is checked
against the system's CAs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapter.answer_headers import OUTCOME_HEADER, SIGNATURE_HEADER, SIGNATURE_UNCHECKED
from adapter.signature import compute_sign
from chat_policy_cli.arguments import HelpFormatter, add_json_option, sdk_app_id, seconds
from chat_policy_cli.environment import ConfigError, default_sdk_app_id, first_callback_token
from chat_policy_cli.output import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, fail, print_json
from chat_policy_cli.webhook_samples import (
    SHORT_NAMES,
    is_handled,
    new_group_id,
    resolve_command,
    sample_body,
)

if TYPE_CHECKING:
    from email.message import Message

EXIT_REFUSED = 3
DEFAULT_HTTP_TIMEOUT_S = 5.0
USER_AGENT = "chat-policy-simulate"

SIGN_EXIT_STATUSES = """\
exit status:
  0  printed
  2  bad arguments (an empty token, a --time that is not Unix seconds)"""

SIMULATE_EXIT_STATUSES = f"""\
commands (short or full name, any case):
  {", ".join(SHORT_NAMES)}
  are sent with a body like Chat's sample; any other name (say
  Group.CallbackAfterSendMsg) is sent with a minimal body, and the adapter acknowledges it
  with ErrorCode 0 without acting on it.

exit status:
  0  HTTP 200 with ErrorCode 0: Chat would see success, and the adapter acted on the webhook
  1  any other HTTP status (401 for a wrong token, 403 for an SdkAppid not accepted, ...), an
     answer that is not Chat's JSON, or no answer at all (connection refused, name not
     resolved, TLS certificate not trusted, nothing within --timeout); or an answer the
     adapter gave without the policy service (its {OUTCOME_HEADER} says fail-open or
     fail-closed: CHAT_POLICY_ON_POLICY_ERROR decided; or spooled: the event waits in its
     spool); or a --token sent to an adapter whose {SIGNATURE_HEADER} says unchecked
     (CHAT_POLICY_CALLBACK_TOKENS unset there: no token is tested). An answer without these
     headers (an older adapter, a proxy's own answer) is judged by its status and ErrorCode
  2  bad arguments or configuration (an unreadable --body, a --set on a body that is not a
     JSON object, a URL that is not http:// or https://)
  {EXIT_REFUSED}  HTTP 200 with another ErrorCode: Chat would see a refusal (a group creation
     refused by the policy)"""


def add_sign_arguments(sign: argparse.ArgumentParser) -> None:
    """The arguments of `chat-policy sign`."""
    sign.description = (
        "Print the Sign Chat sends with a callback token: lowercase hex SHA-256"
        " of the token followed by RequestTime (Unix seconds). With --json, also RequestTime"
        " and the query string fragment `&Sign=...&RequestTime=...`."
    )
    sign.epilog = SIGN_EXIT_STATUSES
    sign.formatter_class = HelpFormatter
    sign.add_argument("token", metavar="TOKEN", help="the callback token; `-` reads it from stdin")
    sign.add_argument(
        "--time",
        type=unix_seconds,
        metavar="UNIX_SECONDS",
        help="RequestTime (default: now)",
    )
    add_json_option(sign)
    sign.set_defaults(prog=sign.prog)


def add_simulate_arguments(simulate: argparse.ArgumentParser) -> None:
    """The arguments of `chat-policy simulate`."""
    simulate.description = (
        "Send the adapter at URL the webhook Chat would send for COMMAND: a POST"
        " with the query parameters SdkAppid, CallbackCommand, contenttype=json, ClientIP,"
        " OptPlatform and, with a token, Sign and RequestTime (now); the body is like Chat's"
        " documented sample, with EventTime now and, for the group-state webhooks, a new"
        " GroupId (@TGS#SIM...). Prints what was sent, the HTTP status, the X-Request-ID and"
        " the answer."
    )
    simulate.epilog = SIMULATE_EXIT_STATUSES
    simulate.formatter_class = HelpFormatter
    simulate.add_argument("command", metavar="COMMAND", help="the CallbackCommand, see below")
    simulate.add_argument(
        "--url",
        required=True,
        metavar="URL",
        help="the callback URL, as in Chat's console (http:// or https://)",
    )
    simulate.add_argument(
        "--app",
        type=sdk_app_id,
        metavar="ID",
        help="SdkAppid (default: the first of $CHAT_POLICY_SDKAPPIDS, else the demo id)",
    )
    simulate.add_argument(
        "--token",
        metavar="TOKEN",
        help="sign with this callback token (default: the first of"
        " $CHAT_POLICY_CALLBACK_TOKENS; '' or none set: unsigned)",
    )
    simulate.add_argument(
        "--client-ip",
        default="127.0.0.1",
        metavar="IP",
        help="ClientIP (default 127.0.0.1; '' leaves it out)",
    )
    simulate.add_argument(
        "--platform",
        default="iOS",
        metavar="P",
        help="OptPlatform (default iOS; '' leaves it out)",
    )
    simulate.add_argument(
        "--set",
        dest="fields",
        action="append",
        default=[],
        type=body_field,
        metavar="KEY=VALUE",
        help="set a top-level body field; VALUE is JSON if it parses (3, null, [..],"
        ' "\\"quoted\\""), else a string; repeatable',
    )
    simulate.add_argument(
        "--body",
        metavar="FILE",
        help="send this file's bytes as the body instead (`-`: stdin); with --set it must be"
        " a JSON object",
    )
    simulate.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_HTTP_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on an answer after this long (default {DEFAULT_HTTP_TIMEOUT_S:g})",
    )
    add_json_option(simulate)
    simulate.set_defaults(prog=simulate.prog)


# --- sign --------------------------------------------------------------------------------


def unix_seconds(raw: str) -> str:
    """A RequestTime argument: Unix seconds, as the adapter accepts them (at most 12 digits)."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise argparse.ArgumentTypeError(f"must be Unix seconds, got {raw!r}")
    return raw


def signature(token: str, request_time: str) -> dict[str, str]:
    """Sign, RequestTime and the query string fragment Chat appends with them."""
    sign = compute_sign(token, request_time)
    return {
        "Sign": sign,
        "RequestTime": request_time,
        "query": f"&Sign={sign}&RequestTime={request_time}",
    }


def run_sign(args: argparse.Namespace) -> int:
    """Print the Sign (or, with --json, Sign, RequestTime and the query fragment)."""
    token = sys.stdin.readline().rstrip("\r\n") if args.token == "-" else args.token
    if not token:
        return fail(args, "TOKEN must not be empty", EXIT_CONFIG)
    signed = signature(token, args.time or str(int(time.time())))
    if args.json:
        print_json(signed)
    else:
        print(signed["Sign"])
    return EXIT_OK


# --- simulate: the request -----------------------------------------------------------------


def body_field(raw: str) -> tuple[str, object]:
    """KEY=VALUE of --set: VALUE as JSON when it parses as JSON, else as a string."""
    key, equals, value = raw.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {raw!r}")
    return key, parse_value(value)


def parse_value(value: str) -> object:
    """JSON if it parses (NaN and Infinity, which are no JSON, do not), else the string."""

    def no_constants(name: str) -> object:
        raise ValueError(name)

    try:
        parsed: object = json.loads(value, parse_constant=no_constants)
    except ValueError:
        return value
    return parsed


def request_body(
    command: str,
    fields: Sequence[tuple[str, object]],
    body_file: str | None,
    now_ms: int,
) -> bytes:
    """The body to send: the sample (or --body's bytes), with the --set fields applied."""
    if body_file is None:
        document: object = sample_body(command, now_ms, new_group_id())
    else:
        raw = _read_body(body_file)
        if not fields:
            return raw
        try:
            document = json.loads(raw.decode("utf-8"))
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ConfigError(f"--body {body_file}: --set needs a JSON object body")
    assert isinstance(document, dict)
    for key, value in fields:
        document[key] = value
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _read_body(body_file: str) -> bytes:
    if body_file == "-":
        return sys.stdin.buffer.read()
    try:
        with open(body_file, "rb") as file:
            return file.read()
    except OSError as error:
        raise ConfigError(f"--body {body_file}: {error.strerror}") from None


def webhook_query(
    *,
    app: int,
    command: str,
    client_ip: str,
    platform: str,
    token: str,
    now_s: int,
) -> str:
    """Chat's query string, in Chat's order; Sign and RequestTime only with a token."""
    params = [("SdkAppid", str(app)), ("CallbackCommand", command), ("contenttype", "json")]
    if client_ip:
        params.append(("ClientIP", client_ip))
    if platform:
        params.append(("OptPlatform", platform))
    if token:
        request_time = str(now_s)
        params += [("Sign", compute_sign(token, request_time)), ("RequestTime", request_time)]
    return urllib.parse.urlencode(params)


def webhook_url(url: str, query: str) -> str:
    """URL with Chat's query string added; ConfigError unless it is an http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url must be an http:// or https:// URL, got {url!r}")
    joined = f"{parts.query}&{query}" if parts.query else query
    return urllib.parse.urlunsplit(parts._replace(query=joined, fragment=""))


def without_query(url: str) -> str:
    """The URL as messages name it: no query string (no Sign)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


# --- simulate: sending -----------------------------------------------------------------------


# What an X-Chat-Policy-Outcome that is no decision means, for the verdict.
_UNDECIDED = {
    "fail-open": "failed: the policy service could not decide; the adapter allowed it by"
    " CHAT_POLICY_ON_POLICY_ERROR=allow (fail-open)",
    "fail-closed": "failed: the policy service could not decide; the adapter refused it by"
    " CHAT_POLICY_ON_POLICY_ERROR=deny (fail-closed)",
    "spooled": "failed: the adapter spooled the event: the policy service is away (the"
    " adapter replays it when the service is back)",
}
_UNCHECKED = (
    "failed: the adapter does not check signatures (CHAT_POLICY_CALLBACK_TOKENS is unset"
    " there), so the token was not tested"
)


@dataclass(frozen=True)
class Reply:
    """What the deployment answered; outcome and signature are the adapter's
    X-Chat-Policy-Outcome and X-Chat-Policy-Signature ("" when it sent none)."""

    http_status: int
    reason: str
    request_id: str
    body: bytes
    location: str = ""
    outcome: str = ""
    signature: str = ""

    def answer(self) -> dict[str, object] | None:
        """The body as a JSON object; None when it is not one."""
        try:
            document = json.loads(self.body.decode("utf-8"))
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def verdict(self, signed: bool) -> tuple[str, int, list[str]]:
        """(ok, failed or refused; the exit status; lines saying what Chat would see and, for
        a failure, why). `signed`: the webhook carried a Sign."""
        answer = self.answer()
        code = answer.get("ErrorCode") if answer is not None else None
        unchecked = [_UNCHECKED] if signed and self.signature == SIGNATURE_UNCHECKED else []
        if self.http_status != 200:
            moved = f" to {self.location}" if self.location else ""
            named = f" ({self.outcome})" if self.outcome else ""
            return "failed", EXIT_FAILED, [f"failed: HTTP {self.http_status}{moved}{named}"]
        if type(code) is not int:
            return "failed", EXIT_FAILED, ["failed: HTTP 200, but not Chat's JSON answer"]
        if self.outcome in _UNDECIDED:
            return "failed", EXIT_FAILED, [_UNDECIDED[self.outcome], *unchecked]
        if unchecked:
            return "failed", EXIT_FAILED, unchecked
        if code == 0:
            said = [self.outcome] if self.outcome else []
            said += [f"signature {self.signature}"] if self.signature else []
            done = f" ({'; '.join(said)})" if said else ""
            return "ok", EXIT_OK, [f"ok: ErrorCode 0{done}"]
        info = answer.get("ErrorInfo") if answer is not None else ""
        return "refused", EXIT_REFUSED, [f"refused: ErrorCode {code}, ErrorInfo {info!r}"]


class Unreachable(Exception):
    """No HTTP answer; the message says why."""


def post(url: str, body: bytes, timeout_s: float) -> Reply:
    """POST body to url (urllib, system CAs for HTTPS); Unreachable when nothing answers.

    A redirect is not followed: Chat posts to the URL it is given, so it is an answer to show.
    """
    import http.client
    import urllib.error
    import urllib.request  # here, not at the top: it costs `chat-policy --help` 50 ms

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    opener = urllib.request.build_opener(NoRedirects())
    shown = without_query(url)
    try:
        try:
            with opener.open(request, timeout=timeout_s) as response:
                return _reply(response.status, response.reason, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return _reply(error.code, str(error.reason), error.headers, error.read())
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError):
            raise Unreachable(f"no answer from {shown} within {timeout_s:g}s") from None
        raise Unreachable(f"cannot reach {shown}: {_describe(reason)}") from None


def _reply(status: int, reason: str, headers: Message, body: bytes) -> Reply:
    return Reply(
        status,
        reason,
        headers.get("X-Request-ID", ""),
        body,
        headers.get("Location", ""),
        headers.get(OUTCOME_HEADER, ""),
        headers.get(SIGNATURE_HEADER, ""),
    )


def _describe(reason: object) -> str:
    """An OSError's own words (`Connection refused`), else its text."""
    import ssl

    if isinstance(reason, OSError) and reason.strerror and not isinstance(reason, ssl.SSLError):
        return reason.strerror
    return str(reason) or type(reason).__name__


# --- simulate: running -----------------------------------------------------------------------


def run_simulate(args: argparse.Namespace) -> int:
    """Send the webhook; print what was sent and the answer; exit 0, 3, 1 or 2 (see --help)."""
    command = resolve_command(args.command)
    now = time.time()
    try:
        app = args.app if args.app is not None else default_sdk_app_id()
        token = args.token if args.token is not None else first_callback_token()
        body = request_body(command, args.fields, args.body, int(now * 1000))
        query = webhook_query(
            app=app,
            command=command,
            client_ip=args.client_ip,
            platform=args.platform,
            token=token,
            now_s=int(now),
        )
        url = webhook_url(args.url, query)
    except ConfigError as error:
        return fail(args, str(error), EXIT_CONFIG)
    if not is_handled(command):
        print(
            f"{args.prog}: note: the adapter does not act on {command!r}; it is sent with a"
            " minimal body and should be acknowledged with ErrorCode 0",
            file=sys.stderr,
        )
    sent = {"method": "POST", "url": url, "command": command, "body": _shown(body)}
    try:
        reply = post(url, body, args.timeout)
    except Unreachable as error:
        if args.json:
            print_json(
                {"request": sent, "response": None, "outcome": "failed", "error": str(error)}
            )
        return fail(args, str(error))
    outcome, status, verdict = reply.verdict(signed=bool(token))
    if args.json:
        response = {
            "http_status": reply.http_status,
            "request_id": reply.request_id,
            "outcome": reply.outcome or None,
            "signature": reply.signature or None,
            "answer": _shown(reply.body),
        }
        print_json({"request": sent, "response": response, "outcome": outcome, "verdict": verdict})
    else:
        print("\n".join(exchange_lines(url, body, reply, verdict)))
    return status


def exchange_lines(url: str, body: bytes, reply: Reply, verdict: Sequence[str]) -> list[str]:
    """What was sent (`> `), what came back (`< `), and what Chat would make of it."""
    request_id = f", X-Request-ID {reply.request_id}" if reply.request_id else ""
    return [
        f"> POST {url}",
        *_quoted(">", body),
        f"< HTTP {reply.http_status} {reply.reason}".rstrip() + request_id,
        *_quoted("<", reply.body),
        *verdict,
    ]


def _quoted(mark: str, raw: bytes) -> list[str]:
    """Each line of a body behind `> ` or `< `."""
    return [f"{mark} {line}" for line in raw.decode("utf-8", errors="replace").splitlines()]


def _shown(raw: bytes) -> object:
    """A body for --json: its JSON when it is JSON, else its text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        document: object = json.loads(text)
    except ValueError:
        return text
    return document
