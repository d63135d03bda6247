"""kadr's server-error check for schemathesis (scripts/fuzz-api.sh, docs/adr/0012-fuzzing.md).

`kadr_not_a_server_error` is schemathesis' `not_a_server_error` (any 5xx fails the run) with
the few 5xx answers that docs/api.md documents for a cause outside the server, each matched on
its route, status and error code, never on the status alone:

1. 504 `deadline_exceeded` from POST /api/v1/detect or /api/v1/jobs when the request set
   `timeout_ms` itself: the client asked for a deadline (1 ms, say) and kadr answers as
   documented when it passes. Without an explicit `timeout_ms` (30 s by default) a 504 fails.
2. 502 `source_unreachable` from POST /api/v1/streams: the camera the request names (a
   generated rtsp:// or http:// URL) cannot be opened, which is what 502 documents.
3. 501 `unsupported` for a request whose method kadr serves on no route (TRACE, CONNECT,
   PRI, made-up ones), which schemathesis' coverage phase sends to every path:
   docs/security.md ("HTTP") documents this answer, before any body is read.
4. GET /api/v1/jobs/{id}/result of a job that failed with `deadline_exceeded`: "failed: the
   job's error with its status". Checked against the job itself (GET /api/v1/jobs/{id} must
   say state `failed` with that code), so a 5xx of the result route itself still fails.

Everything else at 500 and above fails, 503 included: `kadr up` is started with a worker and
fuzzed only once /readyz says 200, by one schemathesis worker, so no 503 is expected.
"""

import json
import urllib.parse

import requests
import schemathesis


# The methods kadr's HTTP server routes (http/server.h); any other gets 501.
_ROUTED_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _error_code(body: bytes):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _sets_timeout(case) -> bool:
    if case.query and "timeout_ms" in case.query:
        return True
    return isinstance(case.body, dict) and "timeout_ms" in case.body


def _job_failed_with(response, job_id: str, code: str) -> bool:
    parts = urllib.parse.urlsplit(response.request.url)
    url = f"{parts.scheme}://{parts.netloc}/api/v1/jobs/{urllib.parse.quote(job_id, safe='')}"
    try:
        job = requests.get(url, timeout=10).json()
    except (requests.RequestException, ValueError):
        return False
    error = job.get("error") or {}
    return job.get("state") == "failed" and error.get("code") == code


@schemathesis.check
def kadr_not_a_server_error(ctx, response, case):
    """No 5xx answer, but the ones docs/api.md documents for a cause outside the server."""
    status = response.status_code
    if status < 500:
        return None
    code = _error_code(response.content)
    method = case.operation.method.upper()  # the operation's; the coverage phase may send another
    path = case.operation.path
    if (status == 504 and code == "deadline_exceeded" and method == "POST"
            and path in ("/api/v1/detect", "/api/v1/jobs") and _sets_timeout(case)):
        return None
    if (status == 502 and code == "source_unreachable" and method == "POST"
            and path == "/api/v1/streams"):
        return None
    if (status == 501 and code == "unsupported"
            and response.request.method.upper() not in _ROUTED_METHODS):
        return None
    if (status == 504 and code == "deadline_exceeded" and method == "GET"
            and path == "/api/v1/jobs/{id}/result"
            and _job_failed_with(response, str(case.path_parameters.get("id", "")), code)):
        return None
    raise AssertionError(f"Server error {status} {code or ''} on {method} {path}: "
                         f"{response.content[:300]!r}")
