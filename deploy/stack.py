#!/usr/bin/env python3
"""Creates or updates a CloudFormation stack from a template here, waits, and prints its outputs.

    python3 deploy/stack.py STACK TEMPLATE [Key=Value ...]

TEMPLATE is plain CloudFormation (deploy/iam.yaml, deploy/router.cfn.json, ...);
a SAM template (Transform: AWS::Serverless-2016-10-31) is transformed first with
deploy/sam-translate.py, offline. A new stack is created; an existing one is
updated, with every parameter not given keeping its previous value (as
`aws cloudformation deploy` does), and "no updates" is success. Values may hold
commas (CommaDelimitedList parameters). On failure it prints the failed
resources' reasons and exits 1; on success, the stack's outputs as one JSON
object on stdout. The region, credentials and AWS_ENDPOINT_URL come from the
environment as for the AWS CLI.

Why not `aws cloudformation deploy`: it goes through change sets, and the AWS API
emulator the tests run on does not carry outputs or exports through an executed
change set; create-stack and update-stack behave the same on both.
"""

import json
import os
import subprocess
import sys

try:
    import boto3
    import botocore.exceptions
except ImportError:
    sys.exit("stack.py: needs boto3: python3 -m pip install boto3")

HERE = os.path.dirname(os.path.abspath(__file__))


def template_body(path):
    with open(path) as f:
        text = f.read()
    if "AWS::Serverless-2016-10-31" in text:
        out = subprocess.run(
            [sys.executable, os.path.join(HERE, "sam-translate.py"), path],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            sys.exit(f"stack.py: transforming {path}: {out.stderr.strip()}")
        return out.stdout
    return text


def parameters_of(body):
    """The template's parameters, by name (read here: validate-template on
    the emulator lists none)."""
    try:
        template = json.loads(body)
    except json.JSONDecodeError:
        from samtranslator.yaml_helper import yaml_parse  # reads !Ref, !Sub, ...

        template = yaml_parse(body)
    return template.get("Parameters") or {}


def failures(cfn, stack):
    """The reasons of the stack's failed resources, newest first."""
    events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    return [
        f"  {e['LogicalResourceId']} ({e.get('ResourceType', '?')}): {e.get('ResourceStatusReason', '')}"
        for e in events
        if e.get("ResourceStatus", "").endswith("FAILED")
    ]


def deploy(stack, path, given, tags=None):
    """Creates or updates `stack` from the template at `path` with the
    parameters `given` (a dict) and `tags`; waits; returns its outputs.
    Exits naming what failed."""
    body = template_body(path)
    cfn = boto3.client("cloudformation")
    try:
        existing = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    except botocore.exceptions.ClientError as e:
        if "does not exist" not in str(e):
            raise
        existing = None

    names = list(parameters_of(body))
    unknown = sorted(set(given) - set(names))
    if unknown:
        sys.exit(f"stack.py: {path} has no parameter {', '.join(unknown)} (it has {', '.join(names)})")
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()]
    kw = dict(
        StackName=stack,
        TemplateBody=body,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    if tags:
        kw["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    try:
        if existing is None:
            print(f"stack.py: creating {stack} from {path}", file=sys.stderr)
            cfn.create_stack(Parameters=params, **kw)
            waiter = "stack_create_complete"
        else:
            # The previous values, passed back as values: UsePreviousValue
            # fails on the emulator for a value that was a default (none of
            # these templates has a NoEcho parameter, where it would matter).
            previous = {p["ParameterKey"]: p["ParameterValue"] for p in existing.get("Parameters", [])}
            params += [
                {"ParameterKey": k, "ParameterValue": previous[k]}
                for k in names
                if k not in given and k in previous
            ]
            print(f"stack.py: updating {stack} from {path}", file=sys.stderr)
            cfn.update_stack(Parameters=params, **kw)
            waiter = "stack_update_complete"
    except botocore.exceptions.ClientError as e:
        if "No updates are to be performed" in str(e):
            print(f"stack.py: {stack} is already up to date", file=sys.stderr)
            waiter = None
        else:
            sys.exit(f"stack.py: {stack}: {e.response['Error'].get('Message', e)}")
    if waiter:
        try:
            cfn.get_waiter(waiter).wait(StackName=stack, WaiterConfig={"Delay": 2, "MaxAttempts": 900})
        except botocore.exceptions.WaiterError:
            reasons = failures(cfn, stack)
            sys.exit(f"stack.py: {stack} failed:\n" + "\n".join(reasons or ["  (no resource failed; see the stack's events)"]))
    outputs = cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    stack, path, pairs = args[0], args[1], args[2:]
    given = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            sys.exit(f"stack.py: '{pair}' is not Key=Value")
        given[key] = value
    print(json.dumps(deploy(stack, path, given), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
