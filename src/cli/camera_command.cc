// `kadr camera`: the camera service on its own — live streams captured here, frames published
// to a broker, results read back from kadr.live.results — with the stream API, /healthz and
// /metrics on its own HTTP port. `kadr up` runs the same service inside the stack
// (stack_commands.cc, through MakeCameraService below).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "camera/camera_service.h"
#include "capture/source_policy.h"
#include "cli/app.h"
#include "cli/detail/camera_setup.h"
#include "cli/detail/commands.h"
#include "cli/detail/http_flags.h"
#include "cli/detail/kafka_flags.h"
#include "cli/detail/shutdown.h"
#include "common/metrics.h"
#include "http/server.h"
#include "inference/model_registry.h"
#include "kafka/kafka_bus.h"
#include "protocol/frame.h"
#include "protocol/topics.h"

namespace kadr::cli {

std::string CameraGroup(const std::string& camera_id) { return "kadr.camera." + camera_id; }

Result<CameraStack> MakeCameraService(const CameraFlags& flags, const std::string& camera_id,
                                      const std::string& data_dir, const std::string& video_dir,
                                      const std::string& default_model,
                                      const kafka::KafkaOptions& kafka_options,
                                      kafka::KafkaPublisher& publisher, MetricsRegistry& metrics,
                                      camera::ModelCheck check, int partitions,
                                      std::shared_ptr<engine::Admission> admission) {
  const std::string reply_topic = std::string(protocol::kVideoRepliesTopicPrefix) + camera_id;
  std::vector<std::string> topics = {std::string(protocol::kLiveResultsTopic),
                                     std::string(protocol::kLiveAnnotatedTopic)};
  if (!video_dir.empty()) {
    topics.emplace_back(protocol::kVideoJobsTopic);
  }
  for (const std::string& topic : topics) {
    // Not fatal: the first message creates the topic (auto-creation) once the broker is back.
    if (Status s = EnsureKadrTopic(publisher, topic, partitions); !s.ok()) {
      spdlog::warn("camera: topic {} not ready yet: {}", topic, s.ToString());
    }
  }
  if (!video_dir.empty()) {
    if (Status s = EnsureKadrTopic(publisher, reply_topic, 1); !s.ok()) {
      spdlog::warn("camera: topic {} not ready yet: {}", reply_topic, s.ToString());
    }
  }
  kafka::SubscriberOptions so;
  so.group_id = CameraGroup(camera_id);
  // kadr.workers: workers announce frames the broker deleted before they read them.
  so.topics = {std::string(protocol::kLiveResultsTopic), std::string(protocol::kWorkersTopic)};
  if (!video_dir.empty()) so.topics.push_back(reply_topic);
  so.metadata_refresh_ms = 5000;
  auto subscriber = kafka::KafkaSubscriber::Create(kafka_options, so);
  if (!subscriber) return subscriber.error().WithContext("camera consumer");
  CameraStack stack;
  stack.subscriber = std::move(*subscriber);
  if (!video_dir.empty()) {
    kafka::SubscriberOptions ro;
    ro.group_id = kVideoJobsGroup;  // one group: each video job runs on one camera service
    ro.topics = {std::string(protocol::kVideoJobsTopic)};
    ro.metadata_refresh_ms = 5000;
    auto requests = kafka::KafkaSubscriber::Create(kafka_options, ro);
    if (!requests) return requests.error().WithContext("camera video-job consumer");
    stack.requests = std::move(*requests);
  }
  camera::CameraOptions co;
  co.data_dir = data_dir;
  co.default_model = default_model;
  co.max_streams = flags.max_streams;
  co.probe_timeout = std::chrono::milliseconds(flags.probe_timeout_ms);
  co.sources.dirs = flags.source_dirs;
  co.sources.devices = flags.source_devices;
  co.sources.hosts = flags.source_hosts;
  co.runner.open_timeout = std::chrono::milliseconds(flags.open_timeout_ms);
  co.runner.stall_timeout = std::chrono::milliseconds(flags.stall_timeout_ms);
  co.video.dir = video_dir;
  co.video.camera_id = camera_id;
  co.video.reply_topic = reply_topic;
  co.video.max_running = flags.max_video_jobs;
  co.video.max_frames = flags.video_limits.max_frames;
  // Finished jobs' outputs stay within three quarters of the folder's quota, so that the
  // gateways' uploads (refused past the quota) always find room again (ADR 0015).
  co.video.max_kept_bytes = (std::uint64_t{flags.video_limits.max_dir_mb} << 20) / 4 * 3;
  co.runner.admission = std::move(admission);
  auto service =
      camera::CameraService::Create(co, publisher, *stack.subscriber, stack.requests.get(), metrics,
                                    std::move(check), camera::OpenCvSourceFactory());
  if (!service) return service.error().WithContext("camera service");
  stack.service = std::move(*service);
  spdlog::info("camera id={} group={} data_dir={} streams={} video_dir={}", camera_id, so.group_id,
               data_dir, stack.service->StreamIds().size(),
               video_dir.empty() ? "none (no video jobs)" : video_dir);
  return stack;
}

void AddVideoLimitFlags(CLI::App& sub, VideoLimitFlags& flags) {
  sub.add_option("--max-video-pixels", flags.max_pixels,
                 "largest frame of a video job, width x height (413 before it is queued)")
      ->envname("KADR_MAX_VIDEO_PIXELS")
      ->check(CLI::Range(std::int64_t{1024}, std::int64_t{8192} * 8192))
      ->capture_default_str();
  sub.add_option("--max-video-frames", flags.max_frames,
                 "most frames of a video job (413 when the container states more; a camera "
                 "service reads no more)")
      ->envname("KADR_MAX_VIDEO_FRAMES")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{100000000}))
      ->capture_default_str();
  sub.add_option("--max-video-seconds", flags.max_seconds,
                 "longest video a job takes, seconds (413 before it is queued)")
      ->envname("KADR_MAX_VIDEO_SECONDS")
      ->check(CLI::Range(1.0, 1e7))
      ->capture_default_str();
  sub.add_option("--max-video-dir-mb", flags.max_dir_mb,
                 "quota of the video folder, MiB: uploads past it get 507; camera services keep "
                 "finished outputs within 3/4 of it")
      ->envname("KADR_MAX_VIDEO_DIR_MB")
      ->check(CLI::Range(std::size_t{16}, std::size_t{1} << 30))
      ->capture_default_str();
}

