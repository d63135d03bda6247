#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "jobs/job.h"

namespace kadr::jobs {
namespace {

using nlohmann::json;

JobRecord DoneJob() {
  JobRecord job;
  job.id = "j1";
  job.kind = JobKind::kImage;
  job.model = "yolox_nano";
  job.state = JobState::kDone;
  job.created_ms = 1764115200000;
  job.updated_ms = 1764115200060;
  job.frames_total = 1;
  job.frames_done = 1;
  job.source_name = "bus.jpg";
  return job;
}

protocol::FrameResult OkResult() {
  protocol::FrameResult r;
  r.frame_id = "f1";
  r.stream_id = "j1";
  r.result.model = "yolox_nano";
  r.result.image_width = 810;
  r.result.image_height = 1080;
  protocol::Detection d;
  d.class_id = 5;
  d.label = "bus";
  d.score = 0.5F;
  d.box = {20.0F, 230.5F, 780.0F, 510.0F};
  r.result.detections.push_back(d);
  d.class_id = 0;
  d.label = "person";
  d.score = 0.25F;
  r.result.detections.push_back(d);
  r.result.timings_ms = {{"decode", 3.0}, {"inference", 40.0}, {"total", 47.0}};
  return r;
}

TEST(JobJsonTest, JobPathIsUnderTheJobsCollection) {
  EXPECT_EQ(JobPath("abc"), "/api/v1/jobs/abc");
}

TEST(JobJsonTest, DoneJobHasEveryFieldOfTheApiShape) {
  JobRecord job = DoneJob();
  job.result_json = protocol::FrameResultToJson(OkResult());
  job.has_image = true;
  const json j = json::parse(JobToJson(job));
  EXPECT_EQ(j, json::parse(R"({
    "id": "j1", "kind": "image", "model": "yolox_nano", "state": "done",
    "created_ms": 1764115200000, "updated_ms": 1764115200060,
    "progress": {"frames_done": 1, "frames_total": 1},
    "source_name": "bus.jpg", "detections_count": 2,
    "links": {"self": "/api/v1/jobs/j1", "result": "/api/v1/jobs/j1/result",
              "image": "/api/v1/jobs/j1/image", "thumbnail": "/api/v1/jobs/j1/thumbnail"}
  })"));
}

TEST(JobJsonTest, JobWithoutImageHasNoImageLinks) {
  const json j = json::parse(JobToJson(DoneJob()));
  EXPECT_FALSE(j["links"].contains("image"));
  EXPECT_FALSE(j["links"].contains("thumbnail"));
  EXPECT_EQ(j["links"]["result"], "/api/v1/jobs/j1/result");
}

TEST(JobJsonTest, AnAnnotatedVideoJobLinksItsVideoAndAResultsOnlyOneDoesNot) {
  JobRecord job = DoneJob();
  job.kind = JobKind::kVideo;
  json details = {{"progress", {{"fps", 25.0}}}};
  SetVideoOutput(details, job.id, /*annotated=*/true);
  job.details_json = details.dump();
  json j = json::parse(JobToJson(job));
  EXPECT_EQ(j["annotated"], true);
  EXPECT_EQ(j["links"]["video"], "/api/v1/jobs/j1/video");
  EXPECT_EQ(j["links"]["result"], "/api/v1/jobs/j1/result");
  EXPECT_EQ(j["links"]["self"], "/api/v1/jobs/j1");
  EXPECT_EQ(j["progress"]["fps"], 25.0);
  EXPECT_FALSE(IsResultsOnlyVideo(job));

  SetVideoOutput(details, job.id, /*annotated=*/false);
  job.details_json = details.dump();
  j = json::parse(JobToJson(job));
  EXPECT_EQ(j["annotated"], false);
  EXPECT_FALSE(j["links"].contains("video"));
  EXPECT_EQ(j["links"]["result"], "/api/v1/jobs/j1/result");
  EXPECT_TRUE(IsResultsOnlyVideo(job));
}

TEST(JobJsonTest, AJobWhoseDetailsSayNothingOfItsVideoIsNotResultsOnly) {
  JobRecord job = DoneJob();
  EXPECT_FALSE(IsResultsOnlyVideo(job));
  job.details_json = "not json";
  EXPECT_FALSE(IsResultsOnlyVideo(job));
  job.details_json = R"({"annotated": "no"})";
  EXPECT_FALSE(IsResultsOnlyVideo(job));
  job.details_json = "[false]";
  EXPECT_FALSE(IsResultsOnlyVideo(job));
}

TEST(JobJsonTest, JobWithoutResultHasNoDetectionsCount) {
  JobRecord job = DoneJob();
  job.state = JobState::kQueued;
  job.frames_done = 0;
  const json j = json::parse(JobToJson(job));
  EXPECT_FALSE(j.contains("detections_count"));
  EXPECT_FALSE(j.contains("error"));
  EXPECT_EQ(j["state"], "queued");
  EXPECT_EQ(j["progress"]["frames_done"], 0);
}

TEST(JobJsonTest, UnparsableStoredResultHasNoDetectionsCount) {
  JobRecord job = DoneJob();
  job.result_json = "{not json";
  EXPECT_FALSE(json::parse(JobToJson(job)).contains("detections_count"));
  job.result_json = "[1, 2]";
  EXPECT_FALSE(json::parse(JobToJson(job)).contains("detections_count"));
}

TEST(JobJsonTest, FailedJobCarriesItsErrorAndNoDetectionsCount) {
  JobRecord job = DoneJob();
  job.state = JobState::kFailed;
  job.error = DeadlineExceededError("deadline passed 120 ms before processing");
  protocol::FrameResult r = OkResult();
  r.status = protocol::FrameStatus::kSkipped;
  r.error = *job.error;
  r.result.detections.clear();
  job.result_json = protocol::FrameResultToJson(r);
  const json j = json::parse(JobToJson(job));
  EXPECT_EQ(j["error"], json::parse(R"({"code": "deadline_exceeded",
                                        "message": "deadline passed 120 ms before processing"})"));
  EXPECT_FALSE(j.contains("detections_count"));
}

TEST(JobJsonTest, InvalidUtf8IsReplacedNotThrown) {
  JobRecord job = DoneJob();
  job.source_name = std::string("caf\xC3", 4);
  std::string text;
  ASSERT_NO_THROW(text = JobToJson(job));
  EXPECT_EQ(json::parse(text)["source_name"], "caf\xEF\xBF\xBD");
}

TEST(JobJsonTest, ResultHasDetectBodyShapeWithMergedTimings) {
  JobRecord job = DoneJob();
  job.has_image = true;
  const json j = json::parse(
      ResultToJson(job, OkResult(), {{"gateway", 1.5}, {"queue", 11.0}, {"total", 59.5}}));
  EXPECT_EQ(j["job_id"], "j1");
  EXPECT_EQ(j["model"], "yolox_nano");
  EXPECT_EQ(j["image"], json::parse(R"({"width": 810, "height": 1080})"));
  ASSERT_EQ(j["detections"].size(), 2U);
  EXPECT_EQ(j["detections"][0], json::parse(R"({"class_id": 5, "label": "bus", "score": 0.5,
      "box": {"x": 20.0, "y": 230.5, "width": 780.0, "height": 510.0}})"));
  // The worker's stages, with the gateway's own merged over them ("total" replaced).
  EXPECT_EQ(j["timings_ms"], json::parse(R"({"decode": 3.0, "inference": 40.0, "gateway": 1.5,
                                              "queue": 11.0, "total": 59.5})"));
  EXPECT_EQ(j["annotated_image"], "/api/v1/jobs/j1/image");
  EXPECT_FALSE(j.contains("schema_version"));
  EXPECT_FALSE(j.contains("frame"));
}

TEST(JobJsonTest, ResultWithoutImageOmitsAnnotatedImage) {
  const json j = json::parse(ResultToJson(DoneJob(), OkResult()));
  EXPECT_FALSE(j.contains("annotated_image"));
  EXPECT_EQ(j["timings_ms"]["total"], 47.0);
}

TEST(JobJsonTest, ResultKeepsSegmentationMasks) {
  protocol::FrameResult r = OkResult();
  protocol::Mask mask;
  mask.x = 1;
  mask.y = 2;
  mask.width = 2;
  mask.height = 2;
  mask.data = {0, 1, 1, 0};
  r.result.detections[0].mask = mask;
  const json j = json::parse(ResultToJson(DoneJob(), r));
  EXPECT_EQ(j["detections"][0]["mask"],
            json::parse(R"({"x": 1, "y": 2, "width": 2, "height": 2, "rle": [1, 2, 1]})"));
}

TEST(JobJsonTest, ResultFallsBackToTheJobsModel) {
  protocol::FrameResult r = OkResult();
  r.result.model.clear();
  EXPECT_EQ(json::parse(ResultToJson(DoneJob(), r))["model"], "yolox_nano");
}

TEST(JobJsonTest, ListHasJobsInOrderAndTotal) {
  JobRecord a = DoneJob();
  JobRecord b = DoneJob();
  b.id = "j2";
  const json j = json::parse(JobListToJson({a, b}, 7));
  EXPECT_EQ(j["total"], 7);
  ASSERT_EQ(j["jobs"].size(), 2U);
  EXPECT_EQ(j["jobs"][0], json::parse(JobToJson(a)));
  EXPECT_EQ(j["jobs"][1]["id"], "j2");
  EXPECT_EQ(json::parse(JobListToJson({}, 0)), json::parse(R"({"jobs": [], "total": 0})"));
}

}  // namespace
}  // namespace kadr::jobs
