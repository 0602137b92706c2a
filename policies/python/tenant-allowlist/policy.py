"""In synthetic mode, requests from the tenants listed in flag `qa-tenants`
(comma-separated; the tenant is header `x-tenant`) go to the candidate as
synthetic traffic. Everything else goes to stable as production."""

from wit_world import WitWorld as Router
from wit_world.imports import request
from wit_world.imports.types import Decision, Mode, RouteConfig, Target_Qualifier, Traffic

config = None  # the route config: function, mode, versions, flags
tenants = []


def lookup(pairs, key):
    """The value of `key` in a list of (key, value) pairs."""
    return next((v for k, v in pairs if k == key), None)


def decision(role, traffic, reason):
    target = lookup(config.versions, role)
    if target is None:
        target = lookup(config.versions, "stable") or "stable"
        reason = f"no '{role}' version configured; {reason}"
    return Decision(Target_Qualifier(target), traffic, None, [], reason)


class WitWorld(Router):
    def configure(self, route_config: RouteConfig) -> None:
        """Once per route-config version: parse the flags here."""
        global config, tenants
        config = route_config
        flag = lookup(config.flags, "qa-tenants") or ""
        tenants = [t.strip() for t in flag.split(",") if t.strip()]

    def evaluate(self, explain: bool) -> Decision:
        """Once per request."""
        if config.mode == Mode.PRODUCTION:
            return decision("stable", Traffic.PRODUCTION, "production mode")
        tenant = request.header("x-tenant")
        if tenant is not None and tenant in tenants:
            return decision("candidate", Traffic.SYNTHETIC, f"QA tenant {tenant}")
        return decision("stable", Traffic.PRODUCTION, "not a QA tenant")
