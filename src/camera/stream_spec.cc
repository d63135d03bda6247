#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "camera/stream_runner.h"
#include "capture/frame_source.h"

namespace kadr::camera {
namespace {

using nlohmann::json;

// A stream's display name, bytes: the API refuses a longer one and the store one it reads.
constexpr std::size_t kMaxNameBytes = 200;

Status Field(std::string_view name, std::string_view rule) {
  return InvalidArgumentError(std::string(name) + " " + std::string(rule));
}

Result<int> IntField(const json& j, std::string_view name, int lo, int hi) {
  const json& v = j.at(std::string(name));
  const std::string rule =
      "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (!v.is_number()) return Field(name, rule);
  const double d = v.get<double>();
  if (!std::isfinite(d) || d != std::floor(d) || d < lo || d > hi) return Field(name, rule);
  return static_cast<int>(d);
}

// Fields shared by the request and the storage form; `storage` also reads id / created_ms.
Result<StreamSpec> SpecFromJson(const json& j, std::string_view default_model, bool storage) {
  StreamSpec spec;
  if (!j.contains("source") || j["source"].is_null()) {
    return InvalidArgumentError("source is required (rtsp://, http(s)://, /dev/videoN or a file)");
  }
  if (!j["source"].is_string()) return Field("source", "must be a string");
  spec.source = j["source"].get<std::string>();
  ASSIGN_OR_RETURN(const capture::SourceLocation location, capture::ParseSource(spec.source));

  if (j.contains("model") && !j["model"].is_null()) {
    if (!j["model"].is_string() || j["model"].get<std::string>().empty()) {
      return Field("model", "must be a non-empty string");
    }
    spec.model = j["model"].get<std::string>();
  } else {
    spec.model = std::string(default_model);
  }
  if (spec.model.empty()) return InvalidArgumentError("model is required");
  if (spec.model.size() > 200) return Field("model", "is longer than 200 characters");

  if (j.contains("name") && !j["name"].is_null()) {
    if (!j["name"].is_string()) return Field("name", "must be a string");
    spec.name = j["name"].get<std::string>();
    if (spec.name.size() > kMaxNameBytes) return Field("name", "is longer than 200 characters");
  }
  if (spec.name.empty()) spec.name = location.redacted;
  // A display name is shown and logged: it must not smuggle credentials either.
  spec.name = capture::RedactUrl(spec.name);
  // A default name (a long source) or a redacted one ("***" for a short password) may pass
  // the limit the store checks when it reads the stream back: cut it here, at a character
  // boundary, so that what is accepted is what comes back after a restart.
  if (spec.name.size() > kMaxNameBytes) {
    std::size_t cut = kMaxNameBytes;
    while (cut > 0 && (static_cast<unsigned char>(spec.name[cut]) & 0xC0) == 0x80) --cut;
    spec.name.resize(cut);
  }

  if (j.contains("fps") && !j["fps"].is_null()) {
    const json& v = j["fps"];
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() <= 0 ||
        v.get<double>() > 1000) {
      return Field("fps", "must be a number in (0, 1000]");
    }
    spec.fps = v.get<double>();
  }
  if (j.contains("mode") && !j["mode"].is_null()) {
    const json& v = j["mode"];
    if (v == "live") {
      spec.mode = StreamMode::kLive;
    } else if (v == "lossless") {
      spec.mode = StreamMode::kLossless;
    } else {
      return Field("mode", "must be \"live\" or \"lossless\"");
    }
  }
  const bool is_file = location.kind == capture::SourceKind::kFile;
  spec.loop = is_file && spec.mode == StreamMode::kLive;
  if (j.contains("loop") && !j["loop"].is_null()) {
    if (!j["loop"].is_boolean()) return Field("loop", "must be true or false");
    if (j["loop"].get<bool>() && !is_file) return Field("loop", "applies to video files only");
    spec.loop = j["loop"].get<bool>();
  }
  if (j.contains("max_width") && !j["max_width"].is_null()) {
    ASSIGN_OR_RETURN(spec.max_width, IntField(j, "max_width", 16, 16384));
  }
  if (j.contains("max_height") && !j["max_height"].is_null()) {
    ASSIGN_OR_RETURN(spec.max_height, IntField(j, "max_height", 16, 16384));
  }
  if (j.contains("window") && !j["window"].is_null()) {
    ASSIGN_OR_RETURN(spec.window, IntField(j, "window", 1, 16));
  }
  if (j.contains("max_latency_ms") && !j["max_latency_ms"].is_null()) {
    ASSIGN_OR_RETURN(spec.max_latency_ms, IntField(j, "max_latency_ms", 100, 600000));
  }
  if (j.contains("conf") && !j["conf"].is_null()) {
    const json& v = j["conf"];
    if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1) {
      return Field("conf", "must be a number in [0, 1]");
    }
    spec.conf = v.get<float>();
  }
  if (storage) {
    if (!j.contains("id") || !j["id"].is_string()) return Field("id", "is missing");
    spec.id = j["id"].get<std::string>();
    if (j.contains("created_ms") && j["created_ms"].is_number_integer()) {
      spec.created_ms = j["created_ms"].get<std::int64_t>();
    }
  }
  return spec;
}

}  // namespace

