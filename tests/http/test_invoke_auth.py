"""The Invoke API's authentication: once an app has access keys, every request is SigV4-signed
by one of them (checked as AWS checks it, with AWS's 403s), and the key is granted the function,
qualifier and invocation type; the probes and the OpenAPI document stay open, /metrics does not.
Requests come from boto3's own lambda client and signer, or raw when boto3 cannot send them."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import botocore.auth
import botocore.config
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from streamfn import App, ConfigError, Context
from streamfn.access_keys import AccessKey
from streamfn.config import FunctionUrl
from streamfn.connectors.http.sigv4 import SigV4Verifier
from streamfn.errors import InvalidSignature

from .support import (
    ACCOUNT,
    ARN,
    DEADLINE,
    SESSION,
    RawResponse,
    Served,
    invoke,
    invoke_error,
    log_record,
    raw_request,
    serving,
)

ADMIN = AccessKey("AKIDADMIN", "admin-secret-0123456789")
ORDERS = AccessKey("AKIDORDERS", "orders-secret-0123456789", functions=["orders"])
LIVE_EVENTS = AccessKey(
    "AKIDLIVE",
    "live-secret-0123456789",
    functions=["report:live"],
    invocation_types=["Event"],
)
INVOKE = "/2015-03-31/functions/{}/invocations"


def make_app(calls: list[str]) -> App:
    app = App("auth", access_keys=[ADMIN, ORDERS, LIVE_EVENTS])

    @app.function()
    async def orders(event: Any, context: Context) -> dict[str, str]:
        calls.append("orders")
        return {"function": "orders"}

    @app.function()
    async def report(event: Any, context: Context) -> str:
        calls.append("report")
        return context.function_version

    app.publish_version("report")
    app.alias("report", "live", version="1")

    @app.function(url=FunctionUrl(auth_type="AWS_IAM"))
    async def private(event: dict[str, Any], context: Context) -> Any:
        calls.append("private")
        return {"key": event["requestContext"]["authorizer"]["iam"]["accessKey"]}

    @app.function(url=FunctionUrl())
    async def public(event: dict[str, Any], context: Context) -> str:
        return "public"

    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Served, list[str]]]:
    calls: list[str] = []
    async with serving(make_app(calls)) as served:
        yield served, calls


@pytest.fixture
def clients(served: tuple[Served, list[str]]) -> Iterator[dict[str, Any]]:
    """boto3 lambda clients signing with each key, a wrong secret and an unknown key."""
    port = served[0].port
    made = {
        "admin": client(port, ADMIN.access_key_id, ADMIN.secret_access_key),
        "orders": client(port, ORDERS.access_key_id, ORDERS.secret_access_key),
        "live": client(port, LIVE_EVENTS.access_key_id, LIVE_EVENTS.secret_access_key),
        "wrong-secret": client(port, ADMIN.access_key_id, "not-the-secret"),
        "unknown-key": client(port, "AKIDNOBODY", ADMIN.secret_access_key),
    }
    yield made
    for made_client in made.values():
        made_client.close()


def client(port: int, key_id: str, secret: str) -> Any:
    return SESSION.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(
            retries={"max_attempts": 0}, connect_timeout=DEADLINE, read_timeout=DEADLINE
        ),
    )


def signed(
    port: int,
    path: str,
    body: bytes = b"",
    key: AccessKey = ADMIN,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """The headers botocore's SigV4 signer gives a POST of ``body`` to ``path``."""
    request = AWSRequest(
        method="POST", url=f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {}
    )
    credentials = Credentials(key.access_key_id, key.secret_access_key)
    SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def error_of(response: RawResponse) -> tuple[int, str, dict[str, Any]]:
    return response.status, response.headers["x-amzn-errortype"], response.json()


async def test_an_unsigned_request_is_refused_before_anything_else(
    served: tuple[Served, list[str]],
) -> None:
    """AWS's answer to an unsigned request, whatever it asks for: nothing runs, and a caller
    without a key cannot tell a function that exists from one that does not."""
    server, calls = served
    with log_record("streamfn.http", "Invoke API request refused; answered 403") as logged:
        refused = [
            await raw_request(server.port, "POST", INVOKE.format("orders"), b"{}"),
            await raw_request(server.port, "POST", INVOKE.format("nonexistent"), b"{}"),
            await raw_request(server.port, "GET", INVOKE.format("orders")),
            await raw_request(server.port, "GET", "/no/such/route"),
            # The Invoke path is the Invoke API whatever the Host: not a public function URL.
            await raw_request(
                server.port,
                "POST",
                INVOKE.format("orders"),
                b"{}",
                host="public.lambda-url.us-east-1.localhost",
            ),
        ]
        async with asyncio.timeout(DEADLINE):
            line = await logged
    for response in refused:
        assert error_of(response) == (
            403,
            "MissingAuthenticationTokenException",
            {"Type": "User", "message": "Missing Authentication Token"},
        )
    assert line.__dict__["errorType"] == "MissingAuthenticationTokenException"
    assert calls == []


