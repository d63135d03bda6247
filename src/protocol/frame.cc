#include "protocol/frame.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <sstream>

#include <nlohmann/json.hpp>

#include "protocol/json_fields.h"

namespace kadr::protocol {
namespace {

using nlohmann::json;

std::string Sanitize(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

Result<std::int64_t> ParseInt(const std::string& name, const std::string& v) {
  std::int64_t out = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size()) {
    return InvalidArgumentError("header " + name + " is not an integer: '" + v + "'");
  }
  return out;
}

Result<float> ParseUnit(const std::string& name, const std::string& v) {
  try {
    size_t used = 0;
    const float f = std::stof(v, &used);
    if (used == v.size() && f >= 0 && f <= 1) return f;
  } catch (const std::exception&) {
  }
  return InvalidArgumentError("header " + name + " must be a number in [0, 1]: '" + v + "'");
}

}  // namespace

std::string FramesTopic(std::string_view model) {
  return std::string(kFramesTopicPrefix) + Sanitize(model);
}

bool IsValidTopicName(std::string_view topic) {
  if (topic.empty() || topic.size() > 249 || topic == "." || topic == "..") return false;
  return Sanitize(topic) == topic;
}

bool IsAllowedReplyTopic(std::string_view topic, const std::vector<std::string>& prefixes) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes) {
    if (topic.starts_with(p)) return true;
  }
  return false;
}

bool IsTrackedKind(std::string_view k) { return k == kind::kVideo || k == kind::kLive; }

std::string WorkerGroup(std::string_view model) {
  return std::string(kWorkerGroupPrefix) + Sanitize(model);
}

void EncodeFrameHeaders(const FrameMeta& m, bus::Headers& h) {
  h.Set(header::kSchema, std::to_string(kProtocolVersion));
  h.Set(header::kFrameId, m.frame_id);
  if (!m.stream_id.empty()) h.Set(header::kStreamId, m.stream_id);
  h.Set(header::kSequence, std::to_string(m.sequence));
  if (m.capture_ms) h.Set(header::kCaptureMs, std::to_string(m.capture_ms));
  if (m.deadline_ms) h.Set(header::kDeadlineMs, std::to_string(*m.deadline_ms));
  if (!m.model.empty()) h.Set(header::kModel, m.model);
  if (!m.reply_to.empty()) h.Set(header::kReplyTo, m.reply_to);
  if (!m.annotated_to.empty()) h.Set(header::kAnnotatedTo, m.annotated_to);
  if (!m.source.empty()) h.Set(header::kSource, m.source);
  if (!m.correlation_id.empty()) h.Set(header::kCorrelationId, m.correlation_id);
  h.Set(header::kContentType, "image/jpeg");
  if (m.options.confidence) h.Set(header::kConfidence, std::to_string(*m.options.confidence));
  if (m.options.iou) h.Set(header::kIou, std::to_string(*m.options.iou));
  if (!m.options.classes.empty()) {
    std::string s;
    for (int c : m.options.classes) {
      if (!s.empty()) s += ',';
      s += std::to_string(c);
    }
    h.Set(header::kClasses, s);
  }
  if (!m.draw) h.Set(header::kDraw, "0");
  if (!m.kind.empty()) h.Set(header::kKind, m.kind);
  if (m.report_width > 0 && m.report_height > 0) {
    h.Set(header::kReportSize,
          std::to_string(m.report_width) + "x" + std::to_string(m.report_height));
  }
}

