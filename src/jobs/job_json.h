// The REST API's job and result bodies (docs/api.md): every route that shows a job uses
// these, so all answer in exactly the same shape.
// Pure functions, thread-safe.
#pragma once

#include <map>
#include <string>

#include "common/status.h"
#include "jobs/job.h"
#include "protocol/frame.h"

namespace kadr::jobs {

// "/api/v1/jobs/<id>" and its sub-resources.
std::string JobPath(const std::string& job_id);

// The job object of docs/api.md: id, kind, model, state, created_ms, updated_ms,
// progress{frames_done, frames_total}, source_name, detections_count (when result_json has
// a result), error{code, message} (when set), links{self, result, image?, thumbnail?}; then
// job.details_json merged over it (RFC 7386 merge patch).
std::string JobToJson(const JobRecord& job);

// The body of POST /api/v1/detect and GET /api/v1/jobs/{id}/result for a finished job:
// job_id, model, image, detections, timings_ms (the worker's stages from `result`, with
// `extra_timings_ms` merged over them: gateway, queue, total), annotated_image (when
// job.has_image).
std::string ResultToJson(const JobRecord& job, const protocol::FrameResult& result,
                         const std::map<std::string, double>& extra_timings_ms = {});

// {"jobs": [JobToJson...], "total": total}
std::string JobListToJson(const std::vector<JobRecord>& jobs, std::size_t total);

}  // namespace kadr::jobs
