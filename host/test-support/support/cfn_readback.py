"""Reads back what a deploy/ stack created on the AWS API emulator (boto3).

    cfn_readback.py function NAME     -> {"environment", "runtime", "handler",
                                          "architectures", "layers", "role",
                                          "inline": [statements], "attached": [arns]}
    cfn_readback.py policy ARN        -> [statements] of a managed policy's default version
    cfn_readback.py layer ARN         -> {"compatible_architectures", "code_size"}

The emulator (moto 5.2) stores an inline role policy created by
CloudFormation as Python's repr of the document, not JSON; both are read here.
"""

import ast
import json
import sys
import urllib.parse

import boto3


def document(doc):
    if isinstance(doc, dict):
        return doc
    text = urllib.parse.unquote(doc)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)


def statements(doc):
    s = document(doc)["Statement"]
    return s if isinstance(s, list) else [s]


def function(name):
    lam, iam = boto3.client("lambda"), boto3.client("iam")
    c = lam.get_function_configuration(FunctionName=name)
    role = c["Role"].rsplit("/", 1)[1]
    inline = []
    for p in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        inline += statements(iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"])
    attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
    return {
        "environment": c.get("Environment", {}).get("Variables", {}),
        "runtime": c.get("Runtime"),
        "handler": c.get("Handler"),
        "architectures": c.get("Architectures", []),
        "layers": [layer["Arn"] for layer in c.get("Layers", [])],
        "role": role,
        "inline": inline,
        "attached": attached,
    }


def policy(arn):
    iam = boto3.client("iam")
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return statements(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"])


def layer(arn):
    lam = boto3.client("lambda")
    name, number = arn.rsplit(":", 1)
    v = lam.get_layer_version(LayerName=name, VersionNumber=int(number))
    return {
        "compatible_architectures": v.get("CompatibleArchitectures", []),
        "code_size": v["Content"]["CodeSize"],
    }


if __name__ == "__main__":
    what, arg = sys.argv[1], sys.argv[2]
    print(json.dumps({"function": function, "policy": policy, "layer": layer}[what](arg)))
