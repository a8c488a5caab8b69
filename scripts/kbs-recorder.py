#!/usr/bin/env python3
"""A recording HTTPS relay for interop runs: forwards every request to the broker and writes
each exchange (method, path, request headers and body, status, response headers and body) as
one JSON line, so that a test can check what a foreign client sent and what it was answered.

    kbs-recorder.py --listen PORT --cert CERT --key KEY --upstream https://127.0.0.1:P \
        --ca CA --out exchanges.jsonl

It serves TLS with the broker's own certificate (so the client trusts it exactly as it would
the broker) and opens one upstream connection per client connection, so cookies and
keep-alive behave as they would against the broker. Test use only.
"""

import argparse
import base64
import http.client
import http.server
import json
import ssl
import sys
import threading
import urllib.parse

HOP = {"date", "server", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def text(body: bytes):
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    up = urllib.parse.urlsplit(args.upstream)
    upstream_ctx = ssl.create_default_context(cafile=args.ca)
    lock = threading.Lock()
    out = open(args.out, "a", encoding="utf-8")

    class Relay(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def relay(self):
            if not hasattr(self, "upstream"):
                self.upstream = http.client.HTTPSConnection(
                    up.hostname, up.port, context=upstream_ctx, timeout=30
                )
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            try:
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                resp = self.upstream.getresponse()
                rbody = resp.read()
            except (OSError, http.client.HTTPException):
                self.upstream.close()
                self.upstream = http.client.HTTPSConnection(
                    up.hostname, up.port, context=upstream_ctx, timeout=30
                )
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                resp = self.upstream.getresponse()
                rbody = resp.read()
            rheaders = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
            record = {
                "request": {
                    "method": self.command,
                    "path": self.path,
                    "headers": headers,
                    "body": text(body),
                },
                "response": {
                    "status": resp.status,
                    "headers": dict(rheaders),
                    "body": text(rbody),
                },
            }
            with lock:
                out.write(json.dumps(record) + "\n")
                out.flush()
            self.send_response(resp.status)
            for k, v in rheaders:
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(rbody)))
            self.end_headers()
            self.wfile.write(rbody)

        do_GET = do_POST = do_PUT = do_DELETE = relay

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.listen), Relay)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"relay listening on https://127.0.0.1:{args.listen}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
