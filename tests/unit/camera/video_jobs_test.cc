// Video jobs end to end on the in-memory bus with a fake worker (fast and deterministic): a
// gateway takes the upload, a camera service runs the job, the recorder materialises it and
// the job routes serve it. The real pipeline is tests/integration/video_job_test.cc.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
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
#include "camera/camera_service.h"
#include "gateway/gateway_service.h"
#include "http/server.h"
#include "jobs/job_store.h"
#include "jobs/recorder.h"
#include "protocol/frame.h"
#include "support/test_data.h"
#include "video/video.h"

namespace kadr::camera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

using gateway::GatewayOptions;
using gateway::GatewayService;

constexpr char kReplyTopic[] = "kadr.replies.gw";             // the gateway's
constexpr char kCameraReplies[] = "kadr.video.replies.cam1";  // the camera service's
constexpr char kModel[] = "m";

std::vector<std::uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string Str(const std::vector<std::uint8_t>& v) { return {v.begin(), v.end()}; }

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// An MP4 of `frames` frames, each with a bright square moving right.
std::string MakeVideo(const fs::path& dir, int frames, double fps = 10.0,
                      cv::Size size = {96, 64}) {
  const fs::path path = dir / "in.mp4";
  auto writer = video::Mp4Writer::Open(path.string(), fps, size);
  EXPECT_TRUE(writer.has_value());
  for (int i = 0; i < frames; ++i) {
    cv::Mat m(size, CV_8UC3, cv::Scalar(40, 80, 120));
    cv::rectangle(m, cv::Rect(2 * i % 80, 20, 16, 16), cv::Scalar(255, 255, 255), cv::FILLED);
    EXPECT_TRUE(writer->Write(m).ok());
  }
  EXPECT_TRUE(writer->Close().ok());
  return Str(kadr::testing::ReadFileBytes(path));
}

// Answers video frames like a worker: annotated image (a grey picture) then the result, with
// a track id; `error_every` makes every n-th frame an error; `silent` answers nothing.
class FakeWorker {
 public:
  explicit FakeWorker(bus::FakeBus& bus) : bus_(bus) {
    thread_ = std::jthread([this](const std::stop_token& stop) { Loop(stop); });
  }
  std::atomic<int> error_every{0};
  std::atomic<bool> silent{false};
  std::atomic<bool> hold{false};
  std::atomic<int> frames{0};

 private:
  void Loop(const std::stop_token& stop) {
    bus::FakeSubscriber sub(bus_, protocol::FramesTopic(kModel));
    bus::FakePublisher pub(bus_);
    cv::Mat grey(64, 96, CV_8UC3, cv::Scalar(128, 128, 128));
    std::vector<std::uint8_t> annotated;
    cv::imencode(".jpg", grey, annotated);
    while (!stop.stop_requested()) {
      for (const auto& in : sub.Poll(4, 5ms, 0ms)) {
        while (hold.load() && !stop.stop_requested()) std::this_thread::sleep_for(1ms);
        const int n = ++frames;
        auto m = protocol::DecodeFrameHeaders(in.message.headers);
        if (!m || silent.load()) continue;
        protocol::FrameResult r;
        r.frame_id = m->frame_id;
        r.stream_id = m->stream_id;
        r.sequence = m->sequence;
        r.correlation_id = m->correlation_id;
        const int every = error_every.load();
        if (every > 0 && n % every == 0) {
          r.status = protocol::FrameStatus::kError;
          r.error = InternalError("inference failed");
        } else {
          protocol::Detection d;
          d.class_id = 1;
          d.label = "car";
          d.score = 0.9f;
          d.box = {static_cast<float>(m->sequence), 20, 16, 16};
          d.track_id = 1;
          r.result.detections = {d};
          r.result.image_width = 96;
          r.result.image_height = 64;
          r.annotated_topic = m->annotated_to;
          bus::Message image{m->annotated_to, m->stream_id, annotated, {}};
          image.headers.Set(protocol::header::kCorrelationId, m->correlation_id);
          image.headers.Set(protocol::header::kKind, m->kind);
          image.headers.Set(protocol::header::kContentType, "image/jpeg");
          (void)pub.Publish(std::move(image), nullptr);
        }
        bus::Message result{m->reply_to, m->stream_id, Bytes(protocol::FrameResultToJson(r)), {}};
        result.headers.Set(protocol::header::kCorrelationId, m->correlation_id);
        result.headers.Set(protocol::header::kKind, m->kind);
        result.headers.Set(protocol::header::kContentType, "application/json");
        (void)pub.Publish(std::move(result), nullptr);
      }
    }
  }
  bus::FakeBus& bus_;
  std::jthread thread_;
};

class VideoJobsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = kadr::testing::MakeTempDir(); }

  GatewayOptions Options() {
    GatewayOptions o;
    o.reply_topic = kReplyTopic;
    o.broker_check_interval = 5ms;
    o.poll_timeout = 2ms;
    o.video_dir = (dir_ / "videos").string();
    return o;
  }

  CameraOptions CameraOpts() {
    CameraOptions o;
    o.data_dir = dir_ / "camera";
    o.poll_timeout = 2ms;
    o.video.dir = (dir_ / "videos").string();
    o.video.camera_id = "cam1";
    o.video.reply_topic = kCameraReplies;
    o.video.window = 4;
    o.video.max_running = 1;
    return o;
  }

  void Start(GatewayOptions options, CameraOptions camera_options) {
    worker_ = std::make_unique<FakeWorker>(bus_);
    gateway::ConfiguredModel m;
    m.name = kModel;
    m.labels = {"person", "car"};
    const std::string video_dir =
        options.video_dir.empty() ? camera_options.video.dir : options.video_dir;
    auto service = GatewayService::Create(
        std::move(options), publisher_, replies_, workers_,
        std::vector<gateway::ConfiguredModel>{m}, [] { return Status::Ok(); }, metrics_);
    ASSERT_TRUE(service.has_value()) << service.error().ToString();
    service_ = std::move(service).value();
    auto camera = CameraService::Create(
        std::move(camera_options), publisher_, camera_results_, &camera_requests_, metrics_,
        [](std::string_view) { return Status::Ok(); }, OpenCvSourceFactory());
    ASSERT_TRUE(camera.has_value()) << camera.error().ToString();
    camera_ = std::move(camera).value();
    jobs::RecorderOptions ro;
    ro.poll_timeout = 2ms;
    recorder_ = std::make_unique<jobs::Recorder>(ro, store_, recorder_in_, metrics_);
    http::HttpServerOptions ho;
    ho.port = 0;
    ho.threads = 4;
    server_ = std::move(http::HttpServer::Create(ho)).value();
    ASSERT_TRUE(service_->RegisterRoutes(*server_).ok());
    jobs::JobRoutesOptions jo;
    jo.video_dir = video_dir;
    ASSERT_TRUE(jobs::RegisterJobRoutes(*server_, jo, store_, *recorder_, publisher_).ok());
    ASSERT_TRUE(server_->Start().ok());
    run_ = std::jthread([this](const std::stop_token& stop) { (void)service_->Run(stop); });
    camera_run_ = std::jthread([this](const std::stop_token& stop) { (void)camera_->Run(stop); });
    record_ = std::jthread([this](const std::stop_token& stop) { (void)recorder_->Run(stop); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(20s);
    protocol::WorkerHeartbeat hb;
    hb.worker_id = "w1";
    hb.model = kModel;
    hb.ts_ms = UnixMillisNow();
    hb.state = "running";
    const std::int64_t offset = bus_.Append({std::string(protocol::kWorkersTopic),
                                             "w1",
                                             Bytes(protocol::WorkerHeartbeatToJson(hb)),
                                             {}});
    // This announcement: a test that starts again must not pass on the last start's.
    ASSERT_TRUE(WaitFor([&] { return workers_.acked().count(offset) > 0; }));
  }
  void Start(GatewayOptions options) { Start(std::move(options), CameraOpts()); }

  static std::int64_t UnixMillisNow() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  void TearDown() override {
    if (server_) server_->Stop();
    run_ = {};
    camera_run_ = {};  // stops the camera service's jobs where they are
    record_ = {};
    worker_.reset();
  }

  json GetJson(const std::string& path) {
    auto r = client_->Get(path);
    EXPECT_TRUE(r);
    return r ? json::parse(r->body, nullptr, false) : json();
  }

  json WaitForState(const std::string& id, const std::string& state) {
    json job;
    EXPECT_TRUE(WaitFor([&] {
      job = GetJson("/api/v1/jobs/" + id);
      return job.value("state", "") == state;
    })) << job.dump();
    return job;
  }

  fs::path dir_;
  bus::FakeBus bus_;
  bus::FakePublisher publisher_{bus_};
  bus::FakeSubscriber replies_{bus_, kReplyTopic};
  bus::FakeSubscriber workers_{bus_, std::string(protocol::kWorkersTopic)};
  bus::FakeSubscriber camera_results_{bus_, {kCameraReplies, std::string(protocol::kWorkersTopic)}};
  bus::FakeSubscriber camera_requests_{bus_, std::string(protocol::kVideoJobsTopic)};
  MetricsRegistry metrics_;
  // The job reads: the recorder materialises snapshots and answers into the store.
  jobs::MemoryJobStore store_;
  bus::FakeSubscriber recorder_in_{bus_, {std::string(protocol::kJobsTopic), kReplyTopic}};
  std::unique_ptr<jobs::Recorder> recorder_;
  std::unique_ptr<FakeWorker> worker_;
  std::unique_ptr<GatewayService> service_;
  std::unique_ptr<CameraService> camera_;
  std::unique_ptr<http::HttpServer> server_;
  std::jthread run_;
  std::jthread camera_run_;
  std::jthread record_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(VideoJobsTest, VideoJobProducesAnMp4WithEveryFrameAndPerFrameResults) {
  Start(Options());
  const std::string mp4 = MakeVideo(dir_, 23, 12.0);
  auto r = client_->Post("/api/v1/jobs?model=m", mp4, "video/mp4");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json accepted = json::parse(r->body);
  const std::string id = accepted["id"];
  EXPECT_EQ(r->get_header_value("Location"), "/api/v1/jobs/" + id);
  EXPECT_EQ(accepted["kind"], "video");
  EXPECT_EQ(accepted["video"]["frames"], 23);
  EXPECT_DOUBLE_EQ(accepted["video"]["fps"].get<double>(), 12.0);
  EXPECT_EQ(accepted["links"]["video"], "/api/v1/jobs/" + id + "/video");

  const json done = WaitForState(id, "done");
  EXPECT_EQ(done["progress"]["frames_done"], 23);
  EXPECT_EQ(done["progress"]["frames_total"], 23);
  EXPECT_EQ(done["progress"]["frames_failed"], 0);
  EXPECT_EQ(done["progress"]["eta_ms"], 0);

  // The frames went out as the contract says.
  const auto frames = bus_.Topic(protocol::FramesTopic(kModel));
  ASSERT_EQ(frames.size(), 23u);
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto& f = frames[i];
    EXPECT_EQ(f.key, id);
    EXPECT_EQ(f.headers.Get(protocol::header::kKind), "video");
    EXPECT_EQ(f.headers.Get(protocol::header::kSequence), std::to_string(i));
    EXPECT_EQ(f.headers.Get(protocol::header::kCorrelationId), id + ":" + std::to_string(i));
    // Answers go to the camera service that runs the job, not to the gateway.
    EXPECT_EQ(f.headers.Get(protocol::header::kReplyTo), kCameraReplies);
    EXPECT_EQ(f.headers.Get(protocol::header::kAnnotatedTo), kCameraReplies);
  }

  auto video = client_->Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(video);
  ASSERT_EQ(video->status, 200);
  EXPECT_EQ(video->get_header_value("Content-Type"), "video/mp4");
  const fs::path out = dir_ / "out.mp4";
  {
    std::ofstream f(out, std::ios::binary);
    f << video->body;
  }
  auto reader = video::VideoFileReader::Open(out.string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_DOUBLE_EQ(reader->fps(), 12.0);
  EXPECT_EQ(reader->frame_count(), 23);
  cv::Mat frame;
  ASSERT_TRUE(*reader->Read(frame));
  // The source frame with its detection drawn by the camera service (the workers are asked
  // for no annotated image): around the box (0, 20, 16x16) it differs from the source, far
  // from it only by the codecs' noise.
  cv::Mat source(64, 96, CV_8UC3, cv::Scalar(40, 80, 120));
  cv::rectangle(source, cv::Rect(0, 20, 16, 16), cv::Scalar(255, 255, 255), cv::FILLED);
  cv::Mat diff;
  cv::absdiff(frame, source, diff);
  double near_box = 0;
  double far_away = 0;
  cv::minMaxLoc(diff(cv::Rect(0, 16, 24, 24)).reshape(1), nullptr, &near_box);
  cv::minMaxLoc(diff(cv::Rect(60, 44, 30, 16)).reshape(1), nullptr, &far_away);
  EXPECT_GT(near_box, 80) << "no box drawn";
  EXPECT_LT(far_away, 40);
  for (const auto& f : frames) EXPECT_EQ(f.headers.Get(protocol::header::kDraw), "0");

  // Byte ranges, as players ask for them.
  auto head = client_->Get("/api/v1/jobs/" + id + "/video", {{"Range", "bytes=0-9"}});
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 206);
  EXPECT_EQ(head->body, video->body.substr(0, 10));
  EXPECT_EQ(head->get_header_value("Content-Range"),
            "bytes 0-9/" + std::to_string(video->body.size()));
  auto tail = client_->Get("/api/v1/jobs/" + id + "/video", {{"Range", "bytes=-5"}});
  ASSERT_TRUE(tail);
  EXPECT_EQ(tail->status, 206);
  EXPECT_EQ(tail->body, video->body.substr(video->body.size() - 5));
  auto outside = client_->Get("/api/v1/jobs/" + id + "/video",
                              {{"Range", "bytes=" + std::to_string(video->body.size()) + "-"}});
  ASSERT_TRUE(outside);
  EXPECT_EQ(outside->status, 416);

  const json result = GetJson("/api/v1/jobs/" + id + "/result");
  ASSERT_EQ(result["frames"].size(), 23u) << result.dump();
  EXPECT_EQ(result["job_id"], id);
  for (int i = 0; i < 23; ++i) {
    const json& f = result["frames"][i];
    EXPECT_EQ(f["index"], i);
    EXPECT_EQ(f["status"], "ok");
    EXPECT_EQ(f["detections"][0]["track_id"], 1);
    EXPECT_EQ(f["detections"][0]["box"]["x"], i);
  }
  auto lines = client_->Get("/api/v1/jobs/" + id + "/result?format=jsonl");
  ASSERT_TRUE(lines);
  EXPECT_EQ(lines->get_header_value("Content-Type"), "application/x-ndjson");
  EXPECT_EQ(std::count(lines->body.begin(), lines->body.end(), '\n'), 23);

  // The upload is gone; the outputs stay.
  const fs::path videos = dir_ / "videos";
  EXPECT_FALSE(fs::exists(videos / (id + ".src")));
  EXPECT_TRUE(fs::exists(videos / (id + ".mp4")));
  EXPECT_TRUE(fs::exists(videos / (id + ".jsonl")));
  EXPECT_NE(metrics_.RenderPrometheus().find(
                "kadr_camera_video_frames_total{model=\"m\",outcome=\"ok\"} 23"),
            std::string::npos);
}

// The camera service draws the MP4 on the frames it decoded, so the frames only need to be as
// large as the model's input, which its workers announce (docs/adr/0017).
TEST_F(VideoJobsTest, FramesTravelAtTheModelsInputSizeWhileTheMp4KeepsTheVideos) {
  Start(Options());
  protocol::WorkerHeartbeat hb;
  hb.worker_id = "w1";  // the worker Start() announced, now with its input size
  hb.model = kModel;
  hb.ts_ms = UnixMillisNow();
  hb.input_width = 320;
  hb.input_height = 320;
  const std::int64_t offset = bus_.Append(
      {std::string(protocol::kWorkersTopic), "w1", Bytes(protocol::WorkerHeartbeatToJson(hb)), {}});
  ASSERT_TRUE(WaitFor([&] {
    return camera_results_.acked(std::string(protocol::kWorkersTopic)).count(offset) > 0;
  }));

  const std::string mp4 = MakeVideo(dir_, 6, 10.0, {640, 480});
  auto r = client_->Post("/api/v1/jobs?model=m", mp4, "video/mp4");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = json::parse(r->body)["id"];
  WaitForState(id, "done");

  const auto frames = bus_.Topic(protocol::FramesTopic(kModel));
  ASSERT_EQ(frames.size(), 6u);
  for (const auto& f : frames) {
    const cv::Mat wire = cv::imdecode(f.value, cv::IMREAD_COLOR);
    EXPECT_EQ(wire.size(), cv::Size(320, 240));
  }
  auto video = client_->Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(video);
  ASSERT_EQ(video->status, 200);
  const fs::path out = dir_ / "out.mp4";
  std::ofstream(out, std::ios::binary) << video->body;
  auto written = video::VideoFileReader::Open(out.string());
  ASSERT_TRUE(written.has_value()) << written.error().ToString();
  EXPECT_EQ(written->width(), 640);
  EXPECT_EQ(written->height(), 480);
}

TEST_F(VideoJobsTest, FramesWhoseResultIsAnErrorAreWrittenUnannotatedAndCounted) {
  Start(Options());
  worker_->error_every = 5;
  const std::string mp4 = MakeVideo(dir_, 12);
  auto r = client_->Post("/api/v1/jobs", mp4, "application/octet-stream");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = json::parse(r->body)["id"];
  const json done = WaitForState(id, "done");
  EXPECT_EQ(done["progress"]["frames_done"], 12);
  EXPECT_EQ(done["progress"]["frames_failed"], 2);  // frames 5 and 10 of the worker
  const json result = GetJson("/api/v1/jobs/" + id + "/result");
  ASSERT_EQ(result["frames"].size(), 12u);
  EXPECT_EQ(result["frames"][4]["status"], "error");
  EXPECT_EQ(result["frames"][4]["error"]["message"], "inference failed");
  EXPECT_TRUE(result["frames"][4]["detections"].empty());
}

TEST_F(VideoJobsTest, AFrameWithoutReplyFailsTheJobAtItsDeadline) {
  Start(Options());
  worker_->silent = true;
  const std::string mp4 = MakeVideo(dir_, 8);
  auto r = client_->Post("/api/v1/jobs?timeout_ms=300", mp4, "video/mp4");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = json::parse(r->body)["id"];
  const json failed = WaitForState(id, "failed");
  EXPECT_EQ(failed["error"]["code"], "deadline_exceeded");
  EXPECT_NE(failed["error"]["message"].get<std::string>().find("no result for frame 0"),
            std::string::npos);
  auto video = client_->Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(video);
  EXPECT_EQ(video->status, 409);
  EXPECT_FALSE(fs::exists(dir_ / "videos" / (id + ".src")));
  EXPECT_FALSE(fs::exists(dir_ / "videos" / (id + ".part.mp4")));
}

TEST_F(VideoJobsTest, CancelStopsARunningJobAndQueuedJobsRunAfterIt) {
  Start(Options());
  worker_->hold = true;  // the first job stays running
  const std::string mp4 = MakeVideo(dir_, 10);
  auto first = client_->Post("/api/v1/jobs", mp4, "video/mp4");
  auto second = client_->Post("/api/v1/jobs", mp4, "video/mp4");
  ASSERT_TRUE(first && second);
  ASSERT_EQ(first->status, 202);
  ASSERT_EQ(second->status, 202);
  const std::string a = json::parse(first->body)["id"];
  const std::string b = json::parse(second->body)["id"];
  WaitForState(a, "running");
  EXPECT_EQ(GetJson("/api/v1/jobs/" + b)["state"], "queued");  // one at a time
  auto cancelled = client_->Delete("/api/v1/jobs/" + a);
  ASSERT_TRUE(cancelled);
  ASSERT_EQ(cancelled->status, 200) << cancelled->body;
  EXPECT_EQ(json::parse(cancelled->body)["state"], "cancelled");
  worker_->hold = false;
  WaitForState(b, "done");
  EXPECT_EQ(GetJson("/api/v1/jobs/" + a)["state"], "cancelled");
  // Stopped publishing: the window (4) at most went out for the cancelled job.
  int published_a = 0;
  for (const auto& f : bus_.Topic(protocol::FramesTopic(kModel))) published_a += f.key == a;
  EXPECT_LE(published_a, 5);
  auto again = client_->Delete("/api/v1/jobs/" + a);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409);
  auto result = client_->Get("/api/v1/jobs/" + a + "/result");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 499);
  auto unknown = client_->Delete("/api/v1/jobs/j000000000000000000000000");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
}