Result<FrameMeta> DecodeFrameHeaders(const bus::Headers& h) {
  FrameMeta m;
  if (auto v = h.Get(header::kSchema); v && *v != std::to_string(kProtocolVersion)) {
    return InvalidArgumentError("header " + std::string(header::kSchema) +
                                " has unsupported protocol version '" + *v +
                                "' (supported: " + std::to_string(kProtocolVersion) + ")");
  }
  auto id = h.Get(header::kFrameId);
  if (!id || id->empty()) return InvalidArgumentError("missing header kadr-frame-id");
  m.frame_id = *id;
  m.stream_id = h.Get(header::kStreamId).value_or(m.frame_id);
  if (auto v = h.Get(header::kSequence)) {
    ASSIGN_OR_RETURN(m.sequence, ParseInt(header::kSequence, *v));
  }
  if (auto v = h.Get(header::kCaptureMs)) {
    ASSIGN_OR_RETURN(m.capture_ms, ParseInt(header::kCaptureMs, *v));
  }
  if (auto v = h.Get(header::kDeadlineMs)) {
    ASSIGN_OR_RETURN(std::int64_t d, ParseInt(header::kDeadlineMs, *v));
    m.deadline_ms = d;
  }
  m.model = h.Get(header::kModel).value_or("");
  m.reply_to = h.Get(header::kReplyTo).value_or(std::string(kResultsTopic));
  if (m.reply_to.empty()) m.reply_to = std::string(kResultsTopic);
  if (!IsValidTopicName(m.reply_to)) {
    return InvalidArgumentError("header kadr-reply-to is not a valid topic name: '" + m.reply_to +
                                "'");
  }
  m.annotated_to = h.Get(header::kAnnotatedTo).value_or("");
  if (!m.annotated_to.empty() && !IsValidTopicName(m.annotated_to)) {
    return InvalidArgumentError("header kadr-annotated-to is not a valid topic name: '" +
                                m.annotated_to + "'");
  }
  m.source = h.Get(header::kSource).value_or("");
  m.correlation_id = h.Get(header::kCorrelationId).value_or("");
  if (auto v = h.Get(header::kConfidence)) {
    ASSIGN_OR_RETURN(float f, ParseUnit(header::kConfidence, *v));
    m.options.confidence = f;
  }
  if (auto v = h.Get(header::kIou)) {
    ASSIGN_OR_RETURN(float f, ParseUnit(header::kIou, *v));
    m.options.iou = f;
  }
  if (auto v = h.Get(header::kClasses)) {
    std::stringstream in(*v);
    std::string item;
    while (std::getline(in, item, ',')) {
      if (item.empty()) continue;
      ASSIGN_OR_RETURN(std::int64_t c, ParseInt(header::kClasses, item));
      if (c < 0 || c > 100000) return InvalidArgumentError("header kadr-classes: bad class id");
      m.options.classes.push_back(static_cast<int>(c));
    }
  }
  if (auto v = h.Get(header::kDraw)) m.draw = *v != "0" && *v != "false";
  if (auto v = h.Get(header::kKind)) {
    if (!v->empty() && *v != kind::kImage && !IsTrackedKind(*v)) {
      return InvalidArgumentError("header kadr-kind must be one of image, video, live: '" + *v +
                                  "'");
    }
    m.kind = *v;
  }
  if (auto v = h.Get(header::kReportSize)) {
    const std::size_t x = v->find('x');
    // An upload's bounds (imaging::DecodeLimits): the worker scales masks to this size.
    constexpr std::int64_t kMaxSide = 16384;
    constexpr std::int64_t kMaxPixels = 50'000'000;
    std::int64_t w = 0, hgt = 0;
    if (x != std::string::npos) {
      auto pw = ParseInt(header::kReportSize, v->substr(0, x));
      auto ph = ParseInt(header::kReportSize, v->substr(x + 1));
      if (pw && ph) {
        w = *pw;
        hgt = *ph;
      }
    }
    if (w < 1 || hgt < 1 || w > kMaxSide || hgt > kMaxSide || w * hgt > kMaxPixels) {
      return InvalidArgumentError("header kadr-report-size must be WxH, 1.." +
                                  std::to_string(kMaxSide) + " each and at most " +
                                  std::to_string(kMaxPixels) + " pixels: '" + *v + "'");
    }
    m.report_width = static_cast<int>(w);
    m.report_height = static_cast<int>(hgt);
  }
  return m;
}

