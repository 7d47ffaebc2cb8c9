#!/usr/bin/env python3
"""Fuzzes the HTTP API from its own OpenAPI document with schemathesis.

Starts the real binary on a free port with a fresh data directory, creates a tenant admin
(with an agent, a web channel and a conversation, so paths can name real resources) and
signs in the platform admin, then runs schemathesis twice: as the tenant admin against every
operation, and as the platform admin against the tenant, user, audit and key routes. Checks:
no 5xx, status codes and bodies as documented, documented content types. Any failure, and a
panic in the server log, fails the run (exit 1). The seed is fixed, so a run is repeatable.

    python3 tests/api_fuzz/run.py                       # the bounded run .ci/run does
    python3 tests/api_fuzz/run.py --max-examples 200    # a longer run (README)
"""

import argparse
import base64
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT_EMAIL = "fuzz-root@example.com"
ROOT_PASSWORD = "fuzz-root-password-1"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


class FakeModel(http.server.BaseHTTPRequestHandler):
    """The model provider, an edge we do not own: an OpenAI-compatible double that answers
    every chat completion with "ok" (JSON or SSE) and lists one model."""

    def log_message(self, *args):
        pass

    def _json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._json({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fuzz"}]})

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            req = {}
        base = {"id": "chatcmpl-fuzz", "created": int(time.time()), "model": "fake-model"}
        if self.path.endswith("/embeddings"):
            self._json({"object": "list", "data": [], "model": "fake-model"})
        elif req.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            chunks = [
                {"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None},
                {"index": 0, "delta": {}, "finish_reason": "stop"},
            ]
            for c in chunks:
                ev = dict(base, object="chat.completion.chunk", choices=[c])
                self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
        else:
            self._json(dict(base, object="chat.completion", choices=[
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))


def fake_model():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if body is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def must(status, body, want, what):
    if status != want:
        sys.exit(f"api_fuzz: setting up {what} answered {status}: {body}")
    return body


def wait_healthy(base, proc, log_path):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"api_fuzz: the server exited ({proc.returncode}); log:\n{open(log_path).read()[-4000:]}")
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    sys.exit("api_fuzz: the server did not become healthy within 60 s")


def schemathesis_cmd():
    exe = shutil.which("schemathesis")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]


def run_pass(name, base, token, args, work, extra, config):
    cfg = os.path.join(work, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(config)
    report = os.path.join(work, f"{name}-report")
    cmd = schemathesis_cmd() + [
        "--config-file", cfg, "run", base + "/api/openapi.json",
        # The document offers a bearer token or X-API-Key; schemathesis fills in both, and an
        # X-API-Key takes precedence, so both carry the same (real) API key.
        "--header", f"Authorization: Bearer {token}",
        "--header", f"X-API-Key: {token}",
        "--checks", CHECKS,
        "--max-examples", str(args.max_examples),
        "--seed", str(args.seed),
        "--workers", str(args.workers),
        "--request-timeout", "30",
        "--no-shrink",
        "--report", "ndjson", "--report-dir", report,
    ] + extra
    shown = " ".join("***" if "ak_" in c else c for c in cmd[1:])
    print(f"== api_fuzz: {name}: {shown}", flush=True)
    started = time.monotonic()
    # In the scratch directory: schemathesis keeps a cache (.schemathesis/) where it runs.
    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = "hooks"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    rc = subprocess.call(cmd, cwd=work, env=env)
    print(f"== api_fuzz: {name}: exit {rc} in {time.monotonic() - started:.0f} s", flush=True)
    return rc, report


def seen_codes(report_dir):
    """Error codes in the server's answers, from the ndjson report (informational)."""
    codes = {}

    def walk(o):
        if isinstance(o, dict):
            body = o.get("$base64")
            if isinstance(body, str):
                try:
                    code = json.loads(base64.b64decode(body))["error"]["code"]
                    codes[code] = codes.get(code, 0) + 1
                except Exception:
                    pass
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    for root, _, files in os.walk(report_dir):
        for fn in files:
            if fn.endswith(".ndjson"):
                for line in open(os.path.join(root, fn), errors="replace"):
                    try:
                        walk(json.loads(line))
                    except ValueError:
                        pass
    return codes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.environ.get("AIGENTABLE_BIN", "target/debug/aigentable"))
    ap.add_argument("--max-examples", type=int, default=12)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the data directory and reports")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"api_fuzz: no binary at {args.binary} (cargo build first)")

    work = tempfile.mkdtemp(prefix="aigentable-api-fuzz-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    model = fake_model()
    env = dict(os.environ)
    env.update(
        {
            "ADMIN_EMAIL": ROOT_EMAIL,
            "ADMIN_PASSWORD": ROOT_PASSWORD,
            # The fuzzer sends thousands of requests from one address.
            "RATE_LIMIT_AUTH_PER_MIN": "0",
            "RATE_LIMIT_API_PER_MIN": "0",
            "RATE_LIMIT_UPLOAD_PER_MIN": "0",
            "RATE_LIMIT_VISITOR_PER_MIN": "0",
            "RATE_LIMIT_WIDGET_IP_PER_MIN": "0",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "warn",
            "EMBEDDINGS_PROVIDER": "none",
            # Tokens must outlive the run.
            "JWT_EXPIRES_IN": "2h",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{model.server_address[1]}/v1",
            "OPENAI_API_KEY": "sk-fuzz",
            "OPENAI_MODEL": "fake-model",
        }
    )
    for k in ("SMTP_URL", "PORT", "BIND", "DATA_DIR"):
        env.pop(k, None)
    log_path = os.path.join(work, "server.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [args.binary, "serve", "--data-dir", os.path.join(work, "data"), "--bind", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    failed = False
    try:
        wait_healthy(base, proc, log_path)
        admin = must(*call(base, "POST", "/api/auth/register", body={
            "email": "fuzz-admin@example.com", "password": "fuzz-admin-password",
            "name": "Fuzz", "tenantName": "Fuzz Shop"}), 201, "a tenant")
        staff = admin["accessToken"]
        tenant = admin["tenant"]["id"]
        agent = must(*call(base, "POST", "/api/agents", staff, {"name": "Fuzz agent"}), 201, "an agent")["id"]
        channel = must(*call(base, "POST", "/api/channels", staff, {
            "type": "web", "name": "Site", "agentId": agent,
            "settings": {"allowedOrigins": ["https://shop.example"]}}), 201, "a web channel")
        conv = must(*call(base, "POST", "/api/conversations", staff, {"agentId": agent}), 201, "a conversation")["id"]
        root = must(*call(base, "POST", "/api/auth/login", body={
            "email": ROOT_EMAIL, "password": ROOT_PASSWORD}), 200, "the platform admin")["accessToken"]
        widget_key = channel["settings"]["widgetKey"]
        staff_key = must(*call(base, "POST", "/api/api-keys", staff, {"name": "fuzz"}), 201, "a key")["secret"]
        root_key = must(*call(base, "POST", "/api/api-keys", root, {"name": "fuzz"}), 201, "a platform key")["secret"]

        # Real ids for the paths of reading and working routes, so they reach past the 404.
        # Deleting routes keep generated ids: they must not remove the fixtures mid-run.
        def bind(path, params, methods="GET|POST|PUT"):
            return (
                "[[operations]]\n"
                f'include-path = "{path}"\n'
                f'include-method-regex = "^({methods})$"\n'
                f"parameters = {json.dumps(params).replace(': ', ' = ').replace('{', '{ ').replace('}', ' }')}\n\n"
            )

        staff_config = (
            bind("/api/agents/{id}", {"path.id": agent}, "GET|PUT")
            + bind("/api/agents/{id}/test", {"path.id": agent})
            + bind("/api/channels/{id}", {"path.id": channel["id"]}, "GET")
            + bind("/api/conversations/{id}", {"path.id": conv})
            + bind("/api/conversations/{id}/messages", {"path.id": conv})
            + bind("/api/conversations/{id}/assign", {"path.id": conv})
            + bind("/api/tenants/{id}", {"path.id": tenant}, "GET")
            + bind("/api/tenants/{id}/users", {"path.id": tenant})
            + bind("/api/tenants/{id}/invitations", {"path.id": tenant}, "GET")
            + bind("/api/widget/{widgetKey}/config", {"path.widgetKey": widget_key})
            + bind("/api/widget/{widgetKey}/visitors", {"path.widgetKey": widget_key})
        )
        # Signing out would end the token the run uses; deleting routes get a pass of their own
        # at the end (they may remove the fixtures, the tenant included).
        common = ["--exclude-path", "/api/auth/logout"]
        passes = [
            ("tenant-admin", staff_key, common + ["--exclude-method", "DELETE"], staff_config),
            ("platform-admin", root_key,
             common + ["--exclude-method", "DELETE", "--include-tag-regex", "^(tenants|audit|api-keys|system)$"], ""),
            ("deletes", staff_key, common + ["--include-method", "DELETE"], ""),
        ]
        codes = {}
        for name, key, extra, config in passes:
            rc, report = run_pass(name, base, key, args, work, extra, config)
            failed = failed or rc != 0
            for k, v in seen_codes(report).items():
                codes[k] = codes.get(k, 0) + v
        print("== api_fuzz: error codes seen: " + ", ".join(sorted(codes)), flush=True)
        # Informational: documented codes this run did not provoke (many need a state the
        # fuzzer cannot reach: a suspended tenant, a busy hashing pool, a dead letter ...).
        # That every documented code has a producer is checked statically by the unit test
        # `every_code_used_in_src_is_in_the_table` (src/api/error_codes.rs).
        doc = json.load(urllib.request.urlopen(base + "/api/openapi.json", timeout=30))
        documented = set(doc.get("components", {}).get("schemas", {}).get("ErrorCode", {}).get("enum", []))
        if documented:
            print("== api_fuzz: documented codes not seen: " + ", ".join(sorted(documented - set(codes))), flush=True)
    finally:
        model.shutdown()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    panics = [l for l in open(log_path, errors="replace") if "panicked" in l]
    if panics:
        print("== api_fuzz: the server panicked:\n" + "".join(panics[:20]), flush=True)
        failed = True
    if args.keep or failed:
        print(f"== api_fuzz: data, server log and reports kept in {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        sys.exit(1)
    print("== api_fuzz: no failures", flush=True)


if __name__ == "__main__":
    main()
