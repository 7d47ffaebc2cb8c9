"""Schemathesis hooks for tests/api_fuzz/run.py (loaded through SCHEMATHESIS_HOOKS).

Schemathesis ships no serializer for archive bodies: `application/gzip` (tenant import) is
sent as the raw bytes of whatever was generated, so the route's own checks answer it.
"""

import inspect
import json

import schemathesis
from hypothesis.internal import lambda_sources

# CPython 3.11 before 3.11.8 (gh-106905) can raise `SystemError: AST constructor recursion
# depth mismatch` from `ast.parse` when it is called deep in a recursion, which Hypothesis
# does when it describes a lambda while building strategies for a deep schema: the run then
# stops with a "Runtime Error" that says nothing about the API (seen in CI on Python 3.11.7).
# The description is only used in reports: fall back to Hypothesis's own "unknown" form.
_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        params = str(inspect.signature(getattr(f, "__wrapped_target", f)))[1:-1]
        return f"lambda {params}: <unknown>" if params else "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description


@schemathesis.serializer("application/gzip", "application/x-tar", "application/zip")
def archive_body(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    if isinstance(value, str):
        return {"data": value.encode("utf-8")}
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return {"data": bytes(v % 256 for v in value)}
    return {"data": json.dumps(value).encode("utf-8")}
