// The one table from kadr's StatusCode to an HTTP status, and the JSON error body that goes
// with it (docs/protocol.md "Errors"). Pure functions; thread-safe.
#pragma once

#include <string>

#include "common/status.h"

namespace kadr::http {

// HTTP status for a code: kOk -> 200, kInvalidArgument -> 400, kNotFound -> 404,
// kTooLarge -> 413, kUnsupported -> 415, kResourceExhausted -> 429, kFailedPrecondition -> 409,
// kCancelled -> 499, kInternal -> 500, kUnavailable -> 503, kDeadlineExceeded -> 504.
int HttpStatusFor(StatusCode code);

// The code to report for an error status that the HTTP layer itself produced (404 for an
// unknown route, 413 for an oversized body, ...): the inverse of HttpStatusFor for the statuses
// in the table, kInvalidArgument for other 4xx and kInternal for anything else.
StatusCode StatusCodeForHttp(int http_status);

// `{"error":{"code":"invalid_argument","message":"truncated JPEG"}}`. Messages are escaped as
// JSON strings; bytes that are not valid UTF-8 are replaced with U+FFFD.
std::string ErrorBody(const Status& status);

}  // namespace kadr::http