TEST_F(VideoJobsTest, BadUploadsGetPreciseErrors) {
  Start(Options());
  auto text = client_->Post("/api/v1/jobs", "just some text, no video", "application/octet-stream");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 415);
  EXPECT_NE(text->body.find("neither an image"), std::string::npos) << text->body;

  const std::string mp4 = MakeVideo(dir_, 10);
  auto header_only = client_->Post("/api/v1/jobs", mp4.substr(0, 40), "video/mp4");
  ASSERT_TRUE(header_only);
  EXPECT_EQ(header_only->status, 400) << header_only->body;
  EXPECT_NE(header_only->body.find("truncated"), std::string::npos) << header_only->body;

  auto sync = client_->Post("/api/v1/detect", mp4, "video/mp4");
  ASSERT_TRUE(sync);
  EXPECT_EQ(sync->status, 415);
  EXPECT_NE(sync->body.find("/api/v1/jobs"), std::string::npos);

  auto unknown_model = client_->Post("/api/v1/jobs?model=nope", mp4, "video/mp4");
  ASSERT_TRUE(unknown_model);
  EXPECT_EQ(unknown_model->status, 404);
  // Nothing was left behind.
  for (const auto& e : fs::directory_iterator(dir_ / "videos")) {
    ADD_FAILURE() << "left behind: " << e.path();
  }
}

