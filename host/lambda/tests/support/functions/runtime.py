"""A stand-in for Lambda's managed Python runtime, for local tests: polls
the Runtime API in AWS_LAMBDA_RUNTIME_API (host:port, as Lambda sets it)
and calls MODULE.FUNCTION(event, context) for each event.

    python3 runtime.py checkout.handler     (run in the handler's folder)
"""

import importlib
import json
import os
import sys
import traceback
import urllib.request


class Context:
    def __init__(self, request_id, client_context):
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.client_context = None
        if client_context:  # the Runtime API hands it over as JSON
            self.client_context = json.loads(client_context)


def main(spec):
    module, function = spec.rsplit(".", 1)
    sys.path.insert(0, os.getcwd())
    handler = getattr(importlib.import_module(module), function)
    api = os.environ["AWS_LAMBDA_RUNTIME_API"]
    base = (api if api.startswith("http") else "http://" + api) + "/2018-06-01/runtime"
    while True:
        with urllib.request.urlopen(base + "/invocation/next") as r:
            request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
            context = Context(request_id, r.headers.get("Lambda-Runtime-Client-Context"))
            event = json.loads(r.read() or b"null")
        try:
            result, outcome = handler(event, context), "response"
        except Exception as e:  # reported to Lambda, as the managed runtime does
            traceback.print_exc()
            result, outcome = {"errorMessage": str(e), "errorType": type(e).__name__}, "error"
        req = urllib.request.Request(
            f"{base}/invocation/{request_id}/{outcome}",
            data=json.dumps(result).encode(),
            method="POST",
        )
        urllib.request.urlopen(req).read()


if __name__ == "__main__":
    main(sys.argv[1])
