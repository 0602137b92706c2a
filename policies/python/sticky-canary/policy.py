"""sticky-canary in Python: the same decisions as policies/sticky-canary.

`canary-percent` (0-100, resolution 0.01 %) of users go to the candidate,
keyed by the header named in `sticky-header` (default `x-user-id`). A user is
in the canary when the host's `bucket(key, salt)` is below the percentage in
basis points, so the same key always gets the same target in every language.
The salt is flag `sticky-salt`, default the function name. No key: stable.

Build, test:
    switchyard policy build policies/python/sticky-canary
    switchyard policy test policies/python/sticky-canary/target/sticky-canary.component.wasm \
        policies/sticky-canary/cases.json
"""

import re

from wit_world import WitWorld as Router
from wit_world.imports import request
from wit_world.imports.types import Decision, RouteConfig, Target_Qualifier, Traffic

_ASCII_SPACE = " \t\n\r\x0b\x0c"
# What Rust's `str::parse::<f64>` accepts (inf and nan are never in range).
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.IGNORECASE)
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\r": "\\r", "\n": "\\n", "\0": "\\0"}


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


def quoted(s):
    """A string quoted as Rust's `{:?}` does, for reasons identical to Rust's."""
    out = []
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F:
            out.append("\\u{%x}" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def basis_points(raw):
    """The canary share in basis points, or a reason string when the flag is bad."""
    if raw is None:
        return 0
    text = raw.strip(_ASCII_SPACE)
    if _FLOAT.fullmatch(text):
        p = float(text)
        if 0.0 <= p <= 100.0:
            x = p * 100.0
            whole = int(x)  # round half away from zero, as Rust's f64::round
            return whole + 1 if x - whole >= 0.5 else whole
    return f"canary-percent {quoted(raw)} is not a number in 0..=100"


class Settings:
    """What `configure` parses once per route-config version."""

    def __init__(self, config: RouteConfig):
        self.threshold = basis_points(lookup(config.flags, "canary-percent"))
        self.header = ascii_lower(lookup_or(config.flags, "sticky-header", "x-user-id"))
        self.salt = lookup_or(config.flags, "sticky-salt", config.function)
        self.stable = Target_Qualifier(lookup_or(config.versions, "stable", "stable"))
        candidate = lookup(config.versions, "candidate")
        self.candidate = None if candidate is None else Target_Qualifier(candidate)


_settings = None


class WitWorld(Router):
    def configure(self, config: RouteConfig) -> None:
        global _settings
        _settings = Settings(config)

    def evaluate(self, explain: bool) -> Decision:
        s = _settings
        if isinstance(s.threshold, str):
            return Decision(s.stable, Traffic.PRODUCTION, None, [], s.threshold)
        bucket = request.header_bucket(s.header, s.salt)
        if bucket is None:
            return Decision(s.stable, Traffic.PRODUCTION, None, [], "no sticky key")
        if bucket < s.threshold:
            if s.candidate is None:
                return Decision(s.stable, Traffic.PRODUCTION, None, [],
                                "no 'candidate' version configured; in canary")
            return Decision(s.candidate, Traffic.PRODUCTION, None, [], "in canary")
        return Decision(s.stable, Traffic.PRODUCTION, None, [], "not in canary")
