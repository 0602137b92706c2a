"""synthetic-header in Python: the same decisions as policies/synthetic-header.

QA tags requests with a header and, while the function is in synthetic mode,
those requests reach the candidate version as synthetic traffic; everything
else reaches stable as production.

Flags: `synthetic-header` (default `x-switchyard-synthetic`; its value must
be `true` or `1`) and optional `mirror-role` (e.g. `candidate`): requests
routed to stable are also mirrored to that version.

Build, test:
    switchyard policy build policies/python/synthetic-header
    switchyard policy test policies/python/synthetic-header/target/synthetic-header.component.wasm \
        policies/synthetic-header/cases.json
"""

from wit_world import WitWorld as Router
from wit_world.imports import request
from wit_world.imports.types import Decision, Mode, RouteConfig, Target_Qualifier, Traffic

_ASCII_SPACE = " \t\n\r\x0b\x0c"


def lookup(pairs, key):
    """The first value of `key` in a list of pairs (as the Rust SDK does)."""
    for k, v in pairs:
        if k == key:
            return v
    return None


def lookup_or(pairs, key, default):
    value = lookup(pairs, key)
    return default if value is None else value


def ascii_lower(s):
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def is_true(value):
    v = value.strip(_ASCII_SPACE)
    return v == "1" or ascii_lower(v) == "true"


class Settings:
    """What `configure` parses once per route-config version."""

    def __init__(self, config: RouteConfig):
        self.config = config
        self.header = ascii_lower(
            lookup_or(config.flags, "synthetic-header", "x-switchyard-synthetic"))
        self.stable = Target_Qualifier(lookup_or(config.versions, "stable", "stable"))
        role = lookup(config.flags, "mirror-role")
        mirror = lookup(config.versions, role) if role is not None else None
        self.mirror = None if mirror is None else Target_Qualifier(mirror)


_settings = None


class WitWorld(Router):
    def configure(self, config: RouteConfig) -> None:
        global _settings
        _settings = Settings(config)

    def evaluate(self, explain: bool) -> Decision:
        s = _settings
        if s.config.mode == Mode.PRODUCTION:
            return Decision(s.stable, Traffic.PRODUCTION, s.mirror, [],
                            "production mode: everything to stable")
        value = request.header(s.header)
        if value is not None and is_true(value):
            reason = f"synthetic mode and {s.header} is true"
            candidate = lookup(s.config.versions, "candidate")
            if candidate is None:
                return Decision(s.stable, Traffic.SYNTHETIC, None, [],
                                "no 'candidate' version configured; " + reason)
            return Decision(Target_Qualifier(candidate), Traffic.SYNTHETIC, None, [], reason)
        return Decision(s.stable, Traffic.PRODUCTION, s.mirror, [],
                        f"synthetic mode, no true {s.header}")
