#!/usr/bin/env python3
"""Makes a function's per-version infrastructure what its route in the store says.

    python3 deploy/follow.py FUNCTION --store ssm:/switchyard [--template deploy/per-version.yaml] [Key=Value ...]

The store is the one source of truth; this deploys what it says, now:

- while FUNCTION is in synthetic mode with a candidate, the candidate's own
  stack (FUNCTION-candidate-<qualifier>, from --template) is created or
  updated, and each of its `Context...` outputs (`<qualifier>:KEY={"$ssm": ...}`)
  is set in the route (`switchyard set --context`), so the candidate's
  requests carry what the stack made;
- every other candidate stack of FUNCTION is deleted: the write that took its
  candidate out of synthetic mode (`mode production`, `promote`, `rollback`,
  the guard, or a new candidate) already dropped the candidate's references
  (an `ssm:` store keeps them only for the synthetic candidate). A stack whose
  outputs the live route still references is never deleted: that is an
  error naming the reference.

Run it after every change of mode or candidate (the example pipeline does);
run twice, or with an old copy of a pipeline, it does the same thing. Key=Value
pairs are passed to the template (beside Function, Candidate and
InfrastructureRoot). Prints what it did as JSON. Needs the `switchyard` CLI on
PATH (or SWITCHYARD_CLI), boto3, and the AWS environment the CLI uses.
"""

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the repository's deploy/

import boto3  # noqa: E402
import botocore.exceptions  # noqa: E402

import stack as stacks  # noqa: E402

ROLE = "candidate-infrastructure"


def switchyard(store, *args):
    cli = os.environ.get("SWITCHYARD_CLI", "switchyard")
    try:
        out = subprocess.run([cli, *args, "--store", store], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        sys.exit(f"follow.py: the switchyard CLI is not on PATH (cargo install --path host/cli, or set SWITCHYARD_CLI)")
    if out.returncode != 0:
        sys.exit(f"follow.py: switchyard {' '.join(args)}: {out.stderr.strip()}")
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout) if out.stdout.strip() else None


def infrastructure_root(store):
    m = re.fullmatch(r"ssm:(/[^?]+)(\?.*)?", store)
    if not m:
        sys.exit(
            f"follow.py: per-version infrastructure needs an ssm: store (got {store}): its writes drop "
            "a candidate's references when it leaves synthetic mode, and its stacks write under its prefix"
        )
    return m.group(1).rstrip("/") + "/infrastructure"


def stack_name(function, qualifier):
    # Stack names: letters, digits and hyphens, starting with a letter.
    return re.sub(r"[^A-Za-z0-9-]", "-", f"{function}-candidate-{qualifier}")[:128]


def candidate_stacks(cfn, function):
    """The live candidate stacks of `function`: {qualifier: stack name}."""
    found = {}
    for page in cfn.get_paginator("describe_stacks").paginate():
        for s in page["Stacks"]:
            if s["StackStatus"] == "DELETE_COMPLETE":
                continue
            tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
            if tags.get("switchyard:role") == ROLE and tags.get("switchyard:function") == function:
                found[tags["switchyard:candidate"]] = s["StackName"]
    return found


def references(route, root, function, qualifier):
    """The route's context references to what `qualifier`'s stack holds."""
    own = f"{root}/{function}/{qualifier}/"
    refs = []
    for q, values in (route.get("context") or {}).items():
        for key, value in values.items():
            if isinstance(value, dict) and str(value.get("$ssm", "")).startswith(own):
                refs.append(f"{q}:{key}")
    return refs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("function")
    p.add_argument("--store", default=os.environ.get("SWITCHYARD_STORE"), required="SWITCHYARD_STORE" not in os.environ)
    p.add_argument("--template", default=os.path.join(HERE, "per-version.yaml"))
    p.add_argument("params", nargs="*", metavar="Key=Value")
    a = p.parse_args()
    given = {}
    for pair in a.params:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            sys.exit(f"follow.py: '{pair}' is not Key=Value")
        given[key] = value

    root = infrastructure_root(a.store)
    route = switchyard(a.store, "status", a.function)[0]
    if "error" in route:
        sys.exit(f"follow.py: {a.function}'s live route cannot be read: {route['error']}")
    candidate = route["versions"].get("candidate") if route["mode"] == "synthetic" else None
    cfn = boto3.client("cloudformation")
    done = {"function": a.function, "route-version": route["version"], "mode": route["mode"],
            "synthetic-candidate": candidate, "deleted": [], "deployed": None, "context": []}

    # What no longer follows the route goes first (refusing what it still references).
    for qualifier, name in sorted(candidate_stacks(cfn, a.function).items()):
        if qualifier == candidate:
            continue
        still = references(route, root, a.function, qualifier)
        if still:
            sys.exit(
                f"follow.py: not deleting {name}: {a.function}'s live route (version {route['version']}) still "
                f"references what it holds ({', '.join(still)}); take the reference out first "
                f"(switchyard set {a.function} --unset-context ...)"
            )
        print(f"follow.py: deleting {name} ({a.function}'s candidate {qualifier} is not in synthetic mode)", file=sys.stderr)
        cfn.delete_stack(StackName=name)
        try:
            cfn.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 900})
        except botocore.exceptions.WaiterError:
            reasons = stacks.failures(cfn, name)
            sys.exit(f"follow.py: deleting {name} failed:\n" + "\n".join(reasons))
        done["deleted"].append(name)

    if candidate is not None:
        name = stack_name(a.function, candidate)
        params = dict(given, Function=a.function, Candidate=candidate, InfrastructureRoot=root)
        tags = {"switchyard:role": ROLE, "switchyard:function": a.function, "switchyard:candidate": candidate}
        outputs = stacks.deploy(name, a.template, params, tags)
        done["deployed"] = {"stack": name, "outputs": outputs}
        have = route.get("context") or {}
        for key in sorted(k for k in outputs if k.startswith("Context")):
            arg = outputs[key]
            scope, _, value = arg.partition("=")
            q, _, ctx_key = scope.partition(":")
            try:
                wanted = json.loads(value)  # a reference, {"$ssm": ...}
            except json.JSONDecodeError:
                wanted = value  # a literal
            if have.get(q, {}).get(ctx_key) != wanted:
                switchyard(a.store, "set", a.function, "--context", arg,
                           "--reason", f"follow.py: the candidate's own infrastructure ({name})")
            done["context"].append(arg)
    print(json.dumps(done, indent=2))


if __name__ == "__main__":
    main()
