"""Function URLs: requests as payload format 2.0 events, 2.0 responses (and bare JSON) back,
CORS exactly per the Cors object (preflights included), AWS_IAM auth with SigV4, and Lambda's
error statuses."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from streamfn import App, ConfigError, Context
from streamfn.config import Cors, FunctionUrl
from streamfn.connectors.http import urls as http_urls

from .support import DEADLINE, RawResponse, Served, raw_request, serving

KEY_ID, SECRET = "AKIDSTREAMFNTEST", "s3cr3t"
CORS = Cors(
    allow_origins=["https://app.example"],
    allow_methods=["GET", "POST"],
    allow_headers=["X-Custom", "Content-Type"],
    expose_headers=["X-Trace"],
    allow_credentials=True,
    max_age=600,
)
FORBIDDEN = {
    "Message": "Forbidden. For troubleshooting Function URL authorization issues, see: "
    "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
}


def make_app(calls: list[str]) -> App:
    app = App("urls", access_keys={KEY_ID: SECRET})

    @app.function(url=FunctionUrl())
    async def echo(event: dict[str, Any], context: Context) -> Any:
        calls.append(event["requestContext"]["http"]["method"])
        return event

    @app.function(url=FunctionUrl(cors=CORS))
    async def shaped(event: dict[str, Any], context: Context) -> Any:
        calls.append(event["requestContext"]["http"]["method"])
        return json.loads(event.get("body") or "null")

    @app.function(url=FunctionUrl(cors=Cors(allow_origins=["*"], allow_methods=["*"])))
    async def public(event: dict[str, Any], context: Context) -> str:
        return "hi"

    @app.function(url=FunctionUrl(auth_type="AWS_IAM"))
    async def private(event: dict[str, Any], context: Context) -> Any:
        return {
            "iam": event["requestContext"]["authorizer"]["iam"],
            "body": event.get("body"),
        }

    @app.function(url=FunctionUrl())
    async def broken(event: dict[str, Any], context: Context) -> None:
        raise ValueError("broken")

    @app.function(url=FunctionUrl(qualifier="live"))
    async def aliased(event: dict[str, Any], context: Context) -> str:
        return context.function_version

    app.publish_version("aliased")
    app.alias("aliased", "live", version="1")

    @app.function(reserved_concurrency=0, url=FunctionUrl())
    async def disabled(event: dict[str, Any], context: Context) -> None:
        raise AssertionError("never runs")

    @app.function()
    async def no_url(event: dict[str, Any], context: Context) -> None:
        raise AssertionError("never runs")

    return app


@pytest.fixture
async def urls() -> AsyncIterator[tuple[Served, list[str]]]:
    calls: list[str] = []
    async with serving(make_app(calls)) as served:
        yield served, calls


async def request(
    served: Served,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> RawResponse:
    async with asyncio.timeout(DEADLINE):
        return await raw_request(served.port, method, path, body, headers, host=host)


async def test_request_becomes_a_2_0_event(urls: tuple[Served, list[str]]) -> None:
    served, _ = urls
    response = await request(
        served,
        "GET",
        "/urls/echo/my/path?a=1&a=2&b=x%20y",
        headers={"X-Multi": "one", "x-multi": "two", "Cookie": "c1=v1; c2=v2", "User-Agent": "t"},
    )
    event = response.json()
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/my/path"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["headers"]["x-multi"] == "one,two"
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/my/path",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "t",
    }
    assert (context["routeKey"], context["stage"], context["authorizer"]) == (
        "$default",
        "$default",
        None,
    )
    assert context["requestId"] == response.headers["x-amzn-requestid"]
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context["time"])
    assert isinstance(context["timeEpoch"], int)


async def test_host_header_routes_like_the_aws_url(urls: tuple[Served, list[str]]) -> None:
    served, _ = urls
    host = f"echo.lambda-url.us-east-1.localhost:{served.port}"
    response = await request(served, "PUT", "/x/y", b"text", {"Content-Type": "text/plain"}, host)
    event = response.json()
    assert event["rawPath"] == "/x/y"
    assert event["requestContext"]["domainName"] == "echo.lambda-url.us-east-1.localhost"
    assert (event["body"], event["isBase64Encoded"]) == ("text", False)


async def test_binary_body_is_base64(urls: tuple[Served, list[str]]) -> None:
    served, _ = urls
    body = bytes(range(256))
    response = await request(
        served, "POST", "/urls/echo", body, {"Content-Type": "application/octet-stream"}
    )
    event = response.json()
    assert event["rawPath"] == "/"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


async def test_2_0_response_maps_status_headers_cookies_and_base64(
    urls: tuple[Served, list[str]],
) -> None:
    served, _ = urls
    shaped = {
        "statusCode": 201,
        "headers": {"Content-Type": "image/png", "X-Count": 3},
        "cookies": ["a=1; Max-Age=60", "b=2"],
        "body": base64.b64encode(b"\x89PNG").decode(),
        "isBase64Encoded": True,
    }
    response = await request(served, "POST", "/urls/shaped", json.dumps(shaped).encode())
    assert response.status == 201
    assert response.body == b"\x89PNG"
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-count"] == "3"
    assert [v for k, v in response.header_list if k == "set-cookie"] == ["a=1; Max-Age=60", "b=2"]


@pytest.mark.parametrize(
    ("returned", "body"),
    [
        ("Hello, world!", b'"Hello, world!"'),
        ({"message": "hi"}, b'{"message":"hi"}'),
        (None, b"null"),
    ],
)
async def test_bare_json_is_a_200_json_body(
    urls: tuple[Served, list[str]], returned: Any, body: bytes
) -> None:
    served, _ = urls
    response = await request(served, "POST", "/urls/shaped", json.dumps(returned).encode())
    assert (response.status, response.body) == (200, body)
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "returned",
    [
        {"statusCode": "abc"},
        {"statusCode": 700},
        {"statusCode": 200, "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"statusCode": 200, "headers": {"Bad Name": "x"}},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "cookies": "a=1"},
    ],
)
async def test_malformed_response_is_502(urls: tuple[Served, list[str]], returned: Any) -> None:
    served, _ = urls
    response = await request(served, "POST", "/urls/shaped", json.dumps(returned).encode())
    assert (response.status, response.body) == (502, b"Internal Server Error")
    assert "injected" not in response.headers


async def test_function_error_is_502(urls: tuple[Served, list[str]]) -> None:
    served, _ = urls
    response = await request(served, "GET", "/urls/broken")
    assert (response.status, response.body) == (502, b"Internal Server Error")


async def test_url_targets_its_alias(urls: tuple[Served, list[str]]) -> None:
    served, _ = urls
    response = await request(served, "GET", "/urls/aliased")
    assert response.json() == "1"


@pytest.mark.parametrize("path", ["/urls/no_url/x", "/urls/missing"])
async def test_unknown_url_is_403(urls: tuple[Served, list[str]], path: str) -> None:
    served, _ = urls
    response = await request(served, "GET", path)
    assert response.status == 403
    assert response.headers["x-amzn-errortype"] == "AccessDeniedException"
    assert response.json() == {"Message": None}


async def test_throttled_url_is_429_and_oversized_body_413(urls: tuple[Served, list[str]]) -> None:
    served, _ = urls
    throttled = await request(served, "GET", "/urls/disabled")
    large = await request(served, "POST", "/urls/echo", b"x" * (http_urls.REQUEST_LIMIT + 1))
    assert throttled.status == 429
    assert throttled.headers["x-amzn-errortype"] == "TooManyRequestsException"
    assert large.status == 413


async def test_cors_headers_on_responses_replace_the_functions(
    urls: tuple[Served, list[str]],
) -> None:
    served, _ = urls
    returned = {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "*"}, "body": "ok"}
    payload = json.dumps(returned).encode()
    allowed = await request(
        served, "POST", "/urls/shaped", payload, {"Origin": "https://app.example"}
    )
    other = await request(served, "POST", "/urls/shaped", payload, {"Origin": "https://evil"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert allowed.headers["access-control-expose-headers"] == "x-trace"
    assert allowed.headers["vary"] == "Origin"
    assert [k for k, _ in allowed.header_list].count("access-control-allow-origin") == 1
    assert not any(k.startswith("access-control-") for k, _ in other.header_list)


async def test_preflight_is_answered_from_the_cors_object(urls: tuple[Served, list[str]]) -> None:
    served, calls = urls
    allowed = await request(
        served,
        "OPTIONS",
        "/urls/shaped",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-custom",
        },
    )
    bad_method = await request(
        served,
        "OPTIONS",
        "/urls/shaped",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
    )
    bad_origin = await request(
        served,
        "OPTIONS",
        "/urls/shaped",
        headers={"Origin": "https://evil", "Access-Control-Request-Method": "GET"},
    )
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-methods"] == "GET, POST"
    assert allowed.headers["access-control-allow-headers"] == "x-custom, content-type"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert allowed.headers["access-control-max-age"] == "600"
    for refused in (bad_method, bad_origin):
        assert refused.status == 200
        assert not any(k.startswith("access-control-") for k, _ in refused.header_list)
    assert calls == []  # preflights never reach the function


async def test_wildcard_origin_and_options_without_cors(urls: tuple[Served, list[str]]) -> None:
    served, calls = urls
    preflight = {"Origin": "https://any.example", "Access-Control-Request-Method": "PATCH"}
    public = await request(served, "OPTIONS", "/urls/public", headers=preflight)
    plain = await request(served, "OPTIONS", "/urls/echo", headers=preflight)
    assert public.headers["access-control-allow-origin"] == "*"
    assert public.headers["access-control-allow-methods"] == "*"
    assert "access-control-max-age" not in public.headers
    assert plain.status == 200 and calls == ["OPTIONS"]  # no Cors: the function answers


def signed(
    port: int,
    path: str,
    body: bytes = b"",
    *,
    secret: str = SECRET,
    region: str = "us-east-1",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """The headers botocore's SigV4 signer adds for a POST to ``path``."""
    request = AWSRequest(
        method="POST", url=f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {}
    )
    SigV4Auth(Credentials(KEY_ID, secret), "lambda", region).add_auth(request)
    return {**(headers or {}), **dict(request.headers.items())}


