"""checkout: a Python function that calls `orders` through the Switchyard
mesh extension. Nothing in it knows about Switchyard but the endpoint."""

import json
import os

import boto3

# The one-line change: the Lambda client talks to the mesh extension.
lam = boto3.client("lambda", endpoint_url=os.environ.get("SWITCHYARD_URL", "http://localhost:9010"))


def handler(event, context):
    answer = lam.invoke(FunctionName="orders", Payload=json.dumps({"order": 1}))
    orders = json.loads(answer["Payload"].read())
    headers = (event or {}).get("headers") or {}
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "function": "checkout",
                "traffic": headers.get("x-switchyard-traffic", "production"),
                "orders": orders,
            }
        ),
    }
