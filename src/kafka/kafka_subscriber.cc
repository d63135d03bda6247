#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "bus/offset_tracker.h"
#include "kafka/detail/rdkafka_util.h"
#include "kafka/kafka_bus.h"

namespace kadr::kafka {

namespace {

// Where an offset reset left the consumer, from librdkafka's description ("... offset reset
// (at offset 0, broker 1) to cached BEGINNING offset 3: ..."): the messages [0, 3) are gone.
// `to` stays -1 when it does not say (it then asks the broker for the offset first).
void ParseReset(const std::string& detail, bus::Loss& loss) {
  static const std::regex kFrom(R"(at offset (\d+))");
  static const std::regex kTo(R"(at offset \d+.*? to [^:]*?offset (\d+))");
  std::smatch m;
  if (std::regex_search(detail, m, kFrom)) loss.from = std::stoll(m[1]);
  if (std::regex_search(detail, m, kTo)) loss.to = std::stoll(m[1]);
}

// Losses waiting for TakeLosses, at most this many (a subscriber whose owner never asks).
constexpr std::size_t kMaxPendingLosses = 256;

}  // namespace

struct KafkaSubscriber::Impl {
  detail::HandlePtr rk;
  std::string group;
  bus::OffsetTracker tracker;
  std::mutex close_mu;
  bool closed = false;
  std::mutex losses_mu;
  std::vector<bus::Loss> losses;  // found, not yet taken

  // Logs a loss at once and keeps it for TakeLosses. Any thread.
  void Lost(bus::Loss loss, const std::string& detail) {
    spdlog::error(
        "messages lost: deleted by the broker before they were read topic={} partition={} "
        "from_offset={} to_offset={} group={} detail=\"{}\"",
        loss.topic, loss.partition, loss.from, loss.to, group, detail);
    std::lock_guard lock(losses_mu);
    if (losses.size() >= kMaxPendingLosses) losses.erase(losses.begin());
    losses.push_back(std::move(loss));
  }

  // librdkafka's log lines, from its threads. With auto.offset.reset earliest or latest it
  // reports a position the broker no longer has only here ("offset reset ... Offset out of
  // range"): messages deleted before they were read. Everything else is printed as
  // librdkafka's own logger does.
  static void OnLog(const rd_kafka_t* rk, int level, const char* facility, const char* line) {
    auto* self = static_cast<Impl*>(rd_kafka_opaque(rk));
    const std::string text(line);
    if (self != nullptr && std::string_view(facility) == "OFFSET" &&
        text.find("offset reset") != std::string::npos &&
        text.find("out of range") != std::string::npos) {
      static const std::regex kWhere(R"((\S+) \[(\d+)\]: offset reset)");
      std::smatch m;
      bus::Loss loss;
      if (std::regex_search(text, m, kWhere)) {
        loss.topic = m[1].str();
        loss.partition = std::stoi(m[2]);
      } else {
        loss.partition = -1;
      }
      ParseReset(text, loss);
      self->Lost(std::move(loss), text);
      return;
    }
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    std::fprintf(stderr, "%%%d|%lld.%03lld|%s|%s| %s\n", level, static_cast<long long>(now / 1000),
                 static_cast<long long>(now % 1000), facility, rd_kafka_name(rk), line);
  }

  void StoreOffset(const std::string& topic, int partition, std::int64_t offset) {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset = offset;
    const rd_kafka_resp_err_t err = rd_kafka_offsets_store(rk.get(), list);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::debug("offset store skipped topic={} partition={} error={}", topic, partition,
                    rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(list);
  }

  static void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      spdlog::info("partitions assigned count={} group={}", partitions->cnt, self->group);
      rd_kafka_assign(rk, partitions);
      return;
    }
    spdlog::info("partitions revoked count={} group={}", partitions->cnt, self->group);
    // Commit what is acknowledged before someone else takes these partitions.
    rd_kafka_commit(rk, nullptr, /*async=*/0);
    for (int i = 0; i < partitions->cnt; ++i) {
      self->tracker.Forget(partitions->elems[i].topic, partitions->elems[i].partition);
    }
    rd_kafka_assign(rk, nullptr);
  }
};

