#include "jobs/recorder.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "bus/fake_bus.h"
#include "jobs/job.h"
#include "jobs/job_store.h"
#include "protocol/frame.h"
#include "support/test_data.h"

namespace kadr::jobs {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;
namespace header = protocol::header;

// Everything arrives on one fake topic; in production the subscriber reads several.
constexpr char kTopic[] = "recorder-in";
constexpr std::int64_t kT0 = 1'764'115'200'000;

std::vector<std::uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::vector<std::uint8_t> EncodeImage(int width, int height, const std::string& ext = ".jpg") {
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(40, 120, 200));
  cv::rectangle(img, {width / 4, height / 4, width / 2, height / 2}, cv::Scalar(0, 255, 0), -1);
  std::vector<std::uint8_t> out;
  if (!cv::imencode(ext, img, out)) throw std::runtime_error("imencode failed");
  return out;
}

cv::Mat DecodeJpeg(const std::string& body) {
  return cv::imdecode(std::vector<std::uint8_t>(body.begin(), body.end()), cv::IMREAD_COLOR);
}

protocol::FrameResult MakeResult(const std::string& stream, protocol::FrameStatus status,
                                 std::int64_t capture_ms, int detections = 1) {
  protocol::FrameResult r;
  r.frame_id = stream + "-f1";
  r.stream_id = stream;
  r.capture_ms = capture_ms;
  r.status = status;
  r.result.model = "yolox_nano";
  if (status == protocol::FrameStatus::kOk) {
    r.result.image_width = 640;
    r.result.image_height = 480;
    for (int i = 0; i < detections; ++i) {
      protocol::Detection d;
      d.class_id = i;
      d.label = "class_" + std::to_string(i);
      d.score = 0.5F;
      d.box = {10, 20, 30, 40};
      r.result.detections.push_back(d);
    }
    r.result.timings_ms = {{"inference", 12.5}};
    r.annotated_topic = "kadr.annotated";
  }
  return r;
}

// Headers as the worker writes them (worker_service.cc EchoIdentity).
void Identity(bus::Message& m, const std::string& stream) {
  m.headers.Set(header::kSchema, "1");
  m.headers.Set(header::kFrameId, stream + "-f1");
  m.headers.Set(header::kStreamId, stream);
  m.headers.Set(header::kSequence, "0");
  m.headers.Set(header::kModel, "yolox_nano");
  m.headers.Set(header::kSource, stream + ".jpg");
}

bus::Message ResultMessage(const protocol::FrameResult& r) {
  bus::Message m{kTopic, r.stream_id, Bytes(protocol::FrameResultToJson(r)), {}};
  Identity(m, r.stream_id);
  m.headers.Set(header::kContentType, "application/json");
  m.headers.Set(header::kStatus, std::string(protocol::FrameStatusName(r.status)));
  return m;
}

bus::Message ImageMessage(const std::string& stream, int width = 800, int height = 600) {
  bus::Message m{kTopic, stream, EncodeImage(width, height), {}};
  Identity(m, stream);
  m.headers.Set(header::kContentType, "image/jpeg");
  return m;
}

bus::Message Snapshot(const JobRecord& job) {
  bus::Message m = JobEventMessage(job);
  m.topic = kTopic;
  return m;
}

JobRecord QueuedImage(const std::string& id, std::int64_t created_ms, std::int64_t deadline_ms) {
  JobRecord job;
  job.id = id;
  job.kind = JobKind::kImage;
  job.model = "yolox_nano";
  job.state = JobState::kQueued;
  job.created_ms = created_ms;
  job.updated_ms = created_ms;
  job.source_name = "upload.jpg";
  job.deadline_ms = deadline_ms;
  return job;
}

JobRecord RunningVideo(const std::string& id) {
  JobRecord job;
  job.id = id;
  job.kind = JobKind::kVideo;
  job.model = "yolox_nano";
  job.state = JobState::kRunning;
  job.created_ms = kT0;
  job.updated_ms = kT0;
  job.frames_total = 10;
  job.frames_done = 3;
  job.source_name = "clip.mp4";
  job.control_topic = "kadr.replies.gw-a";
  job.details_json = R"({"video":{"fps":25,"width":64,"height":48}})";
  return job;
}

class RecorderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    history_.dir = kadr::testing::MakeTempDir();
    options_.now_ms = [this] { return now_ms_.load(); };
    Open();
  }
  void TearDown() override {
    Close();
    fs::remove_all(history_.dir);
  }

  // (Re)creates the store, subscriber and service over the same directory: a restart.
  void Open() {
    auto created = SqliteJobStore::Create(history_);
    ASSERT_TRUE(created.has_value()) << created.error().ToString();
    store_ = std::move(created).value();
    subscriber_ = std::make_unique<bus::FakeSubscriber>(*bus_, kTopic);
    metrics_ = std::make_unique<MetricsRegistry>();
    service_ = std::make_unique<Recorder>(options_, *store_, *subscriber_, *metrics_);

    http::HttpServerOptions server_options;
    server_options.port = 0;
    server_options.threads = 2;
    auto server = http::HttpServer::Create(server_options);
    ASSERT_TRUE(server.has_value());
    server_ = std::move(server).value();
    JobRoutesOptions routes;
    routes.now_ms = [this] { return now_ms_.load(); };
    routes.recent_wait = 200ms;
    routes.cancel_wait = 2s;
    routes.video_dir = history_.dir.string();
    ASSERT_TRUE(RegisterJobRoutes(*server_, routes, *store_, *service_, publisher_).ok());
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(5s);
  }
  void Close() {
    client_.reset();
    if (server_) server_->Stop();
    server_.reset();
    service_.reset();
    subscriber_.reset();
    store_.reset();
  }

  // Records everything published so far.
  void Drain() {
    while (service_->PollOnce(0ms) > 0) {
    }
  }
  void Publish(bus::Message m) { bus_->Append(std::move(m)); }

  JobRecord Job(const std::string& id) {
    auto job = store_->GetJob(id);
    EXPECT_TRUE(job.has_value()) << job.error().ToString();
    if (!job.has_value()) throw std::runtime_error("no job " + id);
    return *job;
  }

  httplib::Result Get(const std::string& path) {
    auto r = client_->Get(path);
    EXPECT_TRUE(r) << path;
    return r;
  }
  static std::string ErrorCode(const httplib::Result& r) {
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    return json::parse(r->body)["error"]["code"];
  }

  std::atomic<std::int64_t> now_ms_{kT0 + 1000};
  SqliteJobStoreOptions history_;
  RecorderOptions options_;
  std::unique_ptr<bus::FakeBus> bus_ = std::make_unique<bus::FakeBus>();
  bus::FakePublisher publisher_{*bus_};
  std::unique_ptr<SqliteJobStore> store_;
  std::unique_ptr<bus::FakeSubscriber> subscriber_;
  std::unique_ptr<MetricsRegistry> metrics_;
  std::unique_ptr<Recorder> service_;
  std::unique_ptr<http::HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(RecorderTest, ResultThenImageMakesADoneJobWithImageAndThumbnail) {
  const auto result = MakeResult("j1", protocol::FrameStatus::kOk, kT0, 3);
  Publish(ResultMessage(result));
  Drain();
  JobRecord job = Job("j1");
  EXPECT_EQ(job.state, JobState::kDone);
  EXPECT_EQ(job.kind, JobKind::kImage);
  EXPECT_EQ(job.model, "yolox_nano");
  EXPECT_EQ(job.source_name, "j1.jpg");
  EXPECT_EQ(job.created_ms, kT0);
  EXPECT_EQ(job.updated_ms, kT0 + 1000);
  EXPECT_EQ(job.frames_done, 1);
  EXPECT_EQ(job.frames_total, 1);
  EXPECT_FALSE(job.error.has_value());
  EXPECT_EQ(job.result_json, protocol::FrameResultToJson(result));
  EXPECT_FALSE(job.has_image);

  Publish(ImageMessage("j1"));
  Drain();
  job = Job("j1");
  EXPECT_EQ(job.state, JobState::kDone);
  EXPECT_TRUE(job.has_image);
  EXPECT_TRUE(store_->LoadThumbnail("j1").has_value());
  EXPECT_EQ(subscriber_->acked(), (std::set<std::int64_t>{0, 1}));
  const RecorderStats stats = service_->stats();
  EXPECT_EQ(stats.results_stored, 1U);
  EXPECT_EQ(stats.images_stored, 1U);
}