void AddCameraFlags(CLI::App& sub, CameraFlags& flags) {
  sub.add_option("--camera-id", flags.camera_id,
                 "this camera's id; its results group is kadr.camera.<id> (default: host-port)")
      ->envname("KADR_CAMERA_ID");
  sub.add_option("--max-streams", flags.max_streams, "live streams at most (more: 429)")
      ->envname("KADR_MAX_STREAMS")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub.add_option("--probe-timeout-ms", flags.probe_timeout_ms,
                 "POST /api/v1/streams: longest wait for the source to open")
      ->envname("KADR_PROBE_TIMEOUT_MS")
      ->check(CLI::Range(100, 120000))
      ->capture_default_str();
  sub.add_option("--open-timeout-ms", flags.open_timeout_ms,
                 "longest wait for a network source to open when (re)connecting")
      ->envname("KADR_OPEN_TIMEOUT_MS")
      ->check(CLI::Range(100, 120000))
      ->capture_default_str();
  sub.add_option("--stall-timeout-ms", flags.stall_timeout_ms,
                 "no frame for this long counts as a lost source (reconnect)")
      ->envname("KADR_STALL_TIMEOUT_MS")
      ->check(CLI::Range(100, 600000))
      ->capture_default_str();
  sub.add_option("--max-video-jobs", flags.max_video_jobs,
                 "video jobs decoded at once by this camera service; later ones wait queued")
      ->envname("KADR_MAX_VIDEO_JOBS")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  // Stream sources (docs/security.md "Stream sources"): nothing of the host by default.
  sub.add_option("--source-dir", flags.source_dirs,
                 "a directory whose video files streams may read, repeatable; symlinks and .. "
                 "cannot leave it (default: none, no file sources; env: ':'-separated)")
      ->envname("KADR_SOURCE_DIRS")
      ->delimiter(':');
  sub.add_option("--source-device", flags.source_devices,
                 "a device streams may open, exactly (/dev/video0), repeatable (default: none; "
                 "env: ':'-separated)")
      ->envname("KADR_SOURCE_DEVICES")
      ->delimiter(':');
  sub.add_option("--source-host", flags.source_hosts,
                 "a host (name, address or CIDR) network streams may reach, repeatable; given, "
                 "only these (loopback too when listed) (default: any but loopback, link-local "
                 "and cloud metadata addresses; env: ','-separated)")
      ->envname("KADR_SOURCE_HOSTS")
      ->delimiter(',');
}

