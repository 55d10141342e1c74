"""Template functions over the Invoke API side: a function URL with CORS, an alias with
routing weights, an EventInvokeConfig with SQS and function destinations, and schedules
(rate and cron) as timed Event invocations on a clock the test drives."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import boto3

from streamfn.testing import wait_until
from tests.http.support import raw_request, serving

from .support import DEADLINE, RECORDER, build, records, write_app

URL = """\
    Transform: AWS::Serverless-2016-10-31
    Resources:
      Hello:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.12
          CodeUri: src/
          Handler: hello.handle
          AutoPublishAlias: live
          FunctionUrlConfig:
            AuthType: NONE
            Cors:
              AllowOrigins: [https://app.example]
              AllowMethods: [GET, POST]
              AllowHeaders: [X-Custom]
              MaxAge: 300
"""
HELLO = {
    "src/hello.py": """\
        async def handle(event, context):
            return {"path": event["rawPath"], "version": context.function_version}
    """
}


async def test_function_url_answers_with_the_templates_cors_on_its_alias(tmp_path: Path) -> None:
    built = build(write_app(tmp_path, URL, HELLO))
    url = built.app.functions["Hello"].config.url
    assert url is not None and url.qualifier == "live"
    async with serving(built.app) as server:
        preflight = await raw_request(
            server.port,
            "OPTIONS",
            "/urls/Hello/x",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-custom",
            },
        )
        answer = await raw_request(
            server.port, "GET", "/urls/Hello/items", headers={"Origin": "https://app.example"}
        )
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.headers["access-control-max-age"] == "300"
    assert answer.status == 200
    assert answer.json() == {"path": "/items", "version": "1"}
    assert answer.headers["access-control-allow-origin"] == "https://app.example"


ALIAS = """\
    Resources:
      Pricer:
        Type: AWS::Lambda::Function
        Properties:
          Runtime: python3.12
          Code: src
          Handler: price.handle
          Timeout: 7
          MemorySize: 256
          ReservedConcurrentExecutions: 5
          Role: arn:aws:iam::123456789012:role/pricer
      V1:
        Type: AWS::Lambda::Version
        Properties: {FunctionName: !Ref Pricer}
      V2:
        Type: AWS::Lambda::Version
        Properties: {FunctionName: !Ref Pricer}
      Live:
        Type: AWS::Lambda::Alias
        Properties:
          FunctionName: !Ref Pricer
          FunctionVersion: !GetAtt V1.Version
          Name: live
          RoutingConfig:
            AdditionalVersionWeights:
              - FunctionVersion: !GetAtt V2.Version
                FunctionWeight: 0.25
"""
PRICE = {
    "src/price.py": """\
        async def handle(event, context):
            return context.function_version
    """
}


async def test_alias_routes_by_the_templates_weights(tmp_path: Path) -> None:
    built = build(write_app(tmp_path, ALIAS, PRICE), app_options={"routing_seed": 7})
    config = built.app.functions["Pricer"].config
    assert (config.timeout, config.memory_size, config.reserved_concurrency) == (7, 256, 5)
    assert built.app.versions["Pricer"].aliases["live"].additional_version_weights == {"2": 0.25}
    async with built.app.running():
        results = [await built.app.invoke("Pricer", {}, qualifier="live") for _ in range(400)]
    counts = Counter(r.value for r in results)
    assert all(r.executed_version == r.value for r in results)
    assert set(counts) == {"1", "2"}
    assert 60 <= counts["2"] <= 140  # 25 % of 400, seeded


DESTINATIONS = """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Records: {Type: String}
      Suffix: {Type: String}
    Globals:
      Function:
        Runtime: python3.12
        CodeUri: src/
        Environment: {Variables: {RECORDS: !Ref Records}}
    Resources:
      Failed:
        Type: AWS::SQS::Queue
        Properties: {QueueName: !Sub "failed-${Suffix}"}
      Audit:
        Type: AWS::Serverless::Function
        Properties: {Handler: work.audit}
      Worker:
        Type: AWS::Serverless::Function
        Properties:
          Handler: work.handle
          EventInvokeConfig:
            MaximumRetryAttempts: 0
            MaximumEventAgeInSeconds: 120
            DestinationConfig:
              OnSuccess: {Type: Lambda, Destination: !GetAtt Audit.Arn}
              OnFailure: {Type: SQS, Destination: !GetAtt Failed.Arn}
"""
WORK = {
    "src/recorder.py": RECORDER,
    "src/work.py": """\
        from recorder import record

        def handle(event, context):
            if event.get("fail"):
                raise RuntimeError("boom")
            return {"done": event["n"]}

        def audit(event, context):
            condition = event["requestContext"]["condition"]
            record(condition=condition, response=event["responsePayload"])
    """,
}


async def test_event_invoke_config_sends_results_to_its_destinations(
    tmp_path: Path, aws_endpoint: str
) -> None:
    out = tmp_path / "records.jsonl"
    suffix = tmp_path.name[-20:].replace("_", "-")
    built = build(
        write_app(tmp_path, DESTINATIONS, WORK),
        create=True,
        parameter_overrides={"Records": str(out), "Suffix": suffix},
        app_options={"async_time_scale": 0.01},
    )
    config = built.app.functions["Worker"].config
    assert (config.maximum_retry_attempts, config.maximum_event_age) == (0, 120)
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=f"failed-{suffix}")["QueueUrl"]
    failures: list[dict[str, object]] = []

    def failed() -> bool:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        failures.extend(json.loads(m["Body"]) for m in answer.get("Messages", []))
        return bool(failures)

    async with built.app.running():
        await built.app.invoke_async("Worker", {"n": 1})
        await built.app.invoke_async("Worker", {"n": 2, "fail": True})
        await wait_until(lambda: bool(records(out)), timeout=DEADLINE)
        await wait_until(failed, timeout=DEADLINE, interval=0.2)
    assert records(out) == [{"condition": "Success", "response": {"done": 1}}]
    (failure,) = failures
    assert failure["requestPayload"] == {"n": 2, "fail": True}
    assert failure["requestContext"]["condition"] == "RetriesExhausted"  # type: ignore[index]


SCHEDULES = """\
    Transform: AWS::Serverless-2016-10-31
    Resources:
      Tick:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.12
          CodeUri: src/
          Handler: tick.handle
          Events:
            Hourly:
              Type: Schedule
              Properties: {Schedule: rate(1 hour)}
            Weekdays:
              Type: ScheduleV2
              Properties:
                ScheduleExpression: cron(30 9 ? * MON-FRI *)
                ScheduleExpressionTimezone: Europe/Paris
                Input: '{"job": "report"}'
"""
TICK = {
    "src/tick.py": """\
        SEEN = []

        async def handle(event, context):
            SEEN.append(event)
    """
}


class FastClock:
    """Time that jumps, once every timer waits, to the earliest wake-up: hours of schedule
    in a moment, in the order they would happen."""

    def __init__(self, start: float, timers: int) -> None:
        self.time = start
        self.timers = timers
        self.waiting: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep_until(self, when: float, stop: asyncio.Event) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((when, id(wake), wake))
        if len(self.waiting) == self.timers:
            self.waiting.sort(key=lambda w: w[:2])
            first, _, woken = self.waiting.pop(0)
            self.time = max(self.time, first)
            woken.set_result(None)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((wake, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()


async def test_schedules_become_timed_event_invocations(tmp_path: Path) -> None:
    from streamfn.sam import LoadOptions, build_app, plan_template

    plan = plan_template(write_app(tmp_path, SCHEDULES, TICK), LoadOptions())
    start = 1_767_607_200.0  # Monday 2026-01-05 10:00 UTC (11:00 in Paris)
    built = build_app(plan, state_dir=tmp_path / "state", clock=FastClock(start, timers=2))
    assert built.scheduler is not None
    seen = built.app.functions["Tick"].handler.__globals__["SEEN"]
    async with built.app.running(*built.servers):
        await wait_until(
            lambda: (
                sum(1 for e in seen if e == {"job": "report"}) >= 2
                and sum(1 for e in seen if e.get("detail-type") == "Scheduled Event") >= 3
            ),
            timeout=DEADLINE,
        )
    fired = built.scheduler.fired
    cron = [t for name, t in fired if name == "TickWeekdays"]
    rate = [t for name, t in fired if name == "TickHourly"]
    assert cron[:2] == [1_767_688_200.0, 1_767_774_600.0]  # Tue and Wed 09:30 in Paris
    assert rate[:3] == [start + 3600, start + 7200, start + 10800]
    event = next(e for e in seen if e.get("detail-type") == "Scheduled Event")
    assert event["source"] == "aws.events" and event["detail"] == {}
    assert event["resources"][0].startswith("arn:aws:events:us-east-1:123456789012:rule/")