async def test_sigv4_signed_request_reaches_the_function(urls: tuple[Served, list[str]]) -> None:
    served, _ = urls
    path = "/urls/private/a%20b/c?z=1&a=2"
    body = b'{"k": "v"}'
    headers = signed(served.port, path, body, headers={"Content-Type": "application/json"})
    response = await request(served, "POST", path, body, headers)
    assert response.status == 200, response.body
    assert response.json()["iam"]["accessKey"] == KEY_ID
    assert response.json()["body"] == '{"k": "v"}'


@pytest.mark.parametrize(
    "case", ["missing", "wrong-secret", "other-region", "tampered-body", "bad-content-hash"]
)
async def test_bad_sigv4_signature_is_403(urls: tuple[Served, list[str]], case: str) -> None:
    served, _ = urls
    path, body = "/urls/private", b"{}"
    headers = {
        "missing": {},
        "wrong-secret": signed(served.port, path, body, secret="wrong"),
        "other-region": signed(served.port, path, body, region="eu-west-1"),
        "tampered-body": signed(served.port, path, b'{"a": 1}'),
        "bad-content-hash": signed(
            served.port, path, body, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
        ),
    }[case]
    response = await request(served, "POST", path, body, headers)
    assert response.status == 403
    assert response.headers["x-amzn-errortype"] == "AccessDeniedException"
    assert response.json() == FORBIDDEN


