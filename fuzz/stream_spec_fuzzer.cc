// Stream specs (camera/stream_runner.h) and source strings (capture/frame_source.h): the body
// of POST /api/v1/streams, the records the stream store reads back at start, and the source
// URL inside them (credentials included).
//
// Input: the JSON text of a request body, also read as a stored record, and as a bare source
// string (ParseSource, RedactUrl).
// Properties: an accepted request has a source ParseSource accepts, a model, window in 1..16
// and positive frame bounds; its storage form (with an id and a time, as the service adds
// them) reads back to the same spec; a parsed network source's `redacted` is RedactUrl of
// its `uri`, with a host and a port in 1..65535.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "camera/stream_runner.h"
#include "capture/frame_source.h"
#include "check.h"

namespace {

using kadr::camera::StreamSpec;

void CheckSpec(const StreamSpec& spec) {
  KADR_FUZZ_CHECK(kadr::capture::ParseSource(spec.source).has_value(),
                  "accepted a stream whose source does not parse");
  KADR_FUZZ_CHECK(!spec.model.empty(), "accepted a stream without a model");
  KADR_FUZZ_CHECK(spec.window >= 1 && spec.window <= 16, "window out of 1..16");
  KADR_FUZZ_CHECK(spec.max_width > 0 && spec.max_height > 0, "frame bounds not positive");
  if (spec.fps) KADR_FUZZ_CHECK(*spec.fps > 0, "fps not positive");
  if (spec.conf) KADR_FUZZ_CHECK(*spec.conf >= 0 && *spec.conf <= 1, "conf out of [0, 1]");
}

void CheckStorageRoundTrip(StreamSpec spec) {
  spec.id = "s0123456789abcdef";
  spec.created_ms = 1'700'000'000'000;
  auto back = kadr::camera::SpecFromStorageJson(kadr::camera::SpecToStorageJson(spec));
  KADR_FUZZ_CHECK(back.has_value(), "a stored spec does not read back");
  KADR_FUZZ_CHECK(back->id == spec.id && back->source == spec.source && back->model == spec.model &&
                      back->name == spec.name && back->fps == spec.fps && back->mode == spec.mode &&
                      back->loop == spec.loop && back->max_width == spec.max_width &&
                      back->max_height == spec.max_height && back->window == spec.window &&
                      back->max_latency_ms == spec.max_latency_ms &&
                      back->created_ms == spec.created_ms,
                  "a stored spec reads back different");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  for (const std::string_view default_model : {std::string_view("null"), std::string_view()}) {
    if (auto request = kadr::camera::ParseStreamRequest(text, default_model)) {
      CheckSpec(request->spec);
      CheckStorageRoundTrip(request->spec);
      (void)kadr::camera::SpecToPublicJson(request->spec)
          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  if (auto stored = kadr::camera::SpecFromStorageJson(text)) {
    CheckSpec(*stored);
    (void)kadr::camera::SpecToPublicJson(*stored).dump(-1, ' ', false,
                                                       nlohmann::json::error_handler_t::replace);
  }

  if (auto location = kadr::capture::ParseSource(text)) {
    // Network sources carry credentials; files and devices are shown as they are.
    if (location->kind == kadr::capture::SourceKind::kRtsp ||
        location->kind == kadr::capture::SourceKind::kHttp) {
      KADR_FUZZ_CHECK(location->redacted == kadr::capture::RedactUrl(location->uri),
                      "a network source's redacted form is not RedactUrl of its uri");
      KADR_FUZZ_CHECK(!location->host.empty(), "a network source without a host");
      KADR_FUZZ_CHECK(location->port >= 1 && location->port <= 65535, "port out of range");
    }
  }
  (void)kadr::capture::RedactUrl(text);
  return 0;
}
