"""Leases in a DynamoDB table, for several workers sharing a stream (KCL's lease table).

One item per shard: ``leaseKey`` (the hash key), ``leaseOwner``, ``leaseCounter``,
``checkpoint``, ``parentShardIds``, ``claimant`` and ``windowState`` (binary: the open tumbling
window, set or removed in the same UpdateItem as the checkpoint it goes with). Every write is
conditional on the owner or the counter the caller saw, so two workers can never both believe
they won; the policy (expiry, balancing, handoff) is the core's
:class:`~streamfn.leases.LeaseCoordinator`.

Calls per worker: one consistent Scan and one UpdateItem per held lease every renew interval
(a third of the lease duration), plus a conditional write per checkpoint. :attr:`calls` counts
them by operation. The Scan projects ``windowState`` away, so listing stays small however large
the windows. An item holds 400 KB in all, so a window is kept up to
:attr:`DynamoDBLeaseStore.window_limit` bytes (compressed); the engine keeps a larger one in
memory only. Every renewal rewrites the item, so a large window also costs write capacity by
its size (a write unit per KB) each renew interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError

from streamfn.errors import ConfigError
from streamfn.leases import SHARD_END, Lease

_CONDITION_FAILED = "ConditionalCheckFailedException"
_ATTRIBUTES = ("leaseOwner", "leaseCounter", "checkpoint", "claimant", "windowState")
#: What a Scan reads: every attribute but the window.
_LISTED = ("leaseKey", "leaseOwner", "leaseCounter", "checkpoint", "parentShardIds", "claimant")
_TABLE_WAIT = 60.0  # seconds a new table may take to become ACTIVE


def _item(lease: Lease) -> dict[str, Any]:
    item: dict[str, Any] = {
        "leaseKey": {"S": lease.key},
        "leaseCounter": {"N": str(lease.counter)},
        "parentShardIds": {"L": [{"S": p} for p in lease.parents]},
    }
    for name, value in (
        ("leaseOwner", lease.owner),
        ("checkpoint", lease.checkpoint),
        ("claimant", lease.claimant),
    ):
        if value is not None:
            item[name] = {"S": value}
    if lease.window is not None:
        item["windowState"] = {"B": lease.window}
    return item


def _lease(item: dict[str, Any]) -> Lease:
    def text(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value is not None else None

    return Lease(
        key=item["leaseKey"]["S"],
        owner=text("leaseOwner"),
        counter=int(item["leaseCounter"]["N"]),
        checkpoint=text("checkpoint"),
        parents=tuple(p["S"] for p in item.get("parentShardIds", {}).get("L", [])),
        claimant=text("claimant"),
        window=item["windowState"]["B"] if "windowState" in item else None,
    )


class DynamoDBLeaseStore:
    """A :class:`~streamfn.leases.LeaseStore` on a DynamoDB table, created on-demand
    (PAY_PER_REQUEST) when missing. Use one table per stream and consuming application."""

    #: The largest window kept with a checkpoint, in bytes: an item holds 400 KB in all, and
    #: the lease's other attributes (and their names) take a few hundred bytes.
    window_limit = 390 * 1024

    def __init__(
        self,
        table_name: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        session: AioSession | None = None,
    ) -> None:
        if not isinstance(table_name, str) or not 3 <= len(table_name) <= 255:
            raise ConfigError.out_of_range("table_name", table_name, "3-255 characters")
        self.table_name = table_name
        self.calls: Counter[str] = Counter()
        self._client_args = {
            "region_name": region_name,
            "endpoint_url": endpoint_url,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._session = session or get_session()
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    def describe(self) -> str:
        return f"dynamodb://{self.table_name}"

    async def open(self) -> None:
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(
            self._session.create_client("dynamodb", **self._client_args)
        )
        self._stack = stack
        try:
            await self._ensure_table()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        self.calls[operation] += 1
        return await getattr(self._client, operation)(**kwargs)

    async def _ensure_table(self) -> None:
        try:
            table = await self._call("describe_table", TableName=self.table_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            await self._create_table()
        else:
            if table["Table"]["TableStatus"] == "ACTIVE":
                return
        async with asyncio.timeout(_TABLE_WAIT):
            while True:
                table = await self._call("describe_table", TableName=self.table_name)
                if table["Table"]["TableStatus"] == "ACTIVE":
                    return
                await asyncio.sleep(1.0)

    async def _create_table(self) -> None:
        try:
            await self._call(
                "create_table",
                TableName=self.table_name,
                KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise  # ResourceInUse: another worker is creating it right now

    async def _update(self, key: str, update: str, condition: str, **values: Any) -> Any:
        """One conditional UpdateItem; the new item, or None when the condition failed."""
        expression = update + condition
        names = {f"#{n}": n for n in _ATTRIBUTES if f"#{n}" in expression}
        try:
            response = await self._call(
                "update_item",
                TableName=self.table_name,
                Key={"leaseKey": {"S": key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={f":{k}": v for k, v in values.items()},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == _CONDITION_FAILED:
                return None
            raise
        return _lease(response["Attributes"])

    async def list(self) -> list[Lease]:
        leases: list[Lease] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "ConsistentRead": True,
            "ProjectionExpression": ", ".join(f"#{n}" for n in _LISTED),
            "ExpressionAttributeNames": {f"#{n}": n for n in _LISTED},
        }
        while True:
            page = await self._call("scan", **kwargs)
            leases.extend(_lease(item) for item in page.get("Items", ()))
            if "LastEvaluatedKey" not in page:
                return leases
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def create(self, lease: Lease) -> bool:
        try:
            await self._call(
                "put_item",
                TableName=self.table_name,
                Item=_item(lease),
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == _CONDITION_FAILED:
                return False
            raise
        return True

    async def acquire(self, lease: Lease, owner: str) -> Lease | None:
        result: Lease | None = await self._update(
            lease.key,
            "SET #leaseOwner = :owner, #leaseCounter = :next REMOVE #claimant",
            "#leaseCounter = :counter",
            owner={"S": owner},
            counter={"N": str(lease.counter)},
            next={"N": str(lease.counter + 1)},
        )
        return result

    async def renew(self, lease: Lease) -> Lease | None:
        if lease.owner is None:
            return None
        result: Lease | None = await self._update(
            lease.key,
            "SET #leaseCounter = :next",
            "#leaseCounter = :counter AND #leaseOwner = :owner",
            owner={"S": lease.owner},
            counter={"N": str(lease.counter)},
            next={"N": str(lease.counter + 1)},
        )
        return result

    async def claim(self, lease: Lease, claimant: str) -> bool:
        if lease.owner is None:
            return False
        claimed = await self._update(
            lease.key,
            "SET #claimant = :claimant",
            "#leaseOwner = :owner AND attribute_not_exists(#claimant)",
            owner={"S": lease.owner},
            claimant={"S": claimant},
        )
        return claimed is not None

    async def checkpoint(
        self, key: str, owner: str, checkpoint: str, window: bytes | None = None
    ) -> bool:
        values: dict[str, Any] = {"owner": {"S": owner}, "checkpoint": {"S": checkpoint}}
        if window is None:
            update = "SET #checkpoint = :checkpoint REMOVE #windowState"
        else:
            update = "SET #checkpoint = :checkpoint, #windowState = :window"
            values["window"] = {"B": window}
        written = await self._update(key, update, "#leaseOwner = :owner", **values)
        return written is not None

    async def release(
        self, lease: Lease, checkpoint: str | None, successor: str | None = None
    ) -> bool:
        if lease.owner is None:
            return False
        sets = ["#leaseCounter = #leaseCounter + :one"]
        removes = ["#claimant"]
        values: dict[str, Any] = {"owner": {"S": lease.owner}, "one": {"N": "1"}}
        if successor is not None:
            sets.append("#leaseOwner = :successor")
            values["successor"] = {"S": successor}
        else:
            removes.append("#leaseOwner")
        if checkpoint is not None:
            sets.append("#checkpoint = :checkpoint")
            values["checkpoint"] = {"S": checkpoint}
        else:
            removes.append("#checkpoint")
        if checkpoint is None or checkpoint == SHARD_END:  # a finished shard's window is closed
            removes.append("#windowState")
        update = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
        released = await self._update(lease.key, update, "#leaseOwner = :owner", **values)
        return released is not None

    async def delete(self, lease: Lease) -> bool:
        try:
            await self._call(
                "delete_item",
                TableName=self.table_name,
                Key={"leaseKey": {"S": lease.key}},
                ConditionExpression="leaseCounter = :counter",
                ExpressionAttributeValues={":counter": {"N": str(lease.counter)}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == _CONDITION_FAILED:
                return False
            raise
        return True