async def test_expired_sigv4_signature_is_403(
    urls: tuple[Served, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, _ = urls
    six_minutes_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=6)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: six_minutes_ago)
    headers = signed(served.port, "/urls/private")
    monkeypatch.undo()
    response = await request(served, "POST", "/urls/private", b"", headers)
    assert response.status == 403


async def test_the_same_signed_request_twice_is_accepted_twice(
    urls: tuple[Served, list[str]],
) -> None:
    """As on AWS: no replay cache, since SDK retries resend a request exactly as signed."""
    served, _ = urls
    headers = signed(served.port, "/urls/private", b"{}")
    first = await request(served, "POST", "/urls/private", b"{}", headers)
    again = await request(served, "POST", "/urls/private", b"{}", headers)
    assert (first.status, again.status) == (200, 200)


async def test_aws_iam_url_needs_access_keys() -> None:
    app = App()
    app.function("f", url=FunctionUrl(auth_type="AWS_IAM"))(lambda event, context: None)
    with pytest.raises(ConfigError, match=re.escape("uses AWS_IAM auth but App(access_keys=")):
        async with app.running():
            pass


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Cors(allow_methods=["GET", "TRACE"]), "allow_methods="),
        (lambda: Cors(allow_methods=["GET"] * 7), "at most 6 entries"),
        (lambda: Cors(max_age=86401), "max_age=86401 is invalid"),
        (lambda: Cors(allow_origins="*"), "a list of non-empty strings"),
        (lambda: FunctionUrl(auth_type="IAM"), "auth_type='IAM' is invalid"),
        (lambda: FunctionUrl(qualifier="1"), "alias='1' is invalid"),
    ],
)
def test_url_settings_are_validated(make: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make()