async def test_boto3_signing_with_a_granted_key_invokes_every_way(
    served: tuple[Served, list[str]], clients: dict[str, Any]
) -> None:
    admin = clients["admin"]
    response, payload = await invoke(admin, FunctionName="orders", Payload=b"{}")
    assert (response["StatusCode"], payload) == (200, {"function": "orders"})
    qualified, version = await invoke(admin, FunctionName="report:live")
    assert (qualified["StatusCode"], version) == (200, "1")
    event, _ = await invoke(admin, FunctionName="orders", InvocationType="Event")
    dry, _ = await invoke(admin, FunctionName="orders", InvocationType="DryRun")
    assert (event["StatusCode"], dry["StatusCode"]) == (202, 204)


@pytest.mark.parametrize(
    ("who", "code", "message"),
    [
        (
            "wrong-secret",
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        ),
        (
            "unknown-key",
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
    ],
)
async def test_a_bad_secret_or_an_unknown_key_is_403_with_aws_error_type(
    served: tuple[Served, list[str]], clients: dict[str, Any], who: str, code: str, message: str
) -> None:
    error = await invoke_error(clients[who], FunctionName="orders", Payload=b"{}")
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == code
    assert error["Error"]["Message"].startswith(message)
    assert served[1] == []


@pytest.mark.parametrize(("minutes", "words"), [(-6, "Signature expired"), (6, "not yet current")])
async def test_a_signature_dated_over_five_minutes_away_is_invalid(
    served: tuple[Served, list[str]],
    clients: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    minutes: int,
    words: str,
) -> None:
    then = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: then)
    error = await invoke_error(clients["admin"], FunctionName="orders", Payload=b"{}")
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert words in error["Error"]["Message"]


async def test_a_key_granted_one_function_is_denied_the_others(
    served: tuple[Served, list[str]], clients: dict[str, Any]
) -> None:
    orders = clients["orders"]
    allowed, _ = await invoke(orders, FunctionName="orders", Payload=b"{}")
    denied = await invoke_error(orders, FunctionName="report", Payload=b"{}")
    assert allowed["StatusCode"] == 200
    assert denied["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert denied["Error"] == {
        "Code": "AccessDeniedException",
        "Message": f"User: arn:aws:iam::{ACCOUNT}:user/AKIDORDERS is not authorized to perform: "
        f"lambda:InvokeFunction on resource: {ARN}:report because no identity-based policy "
        "allows the lambda:InvokeFunction action",
    }
    # Whether a function it is not granted exists is none of its business either.
    missing = await invoke_error(orders, FunctionName="nonexistent")
    assert missing["Error"]["Code"] == "AccessDeniedException"
    found = await invoke_error(clients["admin"], FunctionName="nonexistent")
    assert found["Error"]["Code"] == "ResourceNotFoundException"
    assert served[1] == ["orders"]


async def test_grants_narrow_qualifiers_and_invocation_types(
    served: tuple[Served, list[str]], clients: dict[str, Any]
) -> None:
    live = clients["live"]
    queued, _ = await invoke(live, FunctionName="report", Qualifier="live", InvocationType="Event")
    assert queued["StatusCode"] == 202
    for refused in (
        {"FunctionName": "report", "Qualifier": "live"},  # RequestResponse
        {"FunctionName": "report", "InvocationType": "Event"},  # $LATEST
        {"FunctionName": "report:1", "InvocationType": "Event"},
    ):
        error = await invoke_error(live, **refused)
        assert error["Error"]["Code"] == "AccessDeniedException", refused


async def test_the_same_signed_request_twice_within_the_window_is_accepted_twice(
    served: tuple[Served, list[str]],
) -> None:
    """No replay cache, as on AWS: an SDK retry may resend a request exactly as signed."""
    server, calls = served
    path = INVOKE.format("orders")
    headers = signed(server.port, path, b"{}")
    first = await raw_request(server.port, "POST", path, b"{}", headers)
    second = await raw_request(server.port, "POST", path, b"{}", headers)
    assert (first.status, second.status) == (200, 200)
    assert calls == ["orders", "orders"]


async def test_the_signature_covers_the_raw_path_and_the_body(
    served: tuple[Served, list[str]],
) -> None:
    """A signature for one path is not accepted for another that normalises to it (which the
    router would read differently), nor for another body."""
    server, calls = served
    path = INVOKE.format("orders")
    dotted = "/2015-03-31/functions/report/../orders/invocations"
    headers = signed(server.port, path, b"{}")
    moved = await raw_request(server.port, "POST", dotted, b"{}", headers)
    # botocore normalises the path it signs; what is sent is what must have been signed.
    normalised = await raw_request(
        server.port, "POST", dotted, b"{}", signed(server.port, dotted, b"{}")
    )
    tampered = await raw_request(server.port, "POST", path, b'{"x": 1}', headers)
    for response in (moved, normalised, tampered):
        assert error_of(response)[:2] == (403, "InvalidSignatureException")
    # The same for a function URL: signed for /urls/private/b, sent as /urls/private/a/../b.
    url_headers = signed(server.port, "/urls/private/b")
    url = await raw_request(server.port, "POST", "/urls/private/a/../b", b"", url_headers)
    assert url.status == 403
    assert calls == []


