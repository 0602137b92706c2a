#!/usr/bin/env python3
"""Transforms a SAM template into the plain CloudFormation it deploys as.

    python3 deploy/sam-translate.py deploy/router.yaml > deploy/router.cfn.json

With AWS's own translator (PyPI: aws-sam-translator), offline: the templates
here use no managed-policy names, so nothing is looked up in IAM. The output
deploys on CloudFormation without the AWS::Serverless transform (and so on
the AWS API emulator, which has none). `--check FILE` exits 1 when FILE is not
what the template transforms to (CI keeps the committed copies current).
"""

import argparse
import difflib
import json
import os
import sys

# The translator needs a region for ARNs it builds; it puts none of its own
# into these templates (they use ${AWS::Region}).
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

try:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse
except ImportError:
    sys.exit("sam-translate.py: needs aws-sam-translator: python3 -m pip install 'aws-sam-translator==1.110.0'")


class NoManagedPolicies:
    """The templates name no AWS managed policy by name; looking one up would fail."""

    def load(self):
        return {}


def translate(path):
    with open(path) as f:
        sam = yaml_parse(f.read())
    return json.dumps(transform(sam, {}, NoManagedPolicies()), indent=2, sort_keys=True) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("template")
    p.add_argument("--check", metavar="FILE", help="compare with FILE instead of printing")
    a = p.parse_args()
    out = translate(a.template)
    if a.check is None:
        sys.stdout.write(out)
        return
    with open(a.check) as f:
        have = f.read()
    if have != out:
        sys.stdout.writelines(difflib.unified_diff(have.splitlines(True), out.splitlines(True), a.check, "transformed"))
        sys.exit(f"{a.check} is not what {a.template} transforms to; regenerate it: "
                 f"python3 deploy/sam-translate.py {a.template} > {a.check}")


if __name__ == "__main__":
    main()
