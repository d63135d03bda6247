#include <exception>
#include <utility>

#include <nlohmann/json.hpp>

#include "jobs/job.h"
#include "protocol/frame.h"
#include "protocol/json_fields.h"

namespace kadr::jobs {
namespace {

using nlohmann::json;
namespace header = protocol::header;

constexpr char kCancel[] = "cancel";

std::vector<std::uint8_t> Bytes(const json& j) {
  const std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return {text.begin(), text.end()};
}

bool HasContentType(const bus::Message& m, std::string_view type) {
  const auto value = m.headers.Get(header::kContentType);
  return value && value->substr(0, value->find(';')) == type;
}

json JobObject(const JobRecord& job) {
  json j = {{"id", job.id},
            {"kind", JobKindName(job.kind)},
            {"model", job.model},
            {"state", JobStateName(job.state)},
            {"created_ms", job.created_ms},
            {"updated_ms", job.updated_ms},
            {"frames_total", job.frames_total},
            {"frames_done", job.frames_done},
            {"source_name", job.source_name},
            {"deadline_ms", job.deadline_ms},
            {"control_topic", job.control_topic}};
  if (job.error) {
    j["error"] = {{"code", StatusCodeName(job.error->code())}, {"message", job.error->message()}};
  }
  if (!job.details_json.empty()) {
    json details = json::parse(job.details_json, nullptr, /*allow_exceptions=*/false);
    if (details.is_object()) j["details"] = std::move(details);
  }
  return j;
}

Result<JobRecord> JobFromObject(const json& j) {
  try {
    JobRecord job;
    job.id = j.value("id", "");
    if (!IsValidJobId(job.id)) return InvalidArgumentError("job event without a valid job id");
    const auto kind = ParseJobKind(j.value("kind", ""));
    const auto state = ParseJobState(j.value("state", ""));
    if (!kind || !state) {
      return InvalidArgumentError("job event of " + job.id + " has an unknown kind or state");
    }
    job.kind = *kind;
    job.state = *state;
    job.model = j.value("model", "");
    job.created_ms = protocol::IntegerFieldOr(j, "created_ms", 0);
    job.updated_ms = protocol::IntegerFieldOr(j, "updated_ms", 0);
    job.frames_total = protocol::IntegerFieldOr(j, "frames_total", 1);
    job.frames_done = protocol::IntegerFieldOr(j, "frames_done", 0);
    job.source_name = j.value("source_name", "");
    job.deadline_ms = protocol::IntegerFieldOr(j, "deadline_ms", 0);
    job.control_topic = j.value("control_topic", "");
    if (j.contains("error") && j["error"].is_object()) {
      const json& e = j["error"];
      StatusCode code = StatusCodeFromName(e.value("code", "internal"));
      if (code == StatusCode::kOk) code = StatusCode::kInternal;
      job.error = Status(code, e.value("message", ""));
    }
    if (j.contains("details") && j["details"].is_object()) {
      job.details_json = j["details"].dump(-1, ' ', false, json::error_handler_t::replace);
    }
    return job;
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("job event has a field of the wrong type: ") +
                                e.what());
  }
}

}  // namespace

std::string_view JobEventName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "created";
    case JobState::kRunning:
      return "progress";
    default:
      return "finished";
  }
}

bus::Message JobEventMessage(const JobRecord& job) {
  bus::Message m;
  m.topic = std::string(protocol::kJobsTopic);
  m.key = job.id;
  m.value = Bytes(json{{"event", JobEventName(job.state)}, {"job", JobObject(job)}});
  m.headers.Set(header::kContentType, std::string(kJobEventContentType));
  return m;
}

bool IsJobEvent(const bus::Message& message) {
  return HasContentType(message, kJobEventContentType);
}

Result<JobRecord> JobFromEvent(std::string_view value) {
  const json root = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object() || !root.contains("job") || !root["job"].is_object()) {
    return InvalidArgumentError("job event is not a JSON object with a \"job\" object");
  }
  return JobFromObject(root["job"]);
}