TEST_F(RecorderTest, ImageBeforeResultCreatesARunningJobThatTheResultCompletes) {
  Publish(ImageMessage("j2"));
  Drain();
  JobRecord job = Job("j2");
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_TRUE(job.has_image);
  EXPECT_EQ(job.model, "yolox_nano");
  EXPECT_EQ(job.source_name, "j2.jpg");
  EXPECT_EQ(job.frames_done, 0);

  now_ms_ += 50;
  Publish(ResultMessage(MakeResult("j2", protocol::FrameStatus::kOk, kT0, 2)));
  Drain();
  job = Job("j2");
  EXPECT_EQ(job.state, JobState::kDone);
  EXPECT_TRUE(job.has_image);  // PutJob keeps the image
  EXPECT_EQ(job.created_ms, kT0);
  EXPECT_EQ(job.updated_ms, kT0 + 1050);
  EXPECT_EQ(job.frames_done, 1);
  EXPECT_EQ(json::parse(JobToJson(job))["detections_count"], 2);
}

TEST_F(RecorderTest, ErrorAndSkippedResultsMarkTheJobFailedWithTheirCode) {
  auto error = MakeResult("bad", protocol::FrameStatus::kError, kT0);
  error.error = InvalidArgumentError("truncated JPEG");
  auto skipped = MakeResult("late", protocol::FrameStatus::kSkipped, 0);
  skipped.error = DeadlineExceededError("deadline passed 120 ms before processing");
  Publish(ResultMessage(error));
  Publish(ResultMessage(skipped));
  Drain();

  JobRecord bad = Job("bad");
  EXPECT_EQ(bad.state, JobState::kFailed);
  ASSERT_TRUE(bad.error.has_value());
  EXPECT_EQ(*bad.error, InvalidArgumentError("truncated JPEG"));
  JobRecord late = Job("late");
  EXPECT_EQ(late.state, JobState::kFailed);
  ASSERT_TRUE(late.error.has_value());
  EXPECT_EQ(late.error->code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(late.created_ms, kT0 + 1000);  // no capture time: now

  auto r = Get("/api/v1/jobs/bad/result");
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(ErrorCode(r), "invalid_argument");
  EXPECT_EQ(json::parse(r->body)["error"]["message"], "truncated JPEG");
  r = Get("/api/v1/jobs/late/result");
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(ErrorCode(r), "deadline_exceeded");
  // Both are still successfully stored records, not malformed ones.
  EXPECT_EQ(service_->stats().results_stored, 2U);
}

TEST_F(RecorderTest, MalformedMessagesAreCountedAndAckedAndLaterOnesStillStored) {
  bus::Message not_json{kTopic, "x1", Bytes("{not json"), {}};
  not_json.headers.Set(header::kContentType, "application/json");
  Publish(not_json);
  bus::Message no_frame{kTopic, "x2", Bytes(R"({"schema_version":1,"status":"ok"})"), {}};
  no_frame.headers.Set(header::kContentType, "application/json");
  Publish(no_frame);
  bus::Message bad_image{kTopic, "x3", Bytes("\xFF\xD8 not really a jpeg"), {}};
  bad_image.headers.Set(header::kContentType, "image/jpeg");
  Publish(bad_image);
  bus::Message anonymous = ImageMessage("x4");
  anonymous.key.clear();
  anonymous.headers = {};
  anonymous.headers.Set(header::kContentType, "image/jpeg");
  Publish(anonymous);
  Publish(ResultMessage(MakeResult("good", protocol::FrameStatus::kOk, kT0)));
  Drain();

  EXPECT_EQ(subscriber_->acked(), (std::set<std::int64_t>{0, 1, 2, 3, 4}));
  const RecorderStats stats = service_->stats();
  EXPECT_EQ(stats.malformed, 4U);
  EXPECT_EQ(stats.results_stored, 1U);
  EXPECT_EQ(stats.failed, 0U);
  EXPECT_EQ(Job("good").state, JobState::kDone);
  EXPECT_EQ(store_->CountJobs().value(), 1U);
  const std::string text = metrics_->RenderPrometheus();
  EXPECT_NE(text.find(R"(kadr_jobs_records_total{kind="any",outcome="malformed"} 4)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(kadr_jobs_records_total{kind="result",outcome="stored"} 1)"),
            std::string::npos)
      << text;
}

TEST_F(RecorderTest, RedeliveredMessagesAreHarmless) {
  const auto result = MakeResult("dup", protocol::FrameStatus::kOk, kT0);
  for (int i = 0; i < 2; ++i) {
    Publish(ImageMessage("dup"));
    Publish(ResultMessage(result));
  }
  Drain();
  EXPECT_EQ(store_->CountJobs().value(), 1U);
  const JobRecord job = Job("dup");
  EXPECT_EQ(job.state, JobState::kDone);
  EXPECT_TRUE(job.has_image);
  EXPECT_EQ(job.result_json, protocol::FrameResultToJson(result));
  EXPECT_EQ(subscriber_->acked().size(), 4U);
}

TEST_F(RecorderTest, StoreFailureIsCountedAndAckedAndDoesNotBlockTheStream) {
  Close();
  options_.store_attempts = 2;
  options_.store_retry_backoff = 0ms;
  Open();
  // Image files can no longer be written: images/ is now a plain file.
  fs::remove_all(history_.dir / "images");
  std::ofstream(history_.dir / "images") << "not a directory";
  Publish(ImageMessage("f1"));
  Publish(ResultMessage(MakeResult("f2", protocol::FrameStatus::kOk, kT0)));
  Drain();
  const RecorderStats stats = service_->stats();
  EXPECT_EQ(stats.failed, 1U);
  EXPECT_EQ(stats.malformed, 0U);
  EXPECT_EQ(stats.results_stored, 1U);
  EXPECT_EQ(subscriber_->acked(), (std::set<std::int64_t>{0, 1}));
  EXPECT_EQ(Job("f2").state, JobState::kDone);
  EXPECT_FALSE(Job("f1").has_image);
}

TEST_F(RecorderTest, KeyOrHashedStreamNamesTheJobWhenTheHeaderDoesNot) {
  bus::Message keyed = ResultMessage(MakeResult("ignored", protocol::FrameStatus::kOk, kT0));
  keyed.headers = {};
  keyed.headers.Set(header::kContentType, "application/json");
  keyed.key = "from-key";
  Publish(keyed);
  Publish(ResultMessage(MakeResult("rtsp://cam/1", protocol::FrameStatus::kOk, kT0)));
  Drain();
  EXPECT_EQ(Job("from-key").state, JobState::kDone);
  const std::string id = JobIdForStream("rtsp://cam/1");
  EXPECT_EQ(Job(id).state, JobState::kDone);
  EXPECT_EQ(Get("/api/v1/jobs/" + id)->status, 200);
}

TEST_F(RecorderTest, UnlabelledPngIsSniffedAndStoredAsJpeg) {
  bus::Message png{kTopic, "png1", EncodeImage(300, 100, ".png"), {}};
  Publish(png);
  Drain();
  EXPECT_EQ(service_->stats().images_stored, 1U);
  auto image = store_->LoadAnnotatedImage("png1");
  ASSERT_TRUE(image.has_value());
  ASSERT_GE(image->size(), 2U);
  EXPECT_EQ((*image)[0], 0xFF);
  EXPECT_EQ((*image)[1], 0xD8);
}

TEST_F(RecorderTest, RetentionRunsEveryNRecordsAndEveryInterval) {
  Close();
  history_.retention.max_jobs = 2;
  history_.retention.max_age =
      std::chrono::hours(24 * 365 * 100);  // the store ages by the real clock
  options_.enforce_every_records = 3;
  options_.enforce_interval = 10s;
  Open();
  for (int i = 0; i < 3; ++i) {
    Publish(
        ResultMessage(MakeResult("n" + std::to_string(i), protocol::FrameStatus::kOk, kT0 + i)));
  }
  Drain();
  EXPECT_EQ(store_->CountJobs().value(), 2U);  // the third record triggered it
  EXPECT_FALSE(store_->GetJob("n0").has_value());

  Publish(ResultMessage(MakeResult("n3", protocol::FrameStatus::kOk, kT0 + 3)));
  Drain();
  EXPECT_EQ(store_->CountJobs().value(), 3U);  // not due yet
  now_ms_ += 10'000;
  EXPECT_EQ(service_->PollOnce(0ms), 0U);
  EXPECT_EQ(store_->CountJobs().value(), 2U);  // the interval passed
}

TEST_F(RecorderTest, ListIsNewestFirstWithPaginationAndRejectsBadValues) {
  for (int i = 0; i < 5; ++i) {
    Publish(
        ResultMessage(MakeResult("job" + std::to_string(i), protocol::FrameStatus::kOk, kT0 + i)));
  }
  Drain();

  auto r = Get("/api/v1/jobs");
  ASSERT_EQ(r->status, 200);
  json body = json::parse(r->body);
  EXPECT_EQ(body["total"], 5);
  ASSERT_EQ(body["jobs"].size(), 5U);
  EXPECT_EQ(body["jobs"][0]["id"], "job4");
  EXPECT_EQ(body["jobs"][4]["id"], "job0");
  EXPECT_EQ(body["jobs"][0], json::parse(JobToJson(Job("job4"))));

  r = Get("/api/v1/jobs?limit=2&offset=1");
  ASSERT_EQ(r->status, 200);
  body = json::parse(r->body);
  EXPECT_EQ(body["total"], 5);
  ASSERT_EQ(body["jobs"].size(), 2U);
  EXPECT_EQ(body["jobs"][0]["id"], "job3");
  EXPECT_EQ(body["jobs"][1]["id"], "job2");

  r = Get("/api/v1/jobs?limit=500&offset=10");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body), json::parse(R"({"jobs": [], "total": 5})"));

  for (const char* bad : {"limit=0", "limit=501", "limit=abc", "limit=-1", "limit=5x", "offset=-1",
                          "offset=x", "limit="}) {
    r = Get(std::string("/api/v1/jobs?") + bad);
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_EQ(ErrorCode(r), "invalid_argument") << bad;
  }
}

