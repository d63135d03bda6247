#include <cstdint>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

#include "jobs/job.h"

namespace kadr::jobs {
namespace {

using nlohmann::json;

std::string Dump(const json& j) {
  // Names, messages and labels come from uploads and workers: invalid UTF-8 is replaced
  // rather than thrown on.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The number of detections in a stored result, when it holds one: a frame result (or bare
// detection result) with a detections array and no failed status.
std::optional<std::size_t> DetectionsCount(const std::string& result_json) {
  if (result_json.empty()) return std::nullopt;
  const json j = json::parse(result_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  const auto status = j.find("status");
  if (status != j.end() && (!status->is_string() || status->get<std::string>() != "ok")) {
    return std::nullopt;
  }
  const auto detections = j.find("detections");
  if (detections == j.end() || !detections->is_array()) return std::nullopt;
  return detections->size();
}

json JobObject(const JobRecord& job) {
  const std::string self = JobPath(job.id);
  json links = {{"self", self}, {"result", self + "/result"}};
  if (job.has_image) {
    links["image"] = self + "/image";
    links["thumbnail"] = self + "/thumbnail";
  }
  json j = {{"id", job.id},
            {"kind", JobKindName(job.kind)},
            {"model", job.model},
            {"state", JobStateName(job.state)},
            {"created_ms", job.created_ms},
            {"updated_ms", job.updated_ms},
            {"progress", {{"frames_done", job.frames_done}, {"frames_total", job.frames_total}}},
            {"source_name", job.source_name}};
  if (auto count = DetectionsCount(job.result_json)) j["detections_count"] = *count;
  if (job.error) {
    j["error"] = {{"code", StatusCodeName(job.error->code())}, {"message", job.error->message()}};
  }
  j["links"] = std::move(links);
  if (!job.details_json.empty()) {
    // Kind-specific fields (a video's "video", its progress figures and links) go over the
    // common ones, objects merged member by member.
    const json details = json::parse(job.details_json, nullptr, /*allow_exceptions=*/false);
    if (details.is_object()) j.merge_patch(details);
  }
  return j;
}

}  // namespace

std::string JobPath(const std::string& job_id) { return "/api/v1/jobs/" + job_id; }

std::string JobToJson(const JobRecord& job) { return Dump(JobObject(job)); }

std::string ResultToJson(const JobRecord& job, const protocol::FrameResult& result,
                         const std::map<std::string, double>& extra_timings_ms) {
  // The detections exactly as the protocol encodes them (masks included).
  json detections = json::array();
  const json encoded = json::parse(protocol::ToJson(result.result), nullptr, false);
  if (encoded.is_object() && encoded.contains("detections")) detections = encoded["detections"];

  std::map<std::string, double> timings = result.result.timings_ms;
  for (const auto& [stage, ms] : extra_timings_ms) timings[stage] = ms;

  json j = {
      {"job_id", job.id},
      {"model", result.result.model.empty() ? job.model : result.result.model},
      {"image", {{"width", result.result.image_width}, {"height", result.result.image_height}}},
      {"detections", std::move(detections)},
      {"timings_ms", timings}};
  if (job.has_image) j["annotated_image"] = JobPath(job.id) + "/image";
  return Dump(j);
}

std::string JobListToJson(const std::vector<JobRecord>& jobs, std::size_t total) {
  json list = json::array();
  for (const JobRecord& job : jobs) list.push_back(JobObject(job));
  return Dump(json{{"jobs", std::move(list)}, {"total", total}});
}

void SetVideoOutput(json& details, const std::string& job_id, bool annotated) {
  const std::string self = JobPath(job_id);
  details["annotated"] = annotated;
  details["links"] = {{"result", self + "/result"}};
  if (annotated) details["links"]["video"] = self + "/video";
}

bool IsResultsOnlyVideo(const JobRecord& job) {
  if (job.details_json.empty()) return false;
  const json details = json::parse(job.details_json, nullptr, /*allow_exceptions=*/false);
  if (!details.is_object()) return false;
  const auto annotated = details.find("annotated");
  return annotated != details.end() && annotated->is_boolean() && !annotated->get<bool>();
}

}  // namespace kadr::jobs
