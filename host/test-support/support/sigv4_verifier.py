"""A loopback endpoint that checks AWS Signature Version 4 as a Lambda
function URL with `AuthType: AWS_IAM` does, for the `aws-iam` auth tests.

The signature is recomputed with botocore's own SigV4 signer (an
implementation independent of the Rust one under test) from the request as
received, over the headers the request says it signed, with the secret of
the access key it names. Known keys: the emulator's test credentials
(`test` / `test`).

    sigv4_verifier.py PORT

Answers 200 `{"verified": true, "service", "region", "signed-headers",
"path", "traffic"}`, or 403 with AWS's error type and message:
`MissingAuthenticationTokenException` (no signature),
`UnrecognizedClientException` (unknown access key),
`InvalidSignatureException` (the signature does not match).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SECRETS = {"test": "test"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, error_type=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def verify(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
        auth = self.headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return self.answer(
                403,
                {"message": "Missing Authentication Token"},
                "MissingAuthenticationTokenException",
            )
        parts = dict(
            p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(",")
        )
        key, date, region, service, _ = parts["Credential"].split("/")
        secret = SECRETS.get(key)
        if secret is None:
            return self.answer(
                403,
                {"message": "The security token included in the request is invalid."},
                "UnrecognizedClientException",
            )
        signed = parts["SignedHeaders"].split(";")
        headers = {h: self.headers[h] for h in signed if self.headers.get(h) is not None}
        request = AWSRequest(
            method=self.command,
            url=f"http://{self.headers['host']}{self.path}",
            data=body,
            headers=headers,
        )
        request.context["timestamp"] = self.headers["x-amz-date"]
        signer = SigV4Auth(Credentials(key, secret), service, region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != parts["Signature"]:
            return self.answer(
                403,
                {
                    "message": "The request signature we calculated does not match the "
                    "signature you provided. Check your AWS Secret Access Key and signing method."
                },
                "InvalidSignatureException",
            )
        self.answer(
            200,
            {
                "verified": True,
                "service": service,
                "region": region,
                "signed-headers": signed,
                "path": self.path,
                "traffic": self.headers.get("x-switchyard-traffic"),
            },
        )

    do_GET = verify
    do_POST = verify


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