namespace {

struct CameraArgs {
  KafkaFlags kafka;
  CameraFlags camera;
  std::string host = "127.0.0.1";
  int http_port = 8082;
  int http_threads = 16;
  std::string data_dir = "kadr-data";
  std::string video_dir;
  std::string default_model;
  std::vector<std::string> models;
  HttpSecurityFlags security;  // --auth, --auth-file, --tls-*, --allowed-host
};

int RunCamera(const CameraArgs& args, const GlobalOptions& global) {
  // Before any thread starts (setenv): the FFmpeg protocols and demuxers every capture and
  // video reader of this process may use.
  capture::InstallFfmpegAllowLists();
  ShutdownSignal shutdown;
  auto kafka_options = ToKafkaOptions(args.kafka);
  if (!kafka_options) {
    fmt::print(stderr, "error: kafka settings: {}\n", kafka_options.error().ToString());
    return 2;
  }
  // Models a stream may name: --models, else the registry's (same --models-dir / --config as
  // the workers); with neither, any model is accepted (its workers may live anywhere).
  std::vector<std::string> models = args.models;
  if (models.empty()) {
    if (auto registry = inference::ModelRegistry::Create(ToRegistryOptions(global))) {
      models = (*registry)->Names();
    }
  }
  camera::ModelCheck check = [models](std::string_view model) -> Status {
    if (models.empty() || std::find(models.begin(), models.end(), model) != models.end()) {
      return Status::Ok();
    }
    return NotFoundError("unknown model '" + std::string(model) + "'");
  };
  std::string camera_id = args.camera.camera_id;
  if (camera_id.empty()) {
    char host[256] = {};
    (void)gethostname(host, sizeof(host) - 1);
    camera_id = std::string(host) + "-" + std::to_string(args.http_port);
  }
  for (char& c : camera_id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  }

  MetricsRegistry metrics;
  auto publisher = kafka::KafkaPublisher::Create(*kafka_options);
  if (!publisher) {
    fmt::print(stderr, "error: kafka producer: {}\n", publisher.error().ToString());
    return 2;
  }
  spdlog::info("kafka {}", DescribeKafka(*kafka_options));
  auto stack = MakeCameraService(args.camera, camera_id, args.data_dir, args.video_dir,
                                 args.default_model, *kafka_options, **publisher, metrics, check, 1,
                                 MakeAdmission(args.kafka, /*embedded=*/false));
  if (!stack) {
    fmt::print(stderr, "error: {}\n", stack.error().ToString());
    return 2;
  }

  http::HttpServerOptions ho;
  ho.host = args.host;
  ho.port = args.http_port;
  ho.threads = args.http_threads;
  auto access = ApplyHttpSecurity(args.security, args.data_dir, ho);
  if (!access) {
    fmt::print(stderr, "error: http settings: {}\n", access.error().ToString());
    return 2;
  }
  auto server = http::HttpServer::Create(ho);
  if (!server) {
    fmt::print(stderr, "error: http server: {}\n", server.error().ToString());
    return 2;
  }
  Status routes = stack->service->RegisterRoutes(**server);
  if (routes.ok()) routes = (*access)->RegisterRoutes(**server);
  if (routes.ok()) {
    routes = (*server)->Route(
        "GET", "/healthz",
        [](const http::HttpRequest&) { return http::HttpResponse::Json(R"({"status":"ok"})"); },
        {.access = http::Access::kPublic, .served_when_busy = true});
  }
  if (routes.ok()) {
    routes = (*server)->Route("GET", "/metrics",
                              [m = &metrics](const http::HttpRequest&) {
                                http::HttpResponse r;
                                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                                r.body = m->RenderPrometheus();
                                return r;
                              },
                              {.access = http::Access::kRead});
  }
  if (!routes.ok()) {
    fmt::print(stderr, "error: camera routes: {}\n", routes.ToString());
    return 2;
  }
  const std::stop_token stop = shutdown.token();
  std::jthread camera_thread([s = stack->service.get(), stop] {
    if (Status st = s->Run(stop); !st.ok()) spdlog::warn("camera: {}", st.ToString());
  });
  if (Status s = (*server)->Start(); !s.ok()) {
    fmt::print(stderr, "error: http server: {}\n", s.ToString());
    shutdown.RequestStop();
    return 2;
  }
  const std::string shown_host = args.host == "0.0.0.0" ? "127.0.0.1" : args.host;
  fmt::print("kadr: camera API on {}://{}:{}/\n", HttpScheme(ho), shown_host, (*server)->port());
  std::fflush(stdout);

  shutdown.Wait();
  spdlog::info("shutting down");
  (*server)->Stop();
  camera_thread.join();  // stops the runners, closes the consumer
  (void)(*publisher)->Flush(std::chrono::seconds(5));
  spdlog::info("stopped");
  return 0;
}

}  // namespace