bus::Message CancelRequestMessage(const JobRecord& job) {
  bus::Message m;
  m.topic = job.control_topic.empty() ? std::string(protocol::kVideoJobsTopic) : job.control_topic;
  m.key = job.id;
  m.value = Bytes(json{{"action", kCancel}, {"job_id", job.id}});
  m.headers.Set(header::kKind, protocol::kind::kControl);
  m.headers.Set(header::kContentType, std::string(kControlContentType));
  return m;
}

std::optional<std::string> CancelRequestJobId(const bus::Message& message) {
  const auto kind = message.headers.Get(header::kKind);
  if (!kind || *kind != protocol::kind::kControl) return std::nullopt;
  const std::string_view text(reinterpret_cast<const char*>(message.value.data()),
                              message.value.size());
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("action", "") != kCancel) return std::nullopt;
  const auto id = j.find("job_id");
  if (id == j.end() || !id->is_string() || !IsValidJobId(id->get<std::string>())) {
    return std::nullopt;
  }
  return id->get<std::string>();
}

bus::Message VideoJobRequestMessage(const VideoJobRequest& request) {
  json options = json::object();
  if (request.options.confidence) options["conf"] = *request.options.confidence;
  if (request.options.iou) options["iou"] = *request.options.iou;
  if (!request.options.classes.empty()) options["classes"] = request.options.classes;
  bus::Message m;
  m.topic = std::string(protocol::kVideoJobsTopic);
  m.key = request.job.id;
  m.value = Bytes(json{{"job", JobObject(request.job)},
                       {"upload", request.upload},
                       {"options", std::move(options)},
                       {"draw", request.draw},
                       {"frame_timeout_ms", request.frame_timeout_ms}});
  m.headers.Set(header::kContentType, std::string(kVideoJobContentType));
  return m;
}

bool IsVideoJobRequest(const bus::Message& message) {
  return HasContentType(message, kVideoJobContentType);
}

Result<VideoJobRequest> VideoJobRequestFromJson(std::string_view value) {
  const json root = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object() || !root.contains("job") || !root["job"].is_object()) {
    return InvalidArgumentError("video job request is not a JSON object with a \"job\" object");
  }
  VideoJobRequest request;
  ASSIGN_OR_RETURN(request.job, JobFromObject(root["job"]));
  if (request.job.kind != JobKind::kVideo) {
    return InvalidArgumentError("video job request for " + request.job.id + " of kind " +
                                std::string(JobKindName(request.job.kind)));
  }
  try {
    request.upload = root.value("upload", "");
    if (request.upload != request.job.id + ".src") {
      return InvalidArgumentError("video job request for " + request.job.id +
                                  " names another upload: '" + request.upload + "'");
    }
    request.draw = root.value("draw", true);
    request.frame_timeout_ms = protocol::IntegerFieldOr(root, "frame_timeout_ms", 0);
    if (request.frame_timeout_ms < 0) {
      return InvalidArgumentError("video job request with a negative frame_timeout_ms");
    }
    const json options = root.value("options", json::object());
    if (!options.is_object())
      return InvalidArgumentError("video job request options not an object");
    if (options.contains("conf")) request.options.confidence = options["conf"].get<float>();
    if (options.contains("iou")) request.options.iou = options["iou"].get<float>();
    if (options.contains("classes")) {
      for (const json& c : options["classes"]) {
        const std::int64_t id = protocol::JsonInteger(c, "classes");
        if (id < 0 || id > INT32_MAX) {
          return InvalidArgumentError("video job request with a class id out of range");
        }
        request.options.classes.push_back(static_cast<int>(id));
      }
    }
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("video job request has a field of the wrong type: ") +
                                e.what());
  }
  return request;
}

}  // namespace kadr::jobs