TEST_F(VideoJobsTest, VideosOverTheirLimitsAreRefusedBeforeTheyAreQueued) {
  GatewayOptions o = Options();
  o.max_video_frames = 5;
  o.max_video_side = 64;
  Start(o);
  const std::string mp4 = MakeVideo(dir_, 10);  // 96x64, 10 frames
  auto side = client_->Post("/api/v1/jobs", mp4, "video/mp4");
  ASSERT_TRUE(side);
  EXPECT_EQ(side->status, 413) << side->body;
  EXPECT_NE(side->body.find("96x64, more than 64 pixels a side"), std::string::npos) << side->body;
  TearDown();
  dir_ = kadr::testing::MakeTempDir();
  o = Options();
  o.max_video_frames = 5;
  Start(o);
  auto frames = client_->Post("/api/v1/jobs", MakeVideo(dir_, 10), "video/mp4");
  ASSERT_TRUE(frames);
  EXPECT_EQ(frames->status, 413) << frames->body;
  EXPECT_NE(frames->body.find("10 frames, more than 5"), std::string::npos) << frames->body;
  o.max_video_frames = 108000;
  TearDown();
  dir_ = kadr::testing::MakeTempDir();
  o = Options();
  o.max_video_seconds = 0.5;  // 10 frames at 10 fps last 1 s
  Start(o);
  auto seconds = client_->Post("/api/v1/jobs", MakeVideo(dir_, 10), "video/mp4");
  ASSERT_TRUE(seconds);
  EXPECT_EQ(seconds->status, 413) << seconds->body;
  EXPECT_NE(seconds->body.find("lasts 1.0 s, more than 0.5 s"), std::string::npos) << seconds->body;
  // Nothing was queued or left behind, and the gateway still takes a video that fits.
  for (const auto& e : fs::directory_iterator(dir_ / "videos")) {
    ADD_FAILURE() << "left behind: " << e.path();
  }
  auto fits = client_->Post("/api/v1/jobs", MakeVideo(dir_, 4), "video/mp4");
  ASSERT_TRUE(fits);
  EXPECT_EQ(fits->status, 202) << fits->body;
}

