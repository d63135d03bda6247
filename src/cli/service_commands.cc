// `kadr broker` and `kadr worker`: long-running services, stopped by SIGINT / SIGTERM.
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/detail/commands.h"
#include "cli/detail/http_flags.h"
#include "cli/detail/kafka_flags.h"
#include "cli/detail/shutdown.h"
#include "common/metrics.h"
#include "http/server.h"
#include "kafka/embedded_broker.h"
#include "kafka/kafka_bus.h"
#include "protocol/frame.h"
#include "worker/worker_service.h"

namespace kadr::cli {
namespace {

struct BrokerArgs {
  int port = 9092;
  int partitions = 4;
  int brokers = 1;
  std::vector<std::string> models;  // pre-create kadr.frames.<model> topics
};

int RunBroker(const BrokerArgs& args) {
  ShutdownSignal shutdown;
  kafka::EmbeddedBrokerOptions o;
  o.port = args.port;
  o.partitions = args.partitions;
  o.brokers = args.brokers;
  o.topics = {std::string(protocol::kResultsTopic), std::string(protocol::kAnnotatedTopic),
              std::string(protocol::kDeadLetterTopic), std::string(protocol::kWorkersTopic)};
  for (const auto& m : args.models) o.topics.push_back(protocol::FramesTopic(m));
  auto broker = kafka::EmbeddedBroker::Create(o);
  if (!broker) {
    fmt::print(stderr, "error: {}\n", broker.error().ToString());
    return 2;
  }
  fmt::print("kadr embedded broker (in memory only; use Apache Kafka in production)\n");
  fmt::print("bootstrap: {}\n", (*broker)->bootstrap());
  std::fflush(stdout);
  std::mutex mu;
  std::condition_variable cv;
  std::stop_callback wake(shutdown.token(), [&] { cv.notify_all(); });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return shutdown.token().stop_requested(); });
  return 0;
}

struct WorkerArgs {
  std::string model;
  std::string group;
  KafkaFlags kafka;
  std::size_t max_batch = 8;
  int linger_ms = 0;
  int drain_ms = 10000;
  bool no_draw = false;
  std::string host = "127.0.0.1";
  int http_port = -1;  // -1: no HTTP
  int unhealthy_after_ms = 60000;
  std::string data_dir = "kadr-data";  // only for the token file's default place
  HttpSecurityFlags security;          // --auth, --auth-file, --tls-*, --allowed-host
};

// The worker's own /healthz and /metrics (for container health checks and Prometheus; the
// gateways also see every worker through its announcements on kadr.workers).
Result<std::unique_ptr<http::HttpServer>> StartWorkerHttp(const WorkerArgs& args,
                                                          const worker::WorkerService& service,
                                                          MetricsRegistry& metrics) {
  http::HttpServerOptions ho;
  ho.host = args.host;
  ho.port = args.http_port;
  ho.threads = 2;
  ho.max_body_bytes = 1024;  // GET only
  // The access control lives as long as the authorizer that holds it; the worker has no login.
  ASSIGN_OR_RETURN(auto access, ApplyHttpSecurity(args.security, args.data_dir, ho));
  (void)access;
  ASSIGN_OR_RETURN(auto server, http::HttpServer::Create(ho));
  const worker::WorkerService* svc = &service;
  const std::string model = args.model;
  const std::int64_t unhealthy_after = args.unhealthy_after_ms;
  RETURN_IF_ERROR(server->Route("GET", "/healthz",
                                [svc, model, unhealthy_after](const http::HttpRequest&) {
                                  const worker::WorkerStats st = svc->stats();
                                  // Frames held and none finished for that long: the model or a
                                  // stage hangs. 503 fails the container's health check, so the
                                  // orchestrator restarts the worker and its frames are redelivered
                                  // (at least once) to a live one.
                                  const bool stalled = st.stalled_ms > unhealthy_after;
                                  nlohmann::json j = {{"status", stalled ? "stalled" : "ok"},
                                                      {"role", "worker"},
                                                      {"model", model},
                                                      {"stalled_ms", st.stalled_ms},
                                                      {"frames", st.frames},
                                                      {"processed", st.processed},
                                                      {"skipped", st.skipped},
                                                      {"failed", st.failed}};
                                  return http::HttpResponse::Json(j.dump(), stalled ? 503 : 200);
                                },
                                {.access = http::Access::kPublic, .served_when_busy = true}));
  MetricsRegistry* m = &metrics;
  RETURN_IF_ERROR(server->Route(
      "GET", "/metrics",
      [svc, m, model](const http::HttpRequest&) {
        const worker::WorkerStats st = svc->stats();
        const std::pair<const char*, std::uint64_t> outcomes[] = {
            {"taken", st.frames},  {"ok", st.processed}, {"skipped", st.skipped},
            {"failed", st.failed}, {"acked", st.acked},  {"republished", st.publish_retries}};
        for (const auto& [outcome, value] : outcomes) {
          m->GetGauge("kadr_worker_frames", "Frames of this worker by outcome, since it started.",
                      {{"model", model}, {"outcome", outcome}})
              .Set(static_cast<double>(value));
        }
        m->GetGauge("kadr_worker_stalled_seconds",
                    "How long the worker has held frames without finishing any (0: none held).",
                    {{"model", model}})
            .Set(static_cast<double>(st.stalled_ms) / 1000.0);
        http::HttpResponse r;
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = m->RenderPrometheus();
        return r;
      },
      {.access = http::Access::kRead}));
  RETURN_IF_ERROR(server->Start());
  return server;
}

