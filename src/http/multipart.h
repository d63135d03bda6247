// ParseMultipart: a bounded multipart/form-data parser (RFC 7578) for request bodies the server
// has already read under the route's body limit.
//
// kadr parses multipart itself instead of letting cpp-httplib do it (ADR 0013): httplib's
// parser counts neither parts nor part-header bytes (a chunked body of empty parts grows
// without bound) and matches every part-header line with a std::regex that costs ~0.7 s of CPU
// per 8 KB line. This one is linear in the body and refuses, with kTooLarge, more than
// `max_parts` parts or a part whose header block exceeds `max_header_bytes`.
//
// Thread-safety: a pure function. Exceptions: none.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "http/server.h"

namespace kadr::http {

struct MultipartLimits {
  // Parts in one body, empty ones included.
  std::size_t max_parts = 16;
  // Bytes of one part's header block (its lines and their CRLFs).
  std::size_t max_header_bytes = 8192;
};

// The parts of `body`, a multipart/form-data body sent with Content-Type `content_type` (whose
// `boundary` parameter delimits the parts; quoted or not). Each part needs a
// `Content-Disposition: form-data; name="…"` header; `filename` and the part's Content-Type are
// optional. A preamble before the first boundary and an epilogue after the last are ignored.
// Errors: kInvalidArgument (no or bad boundary, a part without a name, no closing boundary,
// a malformed header), kTooLarge (over `limits`).
Result<std::vector<MultipartFile>> ParseMultipart(std::string_view content_type,
                                                  std::string_view body,
                                                  const MultipartLimits& limits = {});

// As ParseMultipart, but each part's bytes are a view into `body` (MultipartFile::view), valid
// while `body` is: nothing is copied.
Result<std::vector<MultipartFile>> ParseMultipartViews(std::string_view content_type,
                                                       std::string_view body,
                                                       const MultipartLimits& limits = {});

}  // namespace kadr::http