Command AddCameraCommand(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<CameraArgs>();
  CLI::App* sub = app.add_subcommand(
      "camera", "capture live streams (V4L2, RTSP, HTTP MJPEG, files) and serve the stream API");
  sub->add_option("--host", args->host, "HTTP bind address (0.0.0.0: all interfaces)")
      ->envname("KADR_HOST")
      ->capture_default_str();
  sub->add_option("--http-port", args->http_port, "HTTP port (0: a free one, printed at start)")
      ->envname("KADR_HTTP_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub->add_option("--http-threads", args->http_threads, "HTTP worker threads")
      ->envname("KADR_HTTP_THREADS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_option("--data-dir", args->data_dir, "where streams.db (the streams) is kept")
      ->envname("KADR_DATA_DIR")
      ->capture_default_str();
  sub->add_option("--video-dir", args->video_dir,
                  "the video folder shared with the gateways: take video jobs from "
                  "kadr.video.jobs and write their MP4s there (default: none, no video jobs)")
      ->envname("KADR_VIDEO_DIR");
  sub->add_option("--default-model", args->default_model,
                  "model of a stream whose request names none (default: model required)")
      ->envname("KADR_DEFAULT_MODEL");
  sub->add_option("--models", args->models,
                  "models a stream may use, comma-separated (default: the registry's; none "
                  "configured: any)")
      ->envname("KADR_MODELS")
      ->delimiter(',');
  AddHttpSecurityFlags(*sub, args->security);
  AddCameraFlags(*sub, args->camera);
  AddVideoLimitFlags(*sub, args->camera.video_limits);
  AddKafkaFlags(*sub, args->kafka, /*brokers_required=*/true);
  AddFrameBudgetFlag(*sub, args->kafka);
  return {sub, [args, &global] { return RunCamera(*args, global); }};
}

}  // namespace kadr::cli
