#include "cli/detail/kafka_flags.h"

#include <spdlog/spdlog.h>

#include "protocol/frame.h"
#include "protocol/topics.h"

namespace kadr::cli {

void AddKafkaFlags(CLI::App& app, KafkaFlags& flags, bool brokers_required) {
  auto* b = app.add_option("--brokers", flags.brokers, "Kafka bootstrap servers, host:port[,...]")
                ->envname("KADR_BROKERS");
  if (brokers_required) b->required();
  app.add_option("--kafka-property", flags.properties,
                 "librdkafka setting key=value, repeatable (security.protocol, sasl.*, ssl.*)")
      ->envname("KADR_KAFKA_PROPERTIES")
      ->delimiter(';');
  app.add_option("--fetch-wait-ms", flags.fetch_wait_max_ms,
                 "consumer fetch.wait.max.ms (the embedded broker holds every fetch this long); "
                 "0: 10 on Kafka, 3 on the embedded broker")
      ->envname("KADR_FETCH_WAIT_MS")
      ->check(CLI::Range(0, 5000))
      ->capture_default_str();
  app.add_option("--session-timeout-ms", flags.session_timeout_ms,
                 "consumer group session.timeout.ms: a dead member's partitions move after this")
      ->envname("KADR_SESSION_TIMEOUT_MS")
      ->check(CLI::Range(1000, 300000))
      ->capture_default_str();
}

void AddFrameBudgetFlag(CLI::App& app, KafkaFlags& flags) {
  app.add_option("--frame-budget-mb", flags.frame_budget_mb,
                 "MiB of frames per frames topic that may wait on the broker for their answer; "
                 "more wait their turn here (default: 4 on the embedded broker, 256 on Kafka)")
      ->envname("KADR_FRAME_BUDGET_MB")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20));
}

void AddReplyTopicPrefixFlag(CLI::App& app, KafkaFlags& flags) {
  app.add_option("--reply-topic-prefix", flags.reply_topic_prefixes,
                 "topics a frame may name for its answers (kadr-reply-to, kadr-annotated-to), "
                 "by prefix; others are refused with an error result (default: kadr.; "
                 "\"\": any topic)")
      ->envname("KADR_REPLY_TOPIC_PREFIXES")
      ->delimiter(',');
}

std::vector<std::string> ReplyTopicPrefixes(const KafkaFlags& flags) {
  std::vector<std::string> out;
  for (const auto& p : flags.reply_topic_prefixes) {
    if (p.empty()) return {};  // "": any topic
    out.push_back(p);
  }
  return out;
}

std::shared_ptr<engine::Admission> MakeAdmission(const KafkaFlags& flags, bool embedded) {
  engine::AdmissionOptions o;
  if (flags.frame_budget_mb > 0) {
    o.budget_bytes = flags.frame_budget_mb << 20;
  } else if (embedded) {
    o.budget_bytes = engine::Admission::kEmbeddedBudgetBytes;
  }
  if (embedded) o.max_frame_bytes = engine::Admission::kEmbeddedMaxFrameBytes;
  spdlog::info("admission budget_bytes={} per frames topic max_waiting={}", o.budget_bytes,
               o.max_waiting);
  return std::make_shared<engine::Admission>(o);
}

kafka::SubscriberOptions WorkerSubscriberOptions(const std::string& model,
                                                 const std::string& group) {
  kafka::SubscriberOptions o;
  o.group_id = group.empty() ? protocol::WorkerGroup(model) : group;
  o.topics = {protocol::FramesTopic(model)};
  return o;
}

std::function<void(const bus::Loss&)> CountLostFrames(const std::string& model,
                                                      MetricsRegistry& metrics) {
  Counter& lost = metrics.GetCounter(
      "kadr_frames_lost_total",
      "Frames that never got a result, by reason (deleted_before_read: the broker deleted "
      "them before a worker read them)",
      {{"model", model}, {"reason", "deleted_before_read"}});
  return
      [&lost](const bus::Loss& loss) { lost.Increment(static_cast<std::uint64_t>(loss.count())); };
}

Result<kafka::KafkaOptions> ToKafkaOptions(const KafkaFlags& flags) {
  kafka::KafkaOptions o;
  o.brokers = flags.brokers;
  if (flags.fetch_wait_max_ms > 0) o.fetch_wait_max_ms = flags.fetch_wait_max_ms;
  o.session_timeout_ms = flags.session_timeout_ms;
  for (const auto& p : flags.properties) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgumentError("--kafka-property wants key=value, got '" + p + "'");
    }
    o.properties[p.substr(0, eq)] = p.substr(eq + 1);
  }
  return o;
}

std::string DescribeKafka(const kafka::KafkaOptions& options) {
  std::string s = "bootstrap=" + options.brokers;
  for (const auto& [k, v] : options.properties) {
    s += " " + k + "=" + (kafka::IsSecretProperty(k) ? "***" : v);
  }
  s += " fetch.wait.max.ms=" + std::to_string(options.fetch_wait_max_ms) +
       " linger.ms=" + std::to_string(options.linger_ms);
  return s;
}

Status EnsureKadrTopic(kafka::KafkaPublisher& publisher, std::string_view topic, int partitions) {
  kafka::KafkaPublisher::TopicSettings settings;
  settings.partitions = partitions;
  settings.configs = protocol::TopicConfigs(topic);
  auto created = publisher.EnsureTopic(std::string(topic), settings, std::chrono::seconds(5));
  return created ? Status::Ok() : created.error();
}

}  // namespace kadr::cli