async def test_probes_and_the_openapi_document_are_open_but_metrics_are_not(
    served: tuple[Served, list[str]],
) -> None:
    server, _ = served
    for path in ("/health", "/ready", "/openapi.json"):
        assert (await raw_request(server.port, "GET", path)).status == 200, path
    unsigned = await raw_request(server.port, "GET", "/metrics")
    assert error_of(unsigned)[:2] == (403, "MissingAuthenticationTokenException")
    request = AWSRequest(method="GET", url=f"http://127.0.0.1:{server.port}/metrics")
    credentials = Credentials(ADMIN.access_key_id, ADMIN.secret_access_key)
    SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
    metrics = await raw_request(server.port, "GET", "/metrics", b"", dict(request.headers))
    assert metrics.status == 200
    assert b"streamfn_" in metrics.body


def presigned(port: int, path: str, key: AccessKey = ADMIN, expires: int = 60) -> str:
    """The path and query of a presigned GET of ``path`` (X-Amz-Signature in the query)."""
    request = AWSRequest(method="GET", url=f"http://127.0.0.1:{port}{path}")
    credentials = Credentials(key.access_key_id, key.secret_access_key)
    SigV4QueryAuth(credentials, "lambda", "us-east-1", expires=expires).add_auth(request)
    return str(request.url).removeprefix(f"http://127.0.0.1:{port}")


async def test_a_presigned_function_url_works_until_it_expires(
    served: tuple[Served, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    fresh = await raw_request(server.port, "GET", presigned(server.port, "/urls/private/x?a=1"))
    assert fresh.status == 200, fresh.body
    assert fresh.json() == {"key": ADMIN.access_key_id}
    denied = await raw_request(
        server.port, "GET", presigned(server.port, "/urls/private", key=LIVE_EVENTS)
    )
    two_minutes_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=2)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: two_minutes_ago)
    expired = await raw_request(server.port, "GET", presigned(server.port, "/urls/private"))
    for response in (denied, expired):  # the key is not granted it; it has expired
        assert error_of(response)[:2] == (403, "AccessDeniedException")


async def test_the_invoke_api_takes_no_presigned_url(served: tuple[Served, list[str]]) -> None:
    """Lambda's Invoke API takes header signatures; only function URLs take presigned ones."""
    server, calls = served
    target = presigned(server.port, INVOKE.format("orders"))
    response = await raw_request(server.port, "POST", target, b"")
    assert error_of(response)[:2] == (403, "MissingAuthenticationTokenException")
    assert calls == []


async def test_function_urls_keep_their_own_auth_type(served: tuple[Served, list[str]]) -> None:
    """A NONE URL stays public and an AWS_IAM one answers Lambda's URL 403, keys or not."""
    server, _ = served
    public = await raw_request(server.port, "GET", "/urls/public")
    private = await raw_request(server.port, "GET", "/urls/private")
    assert (public.status, public.json()) == (200, "public")
    assert private.status == 403
    assert private.headers["x-amzn-errortype"] == "AccessDeniedException"


def test_the_window_is_five_minutes_either_side_of_the_signature_date() -> None:
    """Pinned with the verifier's clock, so no test depends on how fast this machine is."""
    request = AWSRequest(method="POST", url="http://h:1/p", data=b"{}")
    credentials = Credentials(ADMIN.access_key_id, ADMIN.secret_access_key)
    SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
    date = request.headers["X-Amz-Date"]
    signed_at = datetime.datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    headers = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    headers.append((b"host", b"h:1"))

    def verify_at(offset: float) -> AccessKey:
        clock = signed_at.timestamp() + offset
        verifier = SigV4Verifier({ADMIN.access_key_id: ADMIN}, "us-east-1", clock=lambda: clock)
        return verifier.authenticate("POST", b"/p", b"", headers, b"{}")

    for offset in (-300, 0, 300):
        assert verify_at(offset) is ADMIN
    for offset in (-301, 301):
        with pytest.raises(InvalidSignature):
            verify_at(offset)


def test_a_secret_never_shows_in_a_repr_or_an_error() -> None:
    key = AccessKey("AKIDSHOWN", "very-secret-value")
    assert "very-secret-value" not in repr(key)
    with pytest.raises(ConfigError) as info:
        AccessKey("AKIDPADDED", " very-secret-value\n")
    assert "very-secret" not in str(info.value)
    with pytest.raises(ConfigError, match="given twice"):
        App(access_keys=[key, AccessKey("AKIDSHOWN", "other-secret")])


def test_a_mapping_of_secrets_still_configures_keys_granted_everything() -> None:
    app = App(access_keys={"AKIDPLAIN": "plain-secret"})
    key = app.access_keys["AKIDPLAIN"]
    assert key.allows("anything", "7", "DryRun")
    assert list(app.access_keys) == ["AKIDPLAIN"]
