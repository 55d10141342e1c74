"""Ships accepted orders read from the Kinesis stream."""

import base64
import json


def ship(event, context):
    for record in event["Records"]:
        data = json.loads(base64.b64decode(record["kinesis"]["data"]))
        print(json.dumps({"shipped": data["order"]["id"]}))