TEST_F(VideoJobsTest, AFullVideoFolderRefusesUploadsWith507) {
  GatewayOptions o = Options();
  const std::string mp4 = MakeVideo(dir_, 10);
  o.max_video_dir_bytes = mp4.size() + mp4.size() / 2;
  Start(o);
  auto first = client_->Post("/api/v1/jobs", mp4, "video/mp4");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 202) << first->body;
  // The upload (and soon its outputs) hold the folder: the next one does not fit.
  auto second = client_->Post("/api/v1/jobs", mp4, "video/mp4");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 507) << second->body;
  EXPECT_NE(second->body.find("the video folder is full"), std::string::npos) << second->body;
}

TEST_F(VideoJobsTest, ACameraReadsNoMoreFramesThanItsLimitWhateverTheContainerStates) {
  CameraOptions c = CameraOpts();
  c.video.max_frames = 3;
  Start(Options(), c);
  auto r = client_->Post("/api/v1/jobs", MakeVideo(dir_, 10), "video/mp4");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = json::parse(r->body)["id"];
  const json failed = WaitForState(id, "failed");
  EXPECT_NE(failed.dump().find("more than 3 frames"), std::string::npos) << failed.dump();
}

TEST_F(VideoJobsTest, OversizedVideoIs413) {
  GatewayOptions o = Options();
  o.max_video_bytes = 1000;
  Start(o);
  auto r = client_->Post("/api/v1/jobs", MakeVideo(dir_, 10), "video/mp4");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
}