Result<std::unique_ptr<KafkaSubscriber>> KafkaSubscriber::Create(const KafkaOptions& options,
                                                                 const SubscriberOptions& sub) {
  if (sub.group_id.empty()) return InvalidArgumentError("consumer group id is empty");
  if (sub.topics.empty()) return InvalidArgumentError("no topics to subscribe to");
  auto impl = std::make_unique<Impl>();
  impl->group = sub.group_id;
  detail::ConfBuilder b;
  b.Common(options)
      .Set("group.id", sub.group_id)
      .Set("enable.auto.commit", "true")
      .Set("enable.auto.offset.store", "false")
      .Set("auto.commit.interval.ms", "500")
      .Set("auto.offset.reset", sub.auto_offset_reset)
      .Set("fetch.wait.max.ms", std::to_string(options.fetch_wait_max_ms))
      .Set("session.timeout.ms", std::to_string(options.session_timeout_ms))
      .Set("heartbeat.interval.ms", std::to_string(options.heartbeat_interval_ms))
      .Set("fetch.max.bytes",
           std::to_string(std::max<std::size_t>(options.max_message_bytes * 2, 52428800)))
      .Set("max.partition.fetch.bytes", std::to_string(options.max_message_bytes + 64 * 1024))
      .Set("enable.partition.eof", "false");
  if (sub.metadata_refresh_ms > 0) {
    b.Set("topic.metadata.refresh.interval.ms", std::to_string(sub.metadata_refresh_ms));
  }
  rd_kafka_conf_set_rebalance_cb(b.get(), &Impl::OnRebalance);
  rd_kafka_conf_set_log_cb(b.get(), &Impl::OnLog);
  rd_kafka_conf_set_opaque(b.get(), impl.get());
  ASSIGN_OR_RETURN(auto conf, b.Build());
  ASSIGN_OR_RETURN(impl->rk, detail::NewHandle(RD_KAFKA_CONSUMER, std::move(conf)));
  rd_kafka_poll_set_consumer(impl->rk.get());

  rd_kafka_topic_partition_list_t* topics =
      rd_kafka_topic_partition_list_new(static_cast<int>(sub.topics.size()));
  for (const auto& t : sub.topics) {
    rd_kafka_topic_partition_list_add(topics, t.c_str(), RD_KAFKA_PARTITION_UA);
  }
  const rd_kafka_resp_err_t err = rd_kafka_subscribe(impl->rk.get(), topics);
  rd_kafka_topic_partition_list_destroy(topics);
  RETURN_IF_ERROR(detail::FromKafkaError(err, "subscribe"));
  return std::unique_ptr<KafkaSubscriber>(new KafkaSubscriber(std::move(impl)));
}

KafkaSubscriber::KafkaSubscriber(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KafkaSubscriber::~KafkaSubscriber() { (void)Close(); }

std::vector<bus::InboundMessage> KafkaSubscriber::Poll(std::size_t max_messages,
                                                       std::chrono::milliseconds timeout,
                                                       std::chrono::milliseconds linger) {
  std::vector<bus::InboundMessage> out;
  const auto start = std::chrono::steady_clock::now();
  auto wait = timeout;
  while (out.size() < max_messages) {
    rd_kafka_message_t* msg =
        rd_kafka_consumer_poll(impl_->rk.get(), static_cast<int>(wait.count()));
    if (msg == nullptr) {
      if (!out.empty() || std::chrono::steady_clock::now() - start >= timeout) break;
      continue;
    }
    if (msg->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
      // The broker no longer has the messages at our position (retention, or the embedded
      // broker's 5 MB per-partition log): they are gone. Never silent.
      const std::string detail = rd_kafka_message_errstr(msg);
      bus::Loss loss;
      loss.topic = msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "";
      loss.partition = msg->partition;
      ParseReset(detail, loss);
      impl_->Lost(std::move(loss), detail);
      rd_kafka_message_destroy(msg);
      continue;
    }
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Transport errors are retried by librdkafka; report and carry on.
      spdlog::warn("consumer error=\"{}\"", rd_kafka_message_errstr(msg));
      rd_kafka_message_destroy(msg);
      continue;
    }
    bus::InboundMessage in;
    in.message.topic = rd_kafka_topic_name(msg->rkt);
    if (msg->key != nullptr)
      in.message.key.assign(static_cast<const char*>(msg->key), msg->key_len);
    const auto* payload = static_cast<const std::uint8_t*>(msg->payload);
    if (payload != nullptr) in.message.value.assign(payload, payload + msg->len);
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t i = 0;
           rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
           ++i) {
        in.message.headers.Add(name,
                               value ? std::string(static_cast<const char*>(value), size) : "");
      }
    }
    in.token = {in.message.topic, msg->partition, msg->offset};
    in.timestamp_ms = rd_kafka_message_timestamp(msg, nullptr);
    impl_->tracker.Track(in.token.topic, in.token.partition, in.token.offset);
    rd_kafka_message_destroy(msg);
    out.push_back(std::move(in));
    wait = linger;  // after the first message, wait only briefly for more
  }
  return out;
}

std::vector<bus::Loss> KafkaSubscriber::TakeLosses() {
  std::vector<bus::Loss> taken;
  {
    std::lock_guard lock(impl_->losses_mu);
    taken.swap(impl_->losses);
  }
  for (auto& loss : taken) {
    if (loss.to >= 0 || loss.topic.empty() || loss.partition < 0) continue;
    // The reset did not say where the log starts now: the broker does.
    std::int64_t low = -1;
    std::int64_t high = -1;
    const rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        impl_->rk.get(), loss.topic.c_str(), loss.partition, &low, &high, 2000);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && low > loss.from) {
      loss.to = low;
      spdlog::error("messages lost topic={} partition={} from_offset={} to_offset={} lost={}",
                    loss.topic, loss.partition, loss.from, loss.to, loss.count());
    }
  }
  return taken;
}

void KafkaSubscriber::Ack(const bus::AckToken& token) {
  if (auto next = impl_->tracker.Ack(token.topic, token.partition, token.offset)) {
    impl_->StoreOffset(token.topic, token.partition, *next);
  }
}

Status KafkaSubscriber::Close() {
  std::lock_guard lock(impl_->close_mu);
  if (impl_->closed) return Status::Ok();
  impl_->closed = true;
  rd_kafka_resp_err_t err = rd_kafka_commit(impl_->rk.get(), nullptr, /*async=*/0);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    spdlog::warn("final commit failed error={}", rd_kafka_err2str(err));
  }
  err = rd_kafka_consumer_close(impl_->rk.get());
  return detail::FromKafkaError(err, "consumer close");
}

}  // namespace kadr::kafka
