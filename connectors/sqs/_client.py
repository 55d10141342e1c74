"""What the SQS source, destination and event queue share: naming a queue (URL, ARN or name),
the client and where it connects, resolving a queue's URL, telling a failure no retry fixes from
a transient one, and running a ``*Batch`` call ten entries at a time.

Internal: the public names of the package are in :mod:`streamfn.connectors.sqs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from streamfn.backoff import retry_delay
from streamfn.errors import ConfigError, SourceError, SourceUnreachable

from .._aws import refusal

MAX_RECEIVE = 10  # messages per ReceiveMessage, and entries per *Batch call
MAX_WAIT = 20  # seconds: SQS's longest long poll
MAX_VISIBILITY = 43_200  # seconds: SQS's cap on a message's visibility timeout
CALL_ATTEMPTS = 3  # tries of one batch call whose entries failed on the server's side

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo")
_ARN = re.compile(r"arn:[\w-]+:sqs:([\w-]+):(\d{12}):([\w.-]+)")
_AWS_URL = re.compile(r"https://sqs\.([\w-]+)\.amazonaws\.com(?:\.cn)?/\d+/[\w.-]+")
_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def error_code(exc: BaseException) -> str:
    """SQS's error code for a failed call (``AWS.SimpleQueueService.NonExistentQueue``), or
    the exception's class name when SQS gave none (a network error)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


@dataclass(frozen=True, slots=True)
class QueueRef:
    """A queue named by URL, ARN or name, and what the reference itself says about it."""

    name: str
    url: str | None = None
    region: str | None = None
    owner: str | None = None

    @classmethod
    def parse(cls, queue: str) -> QueueRef:
        if not isinstance(queue, str):
            raise ConfigError.out_of_range("queue", queue, "a queue URL, ARN or name")
        if queue.startswith(("http://", "https://")):
            url = _AWS_URL.fullmatch(queue)
            region = url.group(1) if url else None
            return cls(queue.rstrip("/").rsplit("/", 1)[-1], queue, region)
        arn = _ARN.fullmatch(queue)
        if arn is not None:
            return cls(arn.group(3), region=arn.group(1), owner=arn.group(2))
        if not _NAME.fullmatch(queue):
            raise ConfigError.out_of_range(
                "queue",
                queue,
                "a queue URL, an SQS ARN, or a name of 1-80 letters, digits, '-' and '_' "
                "(FIFO: ending in '.fifo')",
            )
        return cls(queue)

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom to call SQS; unset fields come from the usual AWS chain."""

    region_name: str | None
    endpoint_url: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    aws_session_token: str | None
    profile_name: str | None

    @contextlib.asynccontextmanager
    async def client(self, pool: int) -> AsyncIterator[Any]:
        """An aiobotocore SQS client with ``pool`` connections, closed on exit."""
        creator = AioSession(profile=self.profile_name).create_client(
            "sqs",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=AioConfig(max_pool_connections=pool, retries={"mode": "standard"}),
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                client = await stack.enter_async_context(creator)
            except NoRegionError as exc:
                raise ConfigError(
                    "no AWS region for SQS: pass region_name, a queue URL or ARN, "
                    "or set AWS_DEFAULT_REGION"
                ) from exc
            yield client

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or "AWS"


async def resolve_url(client: Any, ref: QueueRef) -> str:
    if ref.url is not None:
        return ref.url
    kwargs = {"QueueName": ref.name}
    if ref.owner is not None:
        kwargs["QueueOwnerAWSAccountId"] = ref.owner
    url: str = (await client.get_queue_url(**kwargs))["QueueUrl"]
    return url


def queue_missing(exc: BaseException) -> bool:
    """Whether a failed call says the queue does not exist."""
    return error_code(exc) in _MISSING


def fatal_error(exc: BaseException, queue: str, endpoint: str) -> SourceError | None:
    """The SourceError for a failure no retry can fix (missing queue, refused credentials),
    or SourceUnreachable when SQS cannot be reached at all."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return SourceError(f"no usable AWS credentials for SQS queue {queue!r}: {exc}")
    if isinstance(exc, EndpointConnectionError):
        return SourceUnreachable(f"cannot reach SQS at {endpoint} for queue {queue!r}: {exc}")
    if queue_missing(exc):
        return SourceError(f"SQS queue {queue!r} does not exist (at {endpoint})")
    refused = refusal(exc)
    if refused is not None:
        return SourceError(f"AWS refused the credentials used for SQS queue {queue!r} ({refused})")
    return None


T = TypeVar("T")
BatchCall = Callable[..., Awaitable[Mapping[str, Any]]]


async def call_by_ten(
    call: BatchCall, url: str, items: Sequence[T], entry: Callable[[str, T], dict[str, Any]]
) -> list[tuple[T, str]]:
    """Run a ``*Batch`` SQS call over ``items``, ten entries a call, all calls at once.
    Returns the (item, error code) that still failed."""
    chunks = [items[i : i + MAX_RECEIVE] for i in range(0, len(items), MAX_RECEIVE)]
    results = await asyncio.gather(*(_call_ten(call, url, chunk, entry) for chunk in chunks))
    return [failure for result in results for failure in result]


async def _call_ten(
    call: BatchCall, url: str, chunk: Sequence[T], entry: Callable[[str, T], dict[str, Any]]
) -> list[tuple[T, str]]:
    """botocore already retried a call that failed as a whole (throttling, 5xx, network);
    entries that failed on the server's side inside a successful call are retried here."""
    pending = list(chunk)
    final: list[tuple[T, str]] = []
    retry: list[tuple[T, str]] = []
    for attempt in range(CALL_ATTEMPTS):
        if attempt:
            await asyncio.sleep(retry_delay(attempt - 1, 0.05, 1.0))
        try:
            response = await call(
                QueueUrl=url, Entries=[entry(str(i), item) for i, item in enumerate(pending)]
            )
        except Exception as exc:
            return final + [(item, error_code(exc)) for item in pending]
        retry = []
        for failure in response.get("Failed", ()):
            item = pending[int(failure["Id"])]
            code = str(failure.get("Code", "Failed"))
            (final if failure.get("SenderFault") else retry).append((item, code))
        if not retry:
            break
        pending = [item for item, _ in retry]
    return final + retry


def summary(failures: Iterable[tuple[Any, str]]) -> dict[str, int]:
    """How many of ``failures`` failed with each error code, for a log line."""
    counts: dict[str, int] = {}
    for _, code in failures:
        counts[code] = counts.get(code, 0) + 1
    return counts
