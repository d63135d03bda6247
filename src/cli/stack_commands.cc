// `kadr up`, `kadr gateway` and `kadr viewer`: the HTTP-facing roles, alone or all together.
//
// `kadr up` is the whole system in one process: the embedded broker (unless --brokers names a
// real cluster), one worker per model, the viewer and the gateway, with the REST API, the
// history and the web UI on one port. Every part talks to the others through the broker, over
// the Kafka protocol, exactly as when each runs as its own process.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "capture/source_policy.h"
#include "cli/app.h"
#include "cli/detail/camera_setup.h"
#include "cli/detail/commands.h"
#include "cli/detail/http_flags.h"
#include "cli/detail/kafka_flags.h"
#include "cli/detail/shutdown.h"
#include "common/cpu.h"
#include "common/metrics.h"
#include "gateway/gateway_service.h"
#include "http/server.h"
#include "inference/model_registry.h"
#include "jobs/job_store.h"
#include "jobs/recorder.h"
#include "kafka/embedded_broker.h"
#include "kafka/kafka_bus.h"
#include "protocol/frame.h"
#include "viewer/live_view_service.h"
#include "web/assets.h"
#include "worker/worker_service.h"

namespace kadr::cli {
namespace {

// `kadr up`'s inference threads per model when --threads is not given: the cores this process
// may use (affinity mask and cgroup quota), but one (at least 1). On a 2-core host one thread
// served 0.81 of the raw forward loop at concurrency 2 against 0.72 with two, and a 1080p
// lossless stream 0.87 against 0.71 (docs/performance.md, ADR 0017).
int UpInferenceThreads() { return std::max(1, cpu::UsableCores() - 1); }

enum class Role { kUp, kGateway, kViewer };

struct StackArgs {
  KafkaFlags kafka;
  std::string host = "127.0.0.1";
  int http_port = 8080;
  int broker_port = 0;  // up, embedded broker: fixed bootstrap port for outside tools
  int partitions = 4;
  std::vector<std::string> models;  // up: models that get a worker (default: all)
  std::string default_model;
  std::string instance_id;
  std::size_t max_in_flight = 64;
  std::size_t max_in_flight_per_client = 0;  // 0: 3/4 of max_in_flight (all below 8)
  int max_frame_side = 1280;
  int http_threads = 80;  // > max_in_flight: a waiting synchronous request holds one
  std::size_t max_body_mb = 32;
  std::size_t max_video_mb = 512;  // gateway: largest video upload
  std::string video_dir;           // the shared video folder (up: <data-dir>/videos)
  int timeout_ms = 30000;
  CameraFlags camera;  // up: the camera service (live streams)
  std::string data_dir = "kadr-data";
  std::size_t max_jobs = 10000;
  int max_age_hours = 24 * 7;
  std::size_t max_image_mb = 2048;
  std::size_t max_live_clients = 16;            // viewer: open MJPEG/SSE connections, 503 beyond
  std::size_t max_live_clients_per_client = 0;  // of those, one client's (0: half), 429 beyond
  HttpSecurityFlags security;                   // --auth, --auth-file, --tls-*, --allowed-host
};

// Kafka allows [A-Za-z0-9._-] in topic names.
std::string TopicSafe(std::string s) {
  for (char& c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return s;
}

std::string DefaultInstanceId(int http_port) {
  char host[256] = {};
  (void)gethostname(host, sizeof(host) - 1);
  // A stable id reuses its reply topic after a restart; port 0 means a test or a throwaway run.
  const std::string suffix = http_port > 0 ? std::to_string(http_port) : std::to_string(getpid());
  return TopicSafe(std::string(host) + "-" + suffix);
}

template <typename T>
bool Check(const Result<T>& r, std::string_view what) {
  if (r) return true;
  fmt::print(stderr, "error: {}: {}\n", what, r.error().ToString());
  return false;
}

bool Check(const Status& s, std::string_view what) {
  if (s.ok()) return true;
  fmt::print(stderr, "error: {}: {}\n", what, s.ToString());
  return false;
}

// One model's worker inside `kadr up`: its own consumer and producer, like a `kadr worker`.
struct InProcessWorker {
  std::unique_ptr<kafka::KafkaPublisher> publisher;
  std::unique_ptr<kafka::KafkaSubscriber> subscriber;
  std::unique_ptr<worker::WorkerService> service;
  std::jthread thread;
};

int RunStack(Role role, const StackArgs& args, const GlobalOptions& global) {
  // Before any thread starts (setenv): the FFmpeg protocols and demuxers every capture and
  // video reader of this process may use.
  capture::InstallFfmpegAllowLists();
  ShutdownSignal shutdown;
  auto kafka_options = ToKafkaOptions(args.kafka);
  if (!Check(kafka_options, "kafka settings")) return 2;

  // Models: `up` loads and serves them; the gateway only needs their names (workers announce
  // the rest); the viewer needs none.
  std::unique_ptr<inference::ModelRegistry> registry;
  std::vector<gateway::ConfiguredModel> configured;
  std::vector<std::pair<std::string, std::shared_ptr<inference::Detector>>> serving;
  if (role != Role::kViewer) {
    inference::RegistryOptions registry_options = ToRegistryOptions(global);
    if (role == Role::kUp && registry_options.threads == 0) {
      // This process also decodes, encodes, draws, serves HTTP and runs the broker: inference
      // that takes every core waits for them inside each forward pass (docs/operations.md).
      registry_options.threads = UpInferenceThreads();
      spdlog::info("inference threads per model: {} (all cores but one; --threads to change)",
                   registry_options.threads);
    }
    auto r = inference::ModelRegistry::Create(registry_options);
    if (!Check(r, "model registry")) return 2;
    registry = std::move(*r);
    std::vector<std::string> names = args.models.empty() ? registry->Names() : args.models;
    if (role == Role::kUp) {
      for (const auto& name : names) {
        auto detector = registry->Get(name);
        if (!detector && !args.models.empty() && detector.error().code() == StatusCode::kNotFound) {
          fmt::print(stderr, "error: {}\n", detector.error().ToString());
          return 2;
        }
        if (detector) serving.emplace_back(name, *detector);
      }
    }
    for (const auto& status : registry->List()) {
      if (std::find(names.begin(), names.end(), status.spec.name) == names.end()) continue;
      gateway::ConfiguredModel m;
      m.name = status.spec.name;
      m.state = std::string(inference::LoadStateName(status.state));
      if (status.state == inference::LoadState::kFailed) m.error = status.error;
      m.family = std::string(inference::FamilyName(status.spec.family));
      if (status.info) {
        m.family = std::string(inference::FamilyName(status.info->family));
        m.input_width = status.info->input_width;
        m.input_height = status.info->input_height;
        m.labels = status.info->labels;
        m.task = status.info->has_masks ? "segment" : "detect";
      }
      configured.push_back(std::move(m));
    }
    if (role == Role::kUp && serving.empty()) {
      fmt::print(stderr,
                 "error: no model could be loaded; point --models-dir at a folder of ONNX "
                 "models or use a built-in (people-hog, faces-haar, null)\n");
      return 2;
    }
  }

  // The broker: embedded unless --brokers names one.
  std::unique_ptr<kafka::EmbeddedBroker> broker;
  if (kafka_options->brokers.empty()) {
    if (role != Role::kUp) {
      fmt::print(stderr, "error: --brokers (or KADR_BROKERS) is required\n");
      return 2;
    }
    kafka::EmbeddedBrokerOptions bo;
    bo.port = args.broker_port;
    bo.partitions = args.partitions;
    bo.topics = {std::string(protocol::kResultsTopic),    std::string(protocol::kAnnotatedTopic),
                 std::string(protocol::kDeadLetterTopic), std::string(protocol::kWorkersTopic),
                 std::string(protocol::kJobsTopic),       std::string(protocol::kVideoJobsTopic)};
    for (const auto& [name, detector] : serving) bo.topics.push_back(protocol::FramesTopic(name));
    auto b = kafka::EmbeddedBroker::Create(bo);
    if (!Check(b, "embedded broker")) return 2;
    broker = std::move(*b);
    kafka_options->brokers = broker->bootstrap();
    kafka_options->linger_ms = kafka::kEmbeddedLingerMs;
    if (args.kafka.fetch_wait_max_ms == 0) {
      kafka_options->fetch_wait_max_ms = kafka::kEmbeddedFetchWaitMs;
    }
    spdlog::info("embedded broker bootstrap={} (in memory; use Apache Kafka in production)",
                 broker->bootstrap());
  }
  spdlog::info("kafka {}", DescribeKafka(*kafka_options));
  // Room on the broker for frames: one budget for the gateway and the camera service here.
  std::shared_ptr<engine::Admission> admission;
  if (role != Role::kViewer) admission = MakeAdmission(args.kafka, broker != nullptr);

  MetricsRegistry metrics;
  auto publisher = kafka::KafkaPublisher::Create(*kafka_options);
  if (!Check(publisher, "kafka producer")) return 2;

  // Workers (up only), one per model.
  std::vector<std::unique_ptr<InProcessWorker>> workers;
  for (const auto& [name, detector] : serving) {
    auto w = std::make_unique<InProcessWorker>();
    auto p = kafka::KafkaPublisher::Create(*kafka_options);
    if (!Check(p, "worker producer")) return 2;
    auto s = kafka::KafkaSubscriber::Create(*kafka_options, WorkerSubscriberOptions(name, ""));
    if (!Check(s, "worker consumer")) return 2;
    w->publisher = std::move(*p);
    w->subscriber = std::move(*s);
    worker::WorkerOptions wo;
    wo.on_lost = CountLostFrames(name, metrics);
    wo.reply_topic_prefixes = ReplyTopicPrefixes(args.kafka);
    w->service =
        std::make_unique<worker::WorkerService>(wo, detector, *w->publisher, *w->subscriber);
    workers.push_back(std::move(w));
  }

  const std::string instance =
      args.instance_id.empty() ? DefaultInstanceId(args.http_port) : TopicSafe(args.instance_id);
  const std::string video_dir = !args.video_dir.empty() ? args.video_dir
                                : role == Role::kUp
                                    ? (std::filesystem::path(args.data_dir) / "videos").string()
                                    : std::string();
  // Job snapshots: the gateway writes them, the recorder reads them. Not fatal: the broker
  // may come later (and then auto-creates it).
  if (Status s = EnsureKadrTopic(**publisher, protocol::kJobsTopic, args.partitions); !s.ok()) {
    spdlog::warn("topic {} not ready yet: {}", protocol::kJobsTopic, s.ToString());
  }

  // Viewer: the job store and its recorder, the job routes, the live view.
  std::unique_ptr<jobs::SqliteJobStore> store;
  if (role != Role::kGateway) {
    jobs::SqliteJobStoreOptions jo;
    jo.dir = args.data_dir;
    jo.retention.max_jobs = args.max_jobs;
    jo.retention.max_age = std::chrono::hours(args.max_age_hours);
    jo.retention.max_image_bytes = static_cast<std::uint64_t>(args.max_image_mb) << 20;
    auto h = jobs::SqliteJobStore::Create(jo);
    if (!Check(h, "job store")) return 2;
    store = std::move(*h);
  }

  // Gateway: the REST API; answers come back on its own reply topic.
  std::unique_ptr<kafka::KafkaSubscriber> replies, announcements;
  std::unique_ptr<gateway::GatewayService> gateway;
  if (role != Role::kViewer) {
    gateway::GatewayOptions go;
    go.reply_topic = "kadr.replies." + instance;
    go.max_in_flight = args.max_in_flight;
    // Default: three quarters, so that others keep a quarter while one client floods; a
    // gateway of fewer than 8 slots is too small to split and keeps them all for anyone.
    go.max_in_flight_per_client = args.max_in_flight_per_client > 0 ? args.max_in_flight_per_client
                                  : args.max_in_flight < 8          ? args.max_in_flight
                                                                    : args.max_in_flight * 3 / 4;
    go.max_frame_side = args.max_frame_side;
    go.default_timeout = std::chrono::milliseconds(args.timeout_ms);
    go.default_model = args.default_model;
    go.max_image_bytes = args.max_body_mb << 20;
    go.max_video_bytes = args.max_video_mb << 20;
    go.max_video_pixels = args.camera.video_limits.max_pixels;
    go.max_video_frames = args.camera.video_limits.max_frames;
    go.max_video_seconds = args.camera.video_limits.max_seconds;
    go.max_video_dir_bytes = std::uint64_t{args.camera.video_limits.max_dir_mb} << 20;
    go.video_dir = video_dir;
    go.admission = admission;
    // Not fatal: without a broker the gateway still serves /healthz and answers 503, and
    // the topic is created by the first reply (auto-creation) once the broker is back.
    if (Status s = EnsureKadrTopic(**publisher, go.reply_topic, 1); !s.ok()) {
      spdlog::warn("reply topic not ready yet: {}", s.ToString());
    }
    kafka::SubscriberOptions rs;
    rs.group_id = "kadr.gateway." + instance;
    rs.topics = {go.reply_topic};
    rs.metadata_refresh_ms = 5000;
    auto r = kafka::KafkaSubscriber::Create(*kafka_options, rs);
    if (!Check(r, "reply consumer")) return 2;
    replies = std::move(*r);
    kafka::SubscriberOptions ws;
    ws.group_id = "kadr.gateway." + instance + ".workers";
    ws.topics = {std::string(protocol::kWorkersTopic)};
    ws.metadata_refresh_ms = 5000;
    auto w = kafka::KafkaSubscriber::Create(*kafka_options, ws);
    if (!Check(w, "worker-announcement consumer")) return 2;
    announcements = std::move(*w);
    kafka::KafkaPublisher* check = publisher->get();
    auto g = gateway::GatewayService::Create(
        go, **publisher, *replies, *announcements, configured,
        [check] { return check->CheckBroker(std::chrono::seconds(1)); }, metrics);
    if (!Check(g, "gateway")) return 2;
    gateway = std::move(*g);
    spdlog::info("gateway instance={} reply_topic={}", instance, go.reply_topic);
  }

  // The viewer subscribes once its topics exist: the gateway has created its reply topic
  // above, the live topics are created here (the camera creates them too). A pattern that
  // matches no topic yet (^kadr\.replies\..*, the live topics) delays the group's first
  // join by ~20 s on librdkafka 2.0.2, and with it the history. Not fatal.
  std::unique_ptr<kafka::KafkaSubscriber> recorder_subscriber, live_subscriber;
  std::unique_ptr<jobs::Recorder> recorder;
  std::unique_ptr<viewer::LiveViewService> live_view;
  if (store) {
    for (std::string_view topic : {protocol::kLiveResultsTopic, protocol::kLiveAnnotatedTopic}) {
      if (Status s = EnsureKadrTopic(**publisher, topic, args.partitions); !s.ok()) {
        spdlog::warn("viewer: topic {} not ready yet: {}", topic, s.ToString());
      }
    }
    kafka::SubscriberOptions rs;
    // Every viewer is a whole replica of the job store: its own group reads every job event
    // and answer (from the earliest retained on its first start), so any viewer answers any
    // job read and viewers scale out like gateways.
    rs.group_id = "kadr.viewer.jobs." + instance;
    rs.topics = jobs::RecorderTopics();
    rs.metadata_refresh_ms = 2000;
    auto r = kafka::KafkaSubscriber::Create(*kafka_options, rs);
    if (!Check(r, "recorder consumer")) return 2;
    recorder_subscriber = std::move(*r);
    recorder = std::make_unique<jobs::Recorder>(jobs::RecorderOptions{}, *store,
                                                *recorder_subscriber, metrics);
    kafka::SubscriberOptions ls;
    ls.group_id = "kadr.viewer.live." + instance;  // every viewer shows every stream
    ls.topics = viewer::LiveViewTopics();
    ls.metadata_refresh_ms = 2000;
    auto l = kafka::KafkaSubscriber::Create(*kafka_options, ls);
    if (!Check(l, "live-view consumer")) return 2;
    live_subscriber = std::move(*l);
    viewer::LiveViewOptions lo;
    lo.max_live_clients = args.max_live_clients;
    lo.max_live_clients_per_client = args.max_live_clients_per_client;
    live_view = std::make_unique<viewer::LiveViewService>(lo, *live_subscriber, metrics);
  }

  // Camera (up only): live streams, their API on the shared port, results on kadr.live.results;
  // and the video jobs the gateway hands over through the video folder.
  std::optional<CameraStack> camera;
  if (role == Role::kUp) {
    std::string camera_id = args.camera.camera_id;
    if (camera_id.empty()) camera_id = args.instance_id;
    camera_id = camera_id.empty() ? DefaultInstanceId(args.http_port) : TopicSafe(camera_id);
    std::vector<std::string> served;
    served.reserve(serving.size());
    for (const auto& [name, detector] : serving) served.push_back(name);
    camera::ModelCheck check = [served](std::string_view model) -> Status {
      if (std::find(served.begin(), served.end(), model) != served.end()) return Status::Ok();
      return NotFoundError("unknown model '" + std::string(model) + "'");
    };
    auto c =
        MakeCameraService(args.camera, camera_id, args.data_dir, video_dir,
                          args.default_model.empty() ? served.front() : args.default_model,
                          *kafka_options, **publisher, metrics, check, args.partitions, admission);
    if (!Check(c, "camera")) return 2;
    camera = std::move(*c);
  }

  http::HttpServerOptions ho;
  ho.host = args.host;
  ho.port = args.http_port;
  ho.threads = args.http_threads;
  // Each route has its own limit (the gateway's: an image, a video); this caps them all.
  ho.max_body_bytes =
      (std::max(args.max_body_mb, role == Role::kViewer ? 0 : args.max_video_mb) << 20) +
      gateway::kUploadFramingBytes;
  auto access = ApplyHttpSecurity(args.security, args.data_dir, ho);
  if (!Check(access, "http settings")) return 2;
  auto server = http::HttpServer::Create(ho);
  if (!Check(server, "http server")) return 2;
  if (!Check((*access)->RegisterRoutes(**server), "login routes")) return 2;
  if (gateway && !Check(gateway->RegisterRoutes(**server), "gateway routes")) return 2;
  if (recorder) {
    jobs::JobRoutesOptions jo;
    jo.video_dir = video_dir;
    if (!Check(jobs::RegisterJobRoutes(**server, jo, *store, *recorder, **publisher),
               "job routes") ||
        !Check(live_view->RegisterRoutes(**server), "live-view routes")) {
      return 2;
    }
  }
  if (camera && !Check(camera->service->RegisterRoutes(**server), "stream routes")) return 2;
  if (!Check(web::RegisterRoutes(**server), "web UI routes")) return 2;
  if (!gateway) {
    // The viewer alone: liveness and its own metrics (the gateway serves these otherwise).
    MetricsRegistry* m = &metrics;
    const Status routes = (*server)->Route(
        "GET", "/healthz",
        [](const http::HttpRequest&) { return http::HttpResponse::Json(R"({"status":"ok"})"); },
        {.access = http::Access::kPublic, .served_when_busy = true});
    const Status metrics_route = (*server)->Route("GET", "/metrics",
                                                  [m](const http::HttpRequest&) {
                                                    http::HttpResponse r;
                                                    r.content_type =
                                                        "text/plain; version=0.0.4; charset=utf-8";
                                                    r.body = m->RenderPrometheus();
                                                    return r;
                                                  },
                                                  {.access = http::Access::kRead});
    if (!Check(routes, "viewer routes") || !Check(metrics_route, "viewer routes")) return 2;
  }

  // Start: consumers first, so nothing published from now on is missed; the HTTP port last.
  const std::stop_token stop = shutdown.token();
  for (auto& w : workers) {
    worker::WorkerService* service = w->service.get();
    w->thread = std::jthread([service, stop] {
      if (Status s = service->Run(stop); !s.ok()) spdlog::warn("worker: {}", s.ToString());
    });
  }
  std::jthread recorder_thread, live_thread, gateway_thread;
  if (recorder) {
    recorder_thread = std::jthread([r = recorder.get(), stop] {
      if (Status s = r->Run(stop); !s.ok()) spdlog::warn("recorder: {}", s.ToString());
    });
    live_thread = std::jthread([v = live_view.get(), stop] {
      if (Status s = v->Run(stop); !s.ok()) spdlog::warn("live view: {}", s.ToString());
    });
  }
  std::jthread camera_thread;
  if (camera) {
    camera_thread = std::jthread([c = camera->service.get(), stop] {
      if (Status s = c->Run(stop); !s.ok()) spdlog::warn("camera: {}", s.ToString());
    });
  }
  if (gateway) {
    gateway_thread = std::jthread([g = gateway.get(), stop] {
      if (Status s = g->Run(stop); !s.ok()) spdlog::warn("gateway: {}", s.ToString());
    });
  }
  if (!Check((*server)->Start(), "http server")) {
    shutdown.RequestStop();
    return 2;
  }
  const std::string shown_host = args.host == "0.0.0.0" ? "127.0.0.1" : args.host;
  const std::string url = fmt::format("{}://{}:{}/", HttpScheme(ho), shown_host, (*server)->port());
  const char* what = role == Role::kViewer ? "web UI and history" : "web UI and API";
  fmt::print("kadr: {} on {}\n", what, url);
  if (broker) fmt::print("kadr: embedded Kafka broker on {}\n", broker->bootstrap());
  std::fflush(stdout);
  spdlog::info("serving url={} models={} workers={}", url, configured.size(), workers.size());

  // Run until SIGINT / SIGTERM; then the services finish what they hold, in order.
  shutdown.Wait();
  spdlog::info("shutting down");
  if (gateway_thread.joinable()) gateway_thread.join();  // answers waiting requests
  (*server)->Stop();
  if (camera_thread.joinable()) camera_thread.join();  // stops the streams' capture
  for (auto& w : workers) {
    if (w->thread.joinable()) w->thread.join();  // drains, commits, leaves the group
  }
  if (recorder_thread.joinable()) recorder_thread.join();
  if (live_thread.joinable()) live_thread.join();
  (void)(*publisher)->Flush(std::chrono::seconds(5));
  spdlog::info("stopped");
  return 0;
}

void AddHttpFlags(CLI::App& sub, StackArgs& args) {
  sub.add_option("--host", args.host, "HTTP bind address (0.0.0.0: all interfaces)")
      ->envname("KADR_HOST")
      ->capture_default_str();
  sub.add_option("--http-port", args.http_port, "HTTP port (0: a free one, printed at start)")
      ->envname("KADR_HTTP_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub.add_option("--http-threads", args.http_threads, "HTTP worker threads")
      ->envname("KADR_HTTP_THREADS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub.add_option("--max-body-mb", args.max_body_mb, "largest accepted upload, MiB")
      ->envname("KADR_MAX_BODY_MB")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  AddHttpSecurityFlags(sub, args.security);
}

void AddGatewayFlags(CLI::App& sub, StackArgs& args) {
  sub.add_option("--default-model", args.default_model,
                 "model used when a request names none (default: the first)")
      ->envname("KADR_DEFAULT_MODEL");
  sub.add_option("--instance-id", args.instance_id,
                 "this gateway's id; its replies come on kadr.replies.<id> (default: host-port)")
      ->envname("KADR_INSTANCE_ID");
  sub.add_option("--max-in-flight", args.max_in_flight,
                 "requests waiting for a result before 429 (bounds memory)")
      ->envname("KADR_MAX_IN_FLIGHT")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub.add_option("--max-in-flight-per-client", args.max_in_flight_per_client,
                 "of those, the most one client address may hold (default: three quarters; "
                 "all of them below 8)")
      ->envname("KADR_MAX_IN_FLIGHT_PER_CLIENT")
      ->check(CLI::Range(1, 100000));
  sub.add_option("--max-frame-side", args.max_frame_side,
                 "images larger on their long side travel scaled down to it; detections stay "
                 "in the upload's pixels (0: full size)")
      ->envname("KADR_MAX_FRAME_SIDE")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub.add_option("--timeout-ms", args.timeout_ms, "default deadline of a request")
      ->envname("KADR_TIMEOUT_MS")
      ->check(CLI::Range(1, 300000))
      ->capture_default_str();
  sub.add_option("--max-video-mb", args.max_video_mb, "largest accepted video upload, MiB")
      ->envname("KADR_MAX_VIDEO_MB")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
}

// The video folder: gateways put uploads there, camera services run the jobs and write their
// outputs there, viewers serve them: one folder all of them reach.
void AddVideoDirFlag(CLI::App& sub, StackArgs& args) {
  sub.add_option("--video-dir", args.video_dir,
                 "folder for video jobs: uploads, annotated MP4s, per-frame results; shared by "
                 "gateways (uploads), camera services (which run the jobs) and viewers (which "
                 "serve them) "
                 "(up: <data-dir>/videos; otherwise none: videos refused)")
      ->envname("KADR_VIDEO_DIR");
}

void AddViewerFlags(CLI::App& sub, StackArgs& args) {
  sub.add_option("--data-dir", args.data_dir, "history database and annotated images")
      ->envname("KADR_DATA_DIR")
      ->capture_default_str();
  sub.add_option("--history-max-jobs", args.max_jobs, "jobs kept in the history")
      ->envname("KADR_HISTORY_MAX_JOBS")
      ->check(CLI::Range(1, 100000000))
      ->capture_default_str();
  sub.add_option("--history-max-age-hours", args.max_age_hours, "older jobs are removed")
      ->envname("KADR_HISTORY_MAX_AGE_HOURS")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub.add_option("--history-max-image-mb", args.max_image_mb, "disk for annotated images, MiB")
      ->envname("KADR_HISTORY_MAX_IMAGE_MB")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  sub.add_option("--max-live-clients", args.max_live_clients,
                 "open live-view connections (MJPEG and SSE; each holds an HTTP thread), 503 "
                 "beyond")
      ->envname("KADR_MAX_LIVE_CLIENTS")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  sub.add_option("--max-live-clients-per-client", args.max_live_clients_per_client,
                 "of those, the most one client (token, else address) holds, 429 beyond (0: half "
                 "of --max-live-clients)")
      ->envname("KADR_MAX_LIVE_CLIENTS_PER_CLIENT")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
}

}  // namespace

Command AddUpCommand(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<StackArgs>();
  CLI::App* sub = app.add_subcommand(
      "up", "run everything in one process: broker, workers, viewer, gateway and web UI");
  AddHttpFlags(*sub, *args);
  AddGatewayFlags(*sub, *args);
  AddViewerFlags(*sub, *args);
  AddVideoDirFlag(*sub, *args);
  AddCameraFlags(*sub, args->camera);
  AddVideoLimitFlags(*sub, args->camera.video_limits);
  sub->add_option("--models", args->models, "models to serve, comma-separated (default: all)")
      ->envname("KADR_MODELS")
      ->delimiter(',');
  sub->add_option("--broker-port", args->broker_port,
                  "embedded broker: fixed bootstrap port on 127.0.0.1 for outside clients "
                  "(0: an ephemeral one, printed at start)")
      ->envname("KADR_BROKER_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub->add_option("--partitions", args->partitions, "embedded broker: partitions per topic")
      ->envname("KADR_PARTITIONS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  AddKafkaFlags(*sub, args->kafka, /*brokers_required=*/false);
  AddFrameBudgetFlag(*sub, args->kafka);
  AddReplyTopicPrefixFlag(*sub, args->kafka);
  return {sub, [args, &global] { return RunStack(Role::kUp, *args, global); }};
}

Command AddGatewayCommand(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<StackArgs>();
  CLI::App* sub = app.add_subcommand("gateway", "serve the REST API and web UI over a broker");
  AddHttpFlags(*sub, *args);
  AddGatewayFlags(*sub, *args);
  AddVideoDirFlag(*sub, *args);
  AddVideoLimitFlags(*sub, args->camera.video_limits);
  sub->add_option("--data-dir", args->data_dir,
                  "with access control on: where auth/tokens.json is (see --auth-file)")
      ->envname("KADR_DATA_DIR")
      ->capture_default_str();
  sub->add_option("--models", args->models, "models offered (default: all configured)")
      ->envname("KADR_MODELS")
      ->delimiter(',');
  AddKafkaFlags(*sub, args->kafka, /*brokers_required=*/true);
  AddFrameBudgetFlag(*sub, args->kafka);
  return {sub, [args, &global] { return RunStack(Role::kGateway, *args, global); }};
}

Command AddViewerCommand(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<StackArgs>();
  args->http_port = 8081;
  CLI::App* sub = app.add_subcommand(
      "viewer", "record jobs in the job store, serve the job routes and the live view");
  AddHttpFlags(*sub, *args);
  AddViewerFlags(*sub, *args);
  AddVideoDirFlag(*sub, *args);
  sub->add_option("--instance-id", args->instance_id,
                  "this viewer's id, for its live-view consumer group (default: host-port)")
      ->envname("KADR_INSTANCE_ID");
  AddKafkaFlags(*sub, args->kafka, /*brokers_required=*/true);
  return {sub, [args, &global] { return RunStack(Role::kViewer, *args, global); }};
}

}  // namespace kadr::cli
