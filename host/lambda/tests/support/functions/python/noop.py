"""noop: a Python function that does nothing, to time what the Runtime API
proxy adds to an invocation (benches/extension_hop.sh)."""


def handler(event, context):
    return {"ok": True}
