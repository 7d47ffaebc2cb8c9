"""Schemathesis hooks for tests/api_fuzz/run.py (loaded through SCHEMATHESIS_HOOKS).

Schemathesis ships no serializer for archive bodies: `application/gzip` (tenant import) is
sent as the raw bytes of whatever was generated, so the route's own checks answer it.
"""

import json

import schemathesis


@schemathesis.serializer("application/gzip", "application/x-tar", "application/zip")
def archive_body(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    if isinstance(value, str):
        return {"data": value.encode("utf-8")}
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return {"data": bytes(v % 256 for v in value)}
    return {"data": json.dumps(value).encode("utf-8")}
