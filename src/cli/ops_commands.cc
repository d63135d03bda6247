// `kadr topics` (create the topics docs/protocol.md requires) and `kadr health` (the
// containers' health check): small operator commands with no service behind them.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "cli/detail/commands.h"
#include "cli/detail/kafka_flags.h"
#include "kafka/kafka_bus.h"
#include "protocol/topics.h"

namespace kadr::cli {
namespace {

struct TopicsArgs {
  KafkaFlags kafka;
  std::vector<std::string> models;
  int partitions = 4;
  int replication_factor = -1;
  int wait_ms = 60000;
};

int RunTopics(const TopicsArgs& args, const GlobalOptions& global) {
  auto kafka_options = ToKafkaOptions(args.kafka);
  if (!kafka_options) {
    fmt::print(stderr, "error: {}\n", kafka_options.error().ToString());
    return 2;
  }
  std::vector<std::string> models = args.models;
  if (models.empty()) {
    auto registry = inference::ModelRegistry::Create(ToRegistryOptions(global));
    if (!registry) {
      fmt::print(stderr, "error: {}\n", registry.error().ToString());
      return 2;
    }
    models = (*registry)->Names();
  }
  auto publisher = kafka::KafkaPublisher::Create(*kafka_options);
  if (!publisher) {
    fmt::print(stderr, "error: {}\n", publisher.error().ToString());
    return 2;
  }
  // A broker that is still starting (the init container starts with it) gets time to come.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(args.wait_ms);
  Status up = (*publisher)->CheckBroker(std::chrono::seconds(2));
  while (!up.ok() && std::chrono::steady_clock::now() < deadline) {
    spdlog::info("topics: waiting for the broker: {}", up.message());
    std::this_thread::sleep_for(std::chrono::seconds(1));
    up = (*publisher)->CheckBroker(std::chrono::seconds(2));
  }
  if (!up.ok()) {
    fmt::print(stderr, "error: broker {} did not answer within {} ms: {}\n", args.kafka.brokers,
               args.wait_ms, up.message());
    return 1;
  }
  int failed = 0;
  for (const auto& spec : protocol::TopicPlan(models, args.partitions)) {
    kafka::KafkaPublisher::TopicSettings settings;
    settings.partitions = spec.partitions;
    settings.replication_factor = args.replication_factor;
    settings.configs = spec.configs;
    auto ready = (*publisher)->EnsureTopic(spec.name, settings, std::chrono::seconds(30));
    if (!ready) {
      fmt::print(stderr, "error: {}\n", ready.error().message());
      ++failed;
      continue;
    }
    fmt::print("{}: ready, {} partition(s)\n", spec.name, *ready);
    if (*ready < spec.partitions) {
      fmt::print(stderr,
                 "warning: {} has {} partition(s), fewer than {}: at most {} worker(s) of one "
                 "model share it (kafka-topics.sh --alter --partitions {})\n",
                 spec.name, *ready, spec.partitions, *ready, spec.partitions);
    }
  }
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}

struct HealthArgs {
  std::string url;
  std::string tls_cert;  // set: the service serves HTTPS (the default URL is https://)
  int http_port = 8080;
  int timeout_ms = 3000;
};

// `http[s]://host[:port][/path]` split for cpp-httplib's client.
struct ParsedUrl {
  std::string origin;  // scheme://host:port
  std::string path;
};

Result<ParsedUrl> ParseHttpUrl(const std::string& url) {
  const std::string_view scheme = url.starts_with("https://") ? "https://" : "http://";
  if (!url.starts_with(scheme) || url.size() == scheme.size()) {
    return InvalidArgumentError("--url must look like http[s]://host:port/path, got '" + url + "'");
  }
  const auto slash = url.find('/', scheme.size());
  ParsedUrl p;
  p.origin = url.substr(0, slash);
  p.path = slash == std::string::npos ? "/" : url.substr(slash);
  return p;
}

int RunHealth(const HealthArgs& args) {
  const std::string url =
      !args.url.empty() ? args.url
                        : fmt::format("{}://127.0.0.1:{}/healthz",
                                      args.tls_cert.empty() ? "http" : "https", args.http_port);
  auto parsed = ParseHttpUrl(url);
  if (!parsed) {
    fmt::print(stderr, "error: {}\n", parsed.error().message());
    return 2;
  }
  httplib::Client client(parsed->origin);
  // The local service's own certificate, reached as 127.0.0.1: its name will not match, and
  // this check is about liveness, not about whom we talk to.
  client.enable_server_certificate_verification(false);
  const auto timeout = std::chrono::milliseconds(args.timeout_ms);
  client.set_connection_timeout(timeout);
  client.set_read_timeout(timeout);
  client.set_write_timeout(timeout);
  const auto res = client.Get(parsed->path);
  if (!res) {
    fmt::print(stderr, "unhealthy: {}: {}\n", url, httplib::to_string(res.error()));
    return 1;
  }
  if (res->status != 200) {
    fmt::print(stderr, "unhealthy: {}: HTTP {} {}\n", url, res->status, res->body.substr(0, 200));
    return 1;
  }
  return 0;
}

}  // namespace

Command AddTopicsCommand(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<TopicsArgs>();
  CLI::App* sub = app.add_subcommand(
      "topics", "create the kadr topics with the settings docs/protocol.md requires (idempotent)");
  sub->add_option("--models", args->models,
                  "models whose kadr.frames.<model> topic to create (default: all configured)")
      ->envname("KADR_MODELS")
      ->delimiter(',');
  sub->add_option("--partitions", args->partitions,
                  "partitions of each topic: at least the most workers of one model")
      ->envname("KADR_PARTITIONS")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  sub->add_option("--replication-factor", args->replication_factor,
                  "replicas of each partition (-1: the broker's default.replication.factor)")
      ->envname("KADR_REPLICATION_FACTOR")
      ->check(CLI::Range(-1, 100))
      ->capture_default_str();
  sub->add_option("--wait-ms", args->wait_ms, "how long to wait for the broker to answer")
      ->envname("KADR_WAIT_MS")
      ->check(CLI::Range(0, 3600000))
      ->capture_default_str();
  AddKafkaFlags(*sub, args->kafka, /*brokers_required=*/true);
  return {sub, [args, &global] { return RunTopics(*args, global); }};
}

Command AddHealthCommand(CLI::App& app, const GlobalOptions&) {
  auto args = std::make_shared<HealthArgs>();
  CLI::App* sub = app.add_subcommand(
      "health", "exit 0 when the local kadr service answers GET /healthz with 200 (health check)");
  sub->add_option("--url", args->url,
                  "URL to check (default: http://127.0.0.1:<http-port>/healthz)")
      ->envname("KADR_HEALTH_URL");
  sub->add_option("--http-port", args->http_port, "port of the service on 127.0.0.1")
      ->envname("KADR_HTTP_PORT")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  sub->add_option("--tls-cert", args->tls_cert,
                  "set when the service serves HTTPS (its --tls-cert): the default URL is https")
      ->envname("KADR_TLS_CERT");
  sub->add_option("--timeout-ms", args->timeout_ms, "connect and read timeout")
      ->envname("KADR_HEALTH_TIMEOUT_MS")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  return {sub, [args] { return RunHealth(*args); }};
}

}  // namespace kadr::cli