std::string_view StreamModeName(StreamMode mode) {
  return mode == StreamMode::kLossless ? "lossless" : "live";
}

Result<StreamRequest> ParseStreamRequest(std::string_view body, std::string_view default_model) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError("the body is not valid JSON");
  if (!j.is_object()) return InvalidArgumentError("the body must be a JSON object");
  static const std::set<std::string> kKnown = {
      "source",     "model",  "name",           "fps",  "mode", "loop", "max_width",
      "max_height", "window", "max_latency_ms", "conf", "probe"};
  for (const auto& [key, value] : j.items()) {
    if (!kKnown.contains(key)) {
      return InvalidArgumentError("unknown field '" + capture::RedactUrl(key) + "'");
    }
  }
  StreamRequest request;
  ASSIGN_OR_RETURN(request.spec, SpecFromJson(j, default_model, /*storage=*/false));
  if (j.contains("probe") && !j["probe"].is_null()) {
    if (!j["probe"].is_boolean()) return Field("probe", "must be true or false");
    request.probe = j["probe"].get<bool>();
  }
  return request;
}

namespace {

// The spec's fields; unset fps / conf are null. The public form redacts the source's
// credentials; the stored one keeps them (the capture needs them).
nlohmann::json SpecJson(const StreamSpec& spec, bool redact) {
  using nlohmann::json;
  return {{"id", spec.id},
          {"name", spec.name},
          {"source", redact ? capture::RedactUrl(spec.source) : spec.source},
          {"model", spec.model},
          {"fps", spec.fps ? json(*spec.fps) : json(nullptr)},
          {"mode", StreamModeName(spec.mode)},
          {"loop", spec.loop},
          {"max_width", spec.max_width},
          {"max_height", spec.max_height},
          {"window", spec.window},
          {"max_latency_ms", spec.max_latency_ms},
          {"conf", spec.conf ? json(*spec.conf) : json(nullptr)},
          {"created_ms", spec.created_ms}};
}

}  // namespace

nlohmann::json SpecToPublicJson(const StreamSpec& spec) { return SpecJson(spec, true); }

Status PublicSourceError(const Status& error, std::string_view source) {
  Status redacted(error.code(), capture::RedactUrl(error.message()));
  if (error.ok() || error.code() == StatusCode::kPermissionDenied ||
      error.code() == StatusCode::kInvalidArgument) {
    return redacted;
  }
  const auto location = capture::ParseSource(source);
  if (!location || (location->kind != capture::SourceKind::kRtsp &&
                    location->kind != capture::SourceKind::kHttp)) {
    return redacted;
  }
  return UnavailableError("cannot open the source " + location->redacted +
                          ": no video stream answered (the server log has the reason)");
}

std::string SpecToStorageJson(const StreamSpec& spec) { return SpecJson(spec, false).dump(); }

Result<StreamSpec> SpecFromStorageJson(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError("stored stream is not a JSON object");
  }
  return SpecFromJson(j, "", /*storage=*/true);
}

}  // namespace kadr::camera