int RunWorker(const WorkerArgs& args, const GlobalOptions& global) {
  ShutdownSignal shutdown;
  auto kafka_options = ToKafkaOptions(args.kafka);
  if (!kafka_options) {
    fmt::print(stderr, "error: {}\n", kafka_options.error().ToString());
    return 2;
  }
  auto detector = LoadModel(global, args.model);
  if (!detector) return 2;
  auto publisher = kafka::KafkaPublisher::Create(*kafka_options);
  if (!publisher) {
    fmt::print(stderr, "error: {}\n", publisher.error().ToString());
    return 2;
  }
  MetricsRegistry metrics;
  const kafka::SubscriberOptions sub = WorkerSubscriberOptions(args.model, args.group);
  auto subscriber = kafka::KafkaSubscriber::Create(*kafka_options, sub);
  if (!subscriber) {
    fmt::print(stderr, "error: {}\n", subscriber.error().ToString());
    return 2;
  }
  spdlog::info("worker config model={} topic={} group={} {} max_batch={}", args.model,
               sub.topics[0], sub.group_id, DescribeKafka(*kafka_options), args.max_batch);

  worker::WorkerOptions wo;
  wo.max_batch = args.max_batch;
  wo.batch_linger = std::chrono::milliseconds(args.linger_ms);
  wo.drain_timeout = std::chrono::milliseconds(args.drain_ms);
  wo.processing.draw = !args.no_draw;
  wo.on_lost = CountLostFrames(args.model, metrics);
  wo.reply_topic_prefixes = ReplyTopicPrefixes(args.kafka);
  worker::WorkerService service(wo, *detector, **publisher, **subscriber);
  std::unique_ptr<http::HttpServer> server;
  if (args.http_port >= 0) {
    auto started = StartWorkerHttp(args, service, metrics);
    if (!started) {
      fmt::print(stderr, "error: worker http: {}\n", started.error().ToString());
      return 2;
    }
    server = std::move(*started);
    fmt::print("kadr worker: health and metrics on {}://{}:{}/healthz\n",
               args.security.tls_cert.empty() ? "http" : "https", args.host, server->port());
    std::fflush(stdout);
  }
  Status s = service.Run(shutdown.token());
  if (server) server->Stop();
  if (!s.ok()) {
    spdlog::warn("worker stopped with error=\"{}\"", s.message());
    return 1;
  }
  return 0;
}

}  // namespace

Command AddBrokerCommand(CLI::App& app, const GlobalOptions&) {
  auto args = std::make_shared<BrokerArgs>();
  CLI::App* sub = app.add_subcommand(
      "broker", "run the embedded Kafka-protocol broker (in memory; for development and tests)");
  sub->add_option("--port", args->port, "bootstrap port on 127.0.0.1 (0: ephemeral)")
      ->envname("KADR_BROKER_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub->add_option("--partitions", args->partitions, "partitions per topic created here")
      ->envname("KADR_PARTITIONS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_option("--brokers", args->brokers, "number of mock brokers")
      ->envname("KADR_BROKER_COUNT")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  sub->add_option("--model", args->models, "pre-create the frames topic of these models")
      ->envname("KADR_MODELS")
      ->delimiter(',');
  return {sub, [args] { return RunBroker(*args); }};
}

Command AddWorkerCommand(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<WorkerArgs>();
  CLI::App* sub = app.add_subcommand("worker", "consume frames of one model, publish results");
  sub->add_option("--model,-m", args->model, "model name (see `kadr models`)")
      ->required()
      ->envname("KADR_MODEL");
  sub->add_option("--group", args->group, "consumer group (default kadr.worker.<model>)")
      ->envname("KADR_GROUP");
  sub->add_option("--batch", args->max_batch, "frames per micro-batch")
      ->envname("KADR_BATCH")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  sub->add_option("--linger-ms", args->linger_ms, "wait for a batch to fill, ms")
      ->envname("KADR_LINGER_MS")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  sub->add_option("--drain-ms", args->drain_ms, "on SIGTERM: bound for finishing in-flight work")
      ->envname("KADR_DRAIN_MS")
      ->check(CLI::Range(0, 600000))
      ->capture_default_str();
  sub->add_flag("--no-draw", args->no_draw, "publish results only, no annotated images")
      ->envname("KADR_NO_DRAW");
  sub->add_option("--host", args->host, "HTTP bind address for --http-port (0.0.0.0: all)")
      ->envname("KADR_HOST")
      ->capture_default_str();
  sub->add_option("--http-port", args->http_port,
                  "serve /healthz and /metrics on this port (0: a free one; default: no HTTP)")
      ->envname("KADR_HTTP_PORT")
      ->check(CLI::Range(0, 65535));
  sub->add_option("--unhealthy-after-ms", args->unhealthy_after_ms,
                  "/healthz answers 503 when frames are held this long with none finished")
      ->envname("KADR_UNHEALTHY_AFTER_MS")
      ->check(CLI::Range(1000, 3600000))
      ->capture_default_str();
  sub->add_option("--data-dir", args->data_dir,
                  "with access control on: where auth/tokens.json is (see --auth-file)")
      ->envname("KADR_DATA_DIR")
      ->capture_default_str();
  AddHttpSecurityFlags(*sub, args->security);
  AddKafkaFlags(*sub, args->kafka, /*brokers_required=*/true);
  AddReplyTopicPrefixFlag(*sub, args->kafka);
  return {sub, [args, &global] { return RunWorker(*args, global); }};
}

}  // namespace kadr::cli