TEST_F(VideoJobsTest, WithoutAVideoFolderVideosAreRefused) {
  GatewayOptions o = Options();
  o.video_dir.clear();
  Start(o, CameraOpts());
  auto r = client_->Post("/api/v1/jobs", MakeVideo(dir_, 3), "video/mp4");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  EXPECT_NE(r->body.find("does not take videos"), std::string::npos) << r->body;
}

TEST_F(VideoJobsTest, FinishedJobIsReadableAfterARestart) {
  std::string id;
  {
    Start(Options());
    auto r = client_->Post("/api/v1/jobs", MakeVideo(dir_, 5), "video/mp4");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202);
    id = json::parse(r->body)["id"];
    WaitForState(id, "done");
    TearDown();
    client_.reset();
    server_.reset();
    camera_.reset();
    service_.reset();
  }
  // A partial output from a crash is removed at start.
  std::ofstream(dir_ / "videos" / "jdeadbeef.part.mp4") << "x";
  Start(Options());
  EXPECT_FALSE(fs::exists(dir_ / "videos" / "jdeadbeef.part.mp4"));
  const json job = GetJson("/api/v1/jobs/" + id);
  EXPECT_EQ(job["state"], "done");
  EXPECT_EQ(job["kind"], "video");
  auto video = client_->Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(video);
  EXPECT_EQ(video->status, 200);
  EXPECT_EQ(GetJson("/api/v1/jobs/" + id + "/result")["frames"].size(), 5u);
}

// The job list (GET /api/v1/jobs, e.g. the web UI's History page) shows finished video jobs:
// their snapshots reach the job store.
TEST_F(VideoJobsTest, FinishedJobsAreRecordedInTheJobStore) {
  Start(Options());
  auto r =
      client_->Post("/api/v1/jobs?model=" + std::string(kModel), MakeVideo(dir_, 5), "video/mp4");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202);
  const std::string id = json::parse(r->body)["id"];
  WaitForState(id, "done");
  auto record = store_.GetJob(id);
  ASSERT_TRUE(record.has_value()) << record.error().ToString();
  EXPECT_EQ(record->kind, jobs::JobKind::kVideo);
  EXPECT_EQ(record->state, jobs::JobState::kDone);
  EXPECT_EQ(record->model, kModel);
  EXPECT_EQ(record->frames_total, 5);
  EXPECT_EQ(record->frames_done, 5);
  auto list = GetJson("/api/v1/jobs");
  ASSERT_EQ(list["jobs"].size(), 1u) << list.dump();
  EXPECT_EQ(list["jobs"][0]["id"], id);
}

}  // namespace
}  // namespace kadr::camera
