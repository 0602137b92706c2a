"""Lambda fixtures and a real boto3 client for the proxy's Lambda tests.

moto runs Lambda without Docker here (its "simple" backend echoes each
payload back, or answers from a queue of canned results), and its recorder
shows every Invoke the proxy made, Qualifier and client context included.

    moto_lambda.py setup ENDPOINT REGION NAME     -> {"versions": ["1", "2"]}
    moto_lambda.py calls ENDPOINT NAME            -> [{"qualifier", "client_context", "invocation_type"}]
    moto_lambda.py respond ENDPOINT REGION JSON   -> queue canned results (a JSON list of strings)
    moto_lambda.py invoke PROXY FUNCTION PAYLOAD [CUSTOM_JSON|""] [INVOCATION_TYPE] [LOG_TYPE]
        -> boto3 Invoke with endpoint_url=PROXY: {"status", "payload", "function_error", "executed_version", "log_result"}
           or {"error": "<ErrorCode>", "message": "..."}
"""

import base64
import json
import sys
import urllib.parse
import urllib.request

import boto3
import botocore.config
import botocore.exceptions

CREDS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def post(url, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def empty_zip(comment):
    # An empty zip archive: the end-of-central-directory record, whose
    # comment makes each version's code differ.
    c = comment.encode()
    return b"PK\x05\x06" + b"\0" * 16 + len(c).to_bytes(2, "little") + c


def setup(endpoint, region, name):
    post(endpoint + "/moto-api/config", {"lambda": {"use_docker": False}})
    post(endpoint + "/moto-api/recorder/start-recording")
    kw = dict(endpoint_url=endpoint, region_name=region, **CREDS)
    iam = boto3.client("iam", **kw)
    try:
        role = iam.create_role(
            RoleName="switchyard-test", AssumeRolePolicyDocument=json.dumps(TRUST)
        )["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="switchyard-test")["Role"]["Arn"]
    lam = boto3.client("lambda", **kw)
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": empty_zip("v1")},
    )
    versions = [lam.publish_version(FunctionName=name)["Version"]]
    lam.update_function_code(FunctionName=name, ZipFile=empty_zip("v2"))
    versions.append(lam.publish_version(FunctionName=name)["Version"])
    return {"versions": versions}


def calls(endpoint, name):
    with urllib.request.urlopen(endpoint + "/moto-api/recorder/download-recording") as r:
        # One JSON record a line: split at "\n" only (splitlines() also
        # splits at characters a recorded body may hold, e.g. U+2028).
        lines = r.read().decode().split("\n")
    out = []
    for line in lines:
        if f"/functions/{name}/" not in line:
            continue  # not this function's (and no need to parse an upload)
        e = json.loads(line)
        url = urllib.parse.urlparse(e["url"])
        path = urllib.parse.unquote(url.path)
        if not path.endswith("/invocations") or f"/functions/{name}/" not in path:
            continue
        h = {k.lower(): v for k, v in e["headers"].items()}
        ctx = h.get("x-amz-client-context")
        out.append(
            {
                "qualifier": urllib.parse.parse_qs(url.query).get("Qualifier", [None])[0],
                "client_context": json.loads(base64.b64decode(ctx)) if ctx else None,
                "invocation_type": h.get("x-amz-invocation-type", "RequestResponse"),
            }
        )
    return out


def invoke(proxy, function, payload, custom=None, invocation_type=None, log_type=None):
    lam = boto3.client(
        "lambda",
        endpoint_url=proxy,
        region_name="us-east-1",
        config=botocore.config.Config(retries={"max_attempts": 1}),
        **CREDS,
    )
    kw = {"FunctionName": function, "Payload": payload.encode()}
    if invocation_type:
        kw["InvocationType"] = invocation_type
    if log_type:
        kw["LogType"] = log_type
    if custom:
        kw["ClientContext"] = base64.b64encode(
            json.dumps({"custom": json.loads(custom)}).encode()
        ).decode()
    try:
        r = lam.invoke(**kw)
    except botocore.exceptions.ClientError as e:
        return {"error": e.response["Error"]["Code"], "message": e.response["Error"].get("Message", "")}
    return {
        "status": r["StatusCode"],
        "payload": r["Payload"].read().decode(),
        "function_error": r.get("FunctionError"),
        "executed_version": r.get("ExecutedVersion"),
        "log_result": base64.b64decode(r["LogResult"]).decode() if r.get("LogResult") else None,
    }


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "setup":
        out = setup(*args)
    elif cmd == "calls":
        out = calls(*args)
    elif cmd == "respond":
        endpoint, region, results = args
        post(
            endpoint + "/moto-api/static/lambda-simple/response",
            {"results": json.loads(results), "region": region},
        )
        out = {"queued": len(json.loads(results))}
    elif cmd == "invoke":
        out = invoke(*args)
    else:
        sys.exit(f"unknown command {cmd!r}; see the module docstring")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