FrameMeta BestEffortFrameMeta(const bus::Headers& h, const std::string& key,
                              const std::string& fallback_id) {
  FrameMeta m;
  m.frame_id = h.Get(header::kFrameId).value_or("");
  if (m.frame_id.empty()) m.frame_id = fallback_id;
  m.stream_id = h.Get(header::kStreamId).value_or(key.empty() ? m.frame_id : key);
  m.correlation_id = h.Get(header::kCorrelationId).value_or("");
  m.model = h.Get(header::kModel).value_or("");
  const auto reply_to = h.Get(header::kReplyTo);
  m.reply_to = reply_to && IsValidTopicName(*reply_to) ? *reply_to : std::string(kResultsTopic);
  m.source = h.Get(header::kSource).value_or("");
  m.kind = h.Get(header::kKind).value_or("");
  if (m.kind != kind::kImage && !IsTrackedKind(m.kind)) m.kind.clear();
  if (auto seq = h.Get(header::kSequence)) {
    if (auto v = ParseInt(header::kSequence, *seq)) m.sequence = *v;
  }
  return m;
}

std::string_view FrameStatusName(FrameStatus s) {
  switch (s) {
    case FrameStatus::kOk:
      return "ok";
    case FrameStatus::kError:
      return "error";
    case FrameStatus::kSkipped:
      return "skipped";
  }
  return "unknown";
}

std::string FrameResultToJson(const FrameResult& r) {
  // The detection result's own fields, plus the frame envelope.
  json j = json::parse(ToJson(r.result));
  j["frame"] = {{"id", r.frame_id},
                {"stream", r.stream_id},
                {"sequence", r.sequence},
                {"capture_ms", r.capture_ms}};
  if (!r.correlation_id.empty()) j["correlation_id"] = r.correlation_id;
  j["status"] = FrameStatusName(r.status);
  if (r.status != FrameStatus::kOk) {
    j["error"] = {{"code", StatusCodeName(r.error.code())}, {"message", r.error.message()}};
  }
  if (!r.annotated_topic.empty()) j["annotated_topic"] = r.annotated_topic;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<FrameResult> FrameResultFromJson(std::string_view text) {
  ASSIGN_OR_RETURN(DetectionResult det, ResultFromJson(text));
  json j = json::parse(text, nullptr, false);
  FrameResult r;
  r.result = std::move(det);
  try {
    const auto& f = j.at("frame");
    r.frame_id = f.at("id").get<std::string>();
    r.stream_id = f.value("stream", "");
    r.sequence = IntegerFieldOr(f, "sequence", 0);
    r.capture_ms = IntegerFieldOr(f, "capture_ms", 0);
    r.correlation_id = j.value("correlation_id", "");
    r.annotated_topic = j.value("annotated_topic", "");
    const std::string status = j.at("status").get<std::string>();
    if (status == "ok") {
      r.status = FrameStatus::kOk;
    } else if (status == "error" || status == "skipped") {
      r.status = status == "error" ? FrameStatus::kError : FrameStatus::kSkipped;
      const std::string code = j.at("error").at("code").get<std::string>();
      r.error = Status(StatusCodeFromName(code), j.at("error").at("message").get<std::string>());
    } else {
      return InvalidArgumentError("unknown frame status '" + status + "'");
    }
  } catch (const json::exception& e) {
    return InvalidArgumentError(std::string("malformed frame result: ") + e.what());
  }
  return r;
}

bool IsImageMessage(const bus::Message& m) {
  if (auto type = m.headers.Get(header::kContentType)) {
    std::string t = type->substr(0, type->find(';'));
    std::transform(t.begin(), t.end(), t.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (t.starts_with("image/")) return true;
    if (t == "application/json" || t.ends_with("+json")) return false;
  }
  const auto first =
      std::find_if(m.value.begin(), m.value.end(), [](std::uint8_t c) { return !std::isspace(c); });
  return first != m.value.end() && *first != '{';
}

std::string StreamIdOf(const bus::Message& m) {
  if (auto stream = m.headers.Get(header::kStreamId); stream && !stream->empty()) return *stream;
  return m.key;
}

}  // namespace kadr::protocol
