"""The edges of streamfn that talk to the outside world, one subpackage per connector.

Installed as ``streamfn.connectors``; each subpackage may import its client library, which
comes with an extra:

- :mod:`streamfn.connectors.kafka` (``streamfn[kafka]``): ``KafkaSource``, ``KafkaDestination``,
  ``KafkaEventQueue``;
- :mod:`streamfn.connectors.sqs` (``streamfn[aws]``): ``SQSSource``, ``SQSDestination``,
  ``SQSEventQueue``;
- :mod:`streamfn.connectors.kinesis` (``streamfn[aws]``): ``KinesisSource``,
  ``DynamoDBStreamSource``, ``DynamoDBLeaseStore``;
- :mod:`streamfn.connectors.http` (``streamfn[http]``): Lambda's Invoke API, function URLs;
- :mod:`streamfn.connectors.webhook` (no extra): ``WebhookDestination``.

Modules with a leading underscore are internal.
"""
