"""A stand-in function version for local demos and tests: answers every
request with JSON naming its version and echoing what Switchyard sent it.

    python3 policies/demo/upstream.py PORT VERSION
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as a real function URL or container answers: the proxy
    # reuses its connections. Head and body go out in two writes: without
    # TCP_NODELAY the body would wait for the client's delayed ACK (40 ms).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        reply = json.dumps({
            "version": VERSION,
            "method": self.command,
            "path": self.path,
            "traffic": self.headers.get("x-switchyard-traffic"),
            "context": {k[len("x-switchyard-ctx-"):]: v for k, v in self.headers.items()
                        if k.lower().startswith("x-switchyard-ctx-")},
            "body": body,
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port, VERSION = int(sys.argv[1]), sys.argv[2]
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
