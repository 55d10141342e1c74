"""Kafka from SAM templates, against tansu: an MSK event (its brokers given as a run option,
as they are not in the template) and a SelfManagedKafka event (brokers from a parameter),
each with its consumer group, batch size and starting position."""

from __future__ import annotations

import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamfn.testing import wait_until
from streamfn.testing.servers import TansuBroker

from .support import DEADLINE, RECORDER, build, records, write_app

TEMPLATE = """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Records: {Type: String}
      Brokers: {Type: CommaDelimitedList}
      Topic: {Type: String}
      OtherTopic: {Type: String}
    Globals:
      Function:
        Runtime: python3.12
        CodeUri: src/
        Environment: {Variables: {RECORDS: !Ref Records}}
    Resources:
      MskConsumer:
        Type: AWS::Serverless::Function
        Properties:
          Handler: consume.handle
          Events:
            Msk:
              Type: MSK
              Properties:
                Stream: arn:aws:kafka:us-east-1:123456789012:cluster/events/abc-1
                Topics: [!Ref Topic]
                StartingPosition: TRIM_HORIZON
                BatchSize: 3
                ConsumerGroupId: !Sub "${Topic}-msk"
      SelfManagedConsumer:
        Type: AWS::Serverless::Function
        Properties:
          Handler: consume.handle
          Events:
            Kafka:
              Type: SelfManagedKafka
              Properties:
                KafkaBootstrapServers: !Ref Brokers
                Topics: [!Ref OtherTopic]
                StartingPosition: TRIM_HORIZON
                ConsumerGroupId: !Sub "${OtherTopic}-self"
                SourceAccessConfigurations:
                  - {Type: VPC_SUBNET, URI: "subnet:subnet-0123"}
                  - {Type: VPC_SECURITY_GROUP, URI: "security_group:sg-0123"}
"""
CODE = {
    "src/recorder.py": RECORDER,
    "src/consume.py": """\
        import base64

        from recorder import record

        def handle(event, context):
            for key, batch in event["records"].items():
                record(
                    function=context.function_name,
                    source=event["eventSource"],
                    size=sum(len(b) for b in event["records"].values()),
                    values=[base64.b64decode(r["value"]).decode() for r in batch],
                )
    """,
}


async def _topic(address: str) -> str:
    name = f"sam-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=address)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    return name


async def test_msk_and_self_managed_kafka_events_reach_their_functions(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    topic, other = await _topic(kafka_broker.address), await _topic(kafka_broker.address)
    out = tmp_path / "records.jsonl"
    path = write_app(tmp_path, TEMPLATE, CODE)
    built = build(
        path,
        parameter_overrides={
            "Records": str(out),
            "Brokers": kafka_broker.address,
            "Topic": topic,
            "OtherTopic": other,
        },
        kafka_bootstrap={
            "arn:aws:kafka:us-east-1:123456789012:cluster/events/abc-1": kafka_broker.address
        },
    )
    by_function = {m.function.name: m for m in built.app.mappings}
    assert by_function["MskConsumer"].config.batch_size == 3
    assert by_function["MskConsumer"].source.group_id == f"{topic}-msk"  # type: ignore[union-attr]
    assert by_function["SelfManagedConsumer"].source.group_id == f"{other}-self"  # type: ignore[union-attr]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.address, acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, b"m%d" % i)
            await producer.send_and_wait(other, b"s%d" % i)
    finally:
        await producer.stop()

    def values(function: str) -> list[str]:
        return [v for r in records(out) if r["function"] == function for v in r["values"]]

    async with built.app.running(*built.servers):
        await wait_until(
            lambda: (
                values("MskConsumer") == [f"m{i}" for i in range(5)]
                and values("SelfManagedConsumer") == [f"s{i}" for i in range(5)]
            ),
            timeout=DEADLINE,
        )
    seen = records(out)
    assert {r["source"] for r in seen if r["function"] == "MskConsumer"} == {"aws:kafka"}
    assert {r["source"] for r in seen if r["function"] == "SelfManagedConsumer"} == {
        "SelfManagedKafka"
    }
    assert all(r["size"] <= 3 for r in seen if r["function"] == "MskConsumer")