TEST_F(RecorderTest, ThumbnailIsASmallerJpegAndImageIsTheOriginal) {
  const bus::Message image = ImageMessage("t1", 800, 600);
  Publish(image);
  Publish(ResultMessage(MakeResult("t1", protocol::FrameStatus::kOk, kT0)));
  Drain();

  auto thumb = Get("/api/v1/jobs/t1/thumbnail");
  ASSERT_EQ(thumb->status, 200);
  EXPECT_EQ(thumb->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_EQ(thumb->get_header_value("Cache-Control"), "private, max-age=3600");
  const cv::Mat small = DecodeJpeg(thumb->body);
  ASSERT_FALSE(small.empty());
  EXPECT_EQ(small.cols, 240);
  EXPECT_EQ(small.rows, 180);
  EXPECT_LT(thumb->body.size(), image.value.size());

  auto full = Get("/api/v1/jobs/t1/image");
  ASSERT_EQ(full->status, 200);
  EXPECT_EQ(full->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_EQ(full->body, std::string(image.value.begin(), image.value.end()));

  // A small image is not scaled up.
  Publish(ImageMessage("t2", 100, 50));
  Drain();
  const cv::Mat tiny = DecodeJpeg(Get("/api/v1/jobs/t2/thumbnail")->body);
  EXPECT_EQ(tiny.cols, 100);
  EXPECT_EQ(tiny.rows, 50);
}

TEST_F(RecorderTest, JobRoutesAnswerInTheApiShape) {
  Publish(ResultMessage(MakeResult("done1", protocol::FrameStatus::kOk, kT0, 2)));
  Publish(ImageMessage("done1"));
  Publish(ImageMessage("running1"));
  Drain();

  auto r = Get("/api/v1/jobs/done1");
  ASSERT_EQ(r->status, 200);
  json job = json::parse(r->body);
  EXPECT_EQ(job, json::parse(JobToJson(Job("done1"))));
  EXPECT_EQ(job["state"], "done");
  EXPECT_EQ(job["links"]["thumbnail"], "/api/v1/jobs/done1/thumbnail");

  r = Get("/api/v1/jobs/done1/result");
  ASSERT_EQ(r->status, 200);
  const json result = json::parse(r->body);
  EXPECT_EQ(result["job_id"], "done1");
  EXPECT_EQ(result["model"], "yolox_nano");
  EXPECT_EQ(result["image"], json::parse(R"({"width": 640, "height": 480})"));
  EXPECT_EQ(result["detections"].size(), 2U);
  EXPECT_EQ(result["timings_ms"]["inference"], 12.5);
  EXPECT_EQ(result["annotated_image"], "/api/v1/jobs/done1/image");

  r = Get("/api/v1/jobs/running1/result");
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(json::parse(r->body)["state"], "running");
}

TEST_F(RecorderTest, UnknownJobsAndInvalidIdsAre404) {
  Publish(ResultMessage(MakeResult("noimg", protocol::FrameStatus::kOk, kT0)));
  Drain();
  for (const char* path : {"/api/v1/jobs/nope", "/api/v1/jobs/nope/result",
                           "/api/v1/jobs/nope/image", "/api/v1/jobs/nope/thumbnail",
                           "/api/v1/jobs/noimg/image", "/api/v1/jobs/noimg/thumbnail"}) {
    auto r = Get(path);
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_EQ(ErrorCode(r), "not_found") << path;
    EXPECT_EQ(r->body.find(history_.dir.string()), std::string::npos) << r->body;
  }
  for (const char* path :
       {"/api/v1/jobs/bad.id", "/api/v1/jobs/bad.id/result", "/api/v1/jobs/bad.id/image",
        "/api/v1/jobs/bad.id/thumbnail", "/api/v1/jobs/%2E%2E/thumbnail"}) {
    auto r = Get(path);
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_EQ(ErrorCode(r), "not_found") << path;
  }
}

TEST_F(RecorderTest, HistorySurvivesARestart) {
  Publish(ResultMessage(MakeResult("keep", protocol::FrameStatus::kOk, kT0)));
  Publish(ImageMessage("keep"));
  Drain();
  Close();

  bus_ = std::make_unique<bus::FakeBus>();  // a new process: nothing is redelivered
  Open();
  auto r = Get("/api/v1/jobs");
  ASSERT_EQ(r->status, 200);
  const json body = json::parse(r->body);
  EXPECT_EQ(body["total"], 1);
  EXPECT_EQ(body["jobs"][0]["id"], "keep");
  EXPECT_EQ(body["jobs"][0]["state"], "done");
  EXPECT_EQ(Get("/api/v1/jobs/keep/thumbnail")->status, 200);
  EXPECT_EQ(Get("/api/v1/jobs/keep/result")->status, 200);
}

TEST_F(RecorderTest, RunRecordsUntilStoppedAndClosesTheSubscriber) {
  Publish(ResultMessage(MakeResult("r1", protocol::FrameStatus::kOk, kT0)));
  Status run_status = InternalError("not run");
  {
    std::jthread runner([&](const std::stop_token& stop) { run_status = service_->Run(stop); });
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (service_->stats().results_stored < 1 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
  }  // requests stop and joins
  EXPECT_TRUE(run_status.ok()) << run_status.ToString();
  EXPECT_TRUE(subscriber_->closed());
  EXPECT_EQ(Job("r1").state, JobState::kDone);
}

TEST_F(RecorderTest, SnapshotsAndResultsMergeAlongTheStateMachineInAnyOrder) {
  // The gateway's snapshot first, then the worker's answer: done, the snapshot's fields kept.
  Publish(Snapshot(QueuedImage("s1", kT0, kT0 + 30000)));
  Drain();
  EXPECT_EQ(Job("s1").state, JobState::kQueued);
  EXPECT_EQ(Job("s1").deadline_ms, kT0 + 30000);
  Publish(ImageMessage("s1"));
  Drain();
  EXPECT_EQ(Job("s1").state, JobState::kRunning);
  Publish(ResultMessage(MakeResult("s1", protocol::FrameStatus::kOk, kT0)));
  Drain();
  JobRecord job = Job("s1");
  EXPECT_EQ(job.state, JobState::kDone);
  EXPECT_EQ(job.source_name, "upload.jpg");
  EXPECT_TRUE(job.has_image);

  // The answer first, then a late snapshot: it cannot move a done job back, only fill in.
  Publish(ResultMessage(MakeResult("s2", protocol::FrameStatus::kOk, kT0 + 5)));
  Drain();
  JobRecord late = QueuedImage("s2", kT0, kT0 + 30000);
  late.source_name = "late.jpg";
  Publish(Snapshot(late));
  Drain();
  job = Job("s2");
  EXPECT_EQ(job.state, JobState::kDone);
  EXPECT_EQ(job.created_ms, kT0);  // the runner's own time
  EXPECT_EQ(job.deadline_ms, kT0 + 30000);
  EXPECT_FALSE(job.result_json.empty());
  EXPECT_EQ(service_->stats().stale, 1U);
  EXPECT_EQ(service_->stats().events_stored, 2U);
}

TEST_F(RecorderTest, AJobWithoutAnAnswerFailsPastItsDeadlineAndALateAnswerCannotReviveIt) {
  Publish(Snapshot(QueuedImage("lost", kT0, kT0 + 500)));
  Drain();
  now_ms_ = kT0 + 500 + options_.overdue_grace.count() - 1;
  EXPECT_EQ(service_->PollOnce(0ms), 0U);
  EXPECT_EQ(Job("lost").state, JobState::kQueued);  // within the grace
  now_ms_ += 1 + options_.sweep_interval.count();
  EXPECT_EQ(service_->PollOnce(0ms), 0U);
  JobRecord job = Job("lost");
  EXPECT_EQ(job.state, JobState::kFailed);
  ASSERT_TRUE(job.error.has_value());
  EXPECT_EQ(job.error->code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(job.error->message().find("500 ms"), std::string::npos) << job.error->message();
  EXPECT_EQ(service_->stats().overdue, 1U);
  EXPECT_EQ(Get("/api/v1/jobs/lost/result")->status, 504);

  Publish(ResultMessage(MakeResult("lost", protocol::FrameStatus::kOk, kT0)));
  Drain();
  EXPECT_EQ(Job("lost").state, JobState::kFailed);
  EXPECT_EQ(service_->stats().stale, 1U);
}

TEST_F(RecorderTest, VideoAndLiveFramesAndControlMessagesAreIgnored) {
  for (const char* kind : {protocol::kind::kVideo, protocol::kind::kLive}) {
    bus::Message m =
        ResultMessage(MakeResult(std::string("k-") + kind, protocol::FrameStatus::kOk, kT0));
    m.headers.Set(header::kKind, kind);
    Publish(m);
  }
  bus::Message cancel = CancelRequestMessage(RunningVideo("v0"));
  cancel.topic = kTopic;
  Publish(cancel);
  Drain();
  EXPECT_EQ(store_->CountJobs().value(), 0U);
  EXPECT_EQ(service_->stats().ignored, 3U);
  EXPECT_EQ(subscriber_->acked().size(), 3U);
}

TEST_F(RecorderTest, AJobJustMadeIsWaitedForAndAnOldUnknownOneIsNotFoundAtOnce) {
  const std::string fresh = NewJobId(now_ms_.load());
  std::jthread late_snapshot([&] {
    std::this_thread::sleep_for(50ms);
    Publish(Snapshot(QueuedImage(fresh, now_ms_.load(), 0)));
    Drain();
  });
  auto r = Get("/api/v1/jobs/" + fresh);
  EXPECT_EQ(r->status, 200) << r->body;
  late_snapshot.join();

  const std::string old = NewJobId(now_ms_.load() - 60'000);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Get("/api/v1/jobs/" + old)->status, 404);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 150ms);  // not waited for
}

TEST_F(RecorderTest, CancelAsksTheJobsRunnerAndAnswersWithTheCancelledJob) {
  Publish(Snapshot(RunningVideo("v1")));
  Drain();
  std::jthread runner([&] {
    // The runner: sees the request on its reply topic and says it cancelled.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (bus_->Size("kadr.replies.gw-a") == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    const auto requests = bus_->Topic("kadr.replies.gw-a");
    ASSERT_EQ(requests.size(), 1U);
    EXPECT_EQ(CancelRequestJobId(requests[0]), "v1");
    JobRecord cancelled = RunningVideo("v1");
    cancelled.state = JobState::kCancelled;
    cancelled.error = CancelledError("the job was cancelled");
    Publish(Snapshot(cancelled));
    Drain();
  });
  auto r = client_->Delete("/api/v1/jobs/v1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["state"], "cancelled");
  runner.join();
  // Finished and image jobs cannot be cancelled; unknown ones are not found.
  EXPECT_EQ(client_->Delete("/api/v1/jobs/v1")->status, 409);
  Publish(ResultMessage(MakeResult("img", protocol::FrameStatus::kOk, kT0)));
  Publish(Snapshot(QueuedImage("img2", kT0, kT0 + 60'000)));
  Drain();
  EXPECT_EQ(client_->Delete("/api/v1/jobs/img")->status, 409);
  EXPECT_EQ(client_->Delete("/api/v1/jobs/img2")->status, 409);
  EXPECT_EQ(client_->Delete("/api/v1/jobs/nope")->status, 404);
}

TEST_F(RecorderTest, AVideoJobsResultAndVideoAreServedFromTheSharedFolder) {
  JobRecord job = RunningVideo("v2");
  Publish(Snapshot(job));
  Drain();
  auto r = Get("/api/v1/jobs/v2");
  ASSERT_EQ(r->status, 200);
  json body = json::parse(r->body);
  EXPECT_EQ(body["kind"], "video");
  EXPECT_EQ(body["video"]["fps"], 25);  // the runner's details
  EXPECT_EQ(body["progress"]["frames_done"], 3);
  EXPECT_EQ(Get("/api/v1/jobs/v2/result")->status, 202);
  EXPECT_EQ(Get("/api/v1/jobs/v2/video")->status, 409);

  std::ofstream(VideoOutputPath(history_.dir.string(), "v2", ".jsonl"))
      << R"({"index":0,"detections":[]})"
      << "\n"
      << R"({"index":1,"detections":[]})"
      << "\n";
  std::ofstream(VideoOutputPath(history_.dir.string(), "v2", ".mp4"), std::ios::binary)
      << "0123456789";
  job.state = JobState::kDone;
  job.frames_done = job.frames_total;
  Publish(Snapshot(job));
  Drain();
  r = Get("/api/v1/jobs/v2/result");
  ASSERT_EQ(r->status, 200) << r->body;
  body = json::parse(r->body);
  EXPECT_EQ(body["frames"].size(), 2U);
  EXPECT_EQ(body["video"]["width"], 64);
  r = client_->Get("/api/v1/jobs/v2/video", {{"Range", "bytes=2-5"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, "2345");
  EXPECT_EQ(Get("/api/v1/jobs/s-none/video")->status, 404);
  Publish(ResultMessage(MakeResult("img", protocol::FrameStatus::kOk, kT0)));
  Drain();
  EXPECT_EQ(Get("/api/v1/jobs/img/video")->status, 404);
}

TEST_F(RecorderTest, LargeVideosAndResultsAreReadOnlyAsFarAsTheyAreSent) {
  JobRecord job = RunningVideo("v3");
  job.state = JobState::kDone;
  job.frames_done = job.frames_total;
  // 20 MiB of "video" and 20,000 result lines: more than one answer carries in memory.
  std::string video(20u << 20, '\0');
  for (std::size_t i = 0; i < video.size(); ++i) video[i] = static_cast<char>(i * 7 % 251);
  std::ofstream(VideoOutputPath(history_.dir.string(), "v3", ".mp4"), std::ios::binary) << video;
  {
    std::ofstream lines(VideoOutputPath(history_.dir.string(), "v3", ".jsonl"));
    for (int i = 0; i < 20000; ++i) {
      lines << R"({"index":)" << i << R"(,"detections":[{"label":"car","score":0.5,"pad":")"
            << std::string(400, 'p') << "\"}]}\n";
    }
  }
  Publish(Snapshot(job));
  Drain();
  // A range is answered from the file, and a long one is cut to 8 MiB.
  auto r = client_->Get("/api/v1/jobs/v3/video", {{"Range", "bytes=1000-1009"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, video.substr(1000, 10));
  r = client_->Get("/api/v1/jobs/v3/video", {{"Range", "bytes=0-"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->get_header_value("Content-Range"),
            "bytes 0-" + std::to_string((8u << 20) - 1) + "/" + std::to_string(video.size()));
  EXPECT_EQ(r->body, video.substr(0, 8u << 20));
  // The whole file is streamed in blocks, and arrives whole.
  r = Get("/api/v1/jobs/v3/video");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Transfer-Encoding"), "chunked");
  EXPECT_EQ(r->body.size(), video.size());
  EXPECT_TRUE(r->body == video);
  // The results too, as JSON (joined) and as JSON lines.
  r = Get("/api/v1/jobs/v3/result");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Transfer-Encoding"), "chunked");
  json body = json::parse(r->body);
  ASSERT_EQ(body["frames"].size(), 20000U);
  EXPECT_EQ(body["frames"][19999]["index"], 19999);
  EXPECT_EQ(body["job_id"], "v3");
  r = client_->Get("/api/v1/jobs/v3/result?format=jsonl");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(std::count(r->body.begin(), r->body.end(), '\n'), 20000);
}

}  // namespace
}  // namespace kadr::jobs
