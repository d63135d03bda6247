// StreamSpec: what a user asked for when adding a stream (docs/api.md "Streams"), its JSON
// request parser and validator, and the storage form the StreamStore keeps.
//
// The spec holds the source as given, credentials included (the capture needs them); every
// form that leaves the process (API responses, logs) uses capture::RedactUrl(source).
// Pure functions and plain values; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace kadr::camera {

enum class StreamMode {
  kLive,      // bounded latency: frames that cannot be sent in time are dropped (counted)
  kLossless,  // every frame is sent: the reader waits for the pipeline (files)
};
std::string_view StreamModeName(StreamMode mode);  // "live", "lossless"

struct StreamSpec {
  std::string id;      // "s" + 16 hex digits; assigned by the service
  std::string name;    // display name; default: the redacted source
  std::string source;  // as given (credentials included): never print it, see RedactUrl
  std::string model;
  std::optional<double> fps;  // target frame rate (decimation); unset: the source's own
  StreamMode mode = StreamMode::kLive;
  bool loop = false;     // files: start again at the end
  int max_width = 1280;  // frames larger than this are scaled down (aspect kept)
  int max_height = 1280;
  int window = 2;               // frames in flight (published, no result yet), 1..16
  int max_latency_ms = 2000;    // deadline of a frame after its capture
  std::optional<float> conf;    // confidence threshold sent with each frame
  std::int64_t created_ms = 0;  // Unix ms
};

// A POST /api/v1/streams body taken apart.
struct StreamRequest {
  StreamSpec spec;    // id and created_ms unset
  bool probe = true;  // open the source once before creating the stream
};

// Parses and validates a request body. `default_model` is used when "model" is absent (an
// empty default makes "model" required). Unknown fields are rejected, so typos do not pass
// silently. kInvalidArgument naming the field: "fps must be a number in (0, 1000]".
Result<StreamRequest> ParseStreamRequest(std::string_view body, std::string_view default_model);

// The spec as stored (all fields, credentials included) and back. kInvalidArgument for a
// record that does not parse or validate.
std::string SpecToStorageJson(const StreamSpec& spec);
// The spec as the API shows it: credentials in the source redacted, unset fps / conf null.
nlohmann::json SpecToPublicJson(const StreamSpec& spec);
Result<StreamSpec> SpecFromStorageJson(std::string_view json);

}  // namespace kadr::camera
