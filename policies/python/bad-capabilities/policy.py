"""A policy that reaches for what policies never get: a file, the
environment, the clock, randomness, a socket. Header `x-try` picks which.
Each attempt's outcome becomes the decision's reason, so the host's tests can
check that nothing real came back (built with WASI stubbed out, a call either
fails inside the policy or traps, and the host's fail-safe applies).
"""

import os
import socket
import time

from wit_world import WitWorld as Router
from wit_world.imports import request
from wit_world.imports.types import Decision, RouteConfig, Target_Qualifier, Traffic


def attempt(what):
    if what == "file":
        with open("/etc/passwd") as f:
            return f.read(200)
    if what == "env":
        return repr(dict(os.environ))
    if what == "clock":
        return repr(time.time())
    if what == "random":
        return os.urandom(8).hex()
    if what == "socket":
        s = socket.create_connection(("127.0.0.1", int(request.header("x-port") or "80")))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return "connected: " + s.recv(100).decode()
    return "nothing tried"


class WitWorld(Router):
    def configure(self, config: RouteConfig) -> None:
        pass

    def evaluate(self, explain: bool) -> Decision:
        what = request.header("x-try") or ""
        try:
            outcome = "got " + attempt(what)
        except Exception as e:  # the clean failure: an error inside the policy
            outcome = f"failed: {type(e).__name__}: {e}"
        return Decision(Target_Qualifier("stable"), Traffic.PRODUCTION, None, [], f"{what} {outcome}")
