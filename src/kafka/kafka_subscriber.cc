#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <regex>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "bus/offset_tracker.h"
#include "kafka/detail/rdkafka_util.h"
#include "kafka/kafka_bus.h"

namespace kadr::kafka {

namespace {

// How many messages an offset reset skipped, from librdkafka's description ("... offset reset
// (at offset 0, broker 1) to cached BEGINNING offset 3: ..."); 0 when it does not say.
std::int64_t LostMessages(const std::string& detail) {
  static const std::regex kRange(R"(at offset (\d+).*? to [^:]*?offset (\d+))");
  std::smatch m;
  if (!std::regex_search(detail, m, kRange)) return 0;
  const std::int64_t from = std::stoll(m[1]);
  const std::int64_t to = std::stoll(m[2]);
  return to > from ? to - from : 0;
}

}  // namespace

struct KafkaSubscriber::Impl {
  detail::HandlePtr rk;
  std::string group;
  std::function<void(const std::string&, int, std::int64_t)> on_lost;
  bus::OffsetTracker tracker;
  std::mutex close_mu;
  bool closed = false;

  // librdkafka's log lines, from its threads. With auto.offset.reset earliest or latest it
  // reports a position the broker no longer has only here ("offset reset ... Offset out of
  // range"): messages deleted before they were read. Everything else is printed as
  // librdkafka's own logger does.
  static void OnLog(const rd_kafka_t* rk, int level, const char* facility, const char* line) {
    const auto* self = static_cast<const Impl*>(rd_kafka_opaque(rk));
    const std::string text(line);
    if (self != nullptr && std::string_view(facility) == "OFFSET" &&
        text.find("offset reset") != std::string::npos &&
        text.find("out of range") != std::string::npos) {
      static const std::regex kWhere(R"((\S+) \[(\d+)\]: offset reset)");
      std::smatch m;
      const bool named = std::regex_search(text, m, kWhere);
      const std::string topic = named ? m[1].str() : "";
      const int partition = named ? std::stoi(m[2]) : -1;
      const std::int64_t lost = LostMessages(text);
      spdlog::error(
          "messages lost: deleted by the broker before they were read topic={} "
          "partition={} lost={} detail=\"{}\"",
          topic, partition, lost, text);
      if (self->on_lost) self->on_lost(topic, partition, lost);
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
  impl->on_lost = sub.on_lost;
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
      const std::string topic = msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "";
      const std::int64_t lost = LostMessages(detail);
      spdlog::error(
          "messages lost: deleted by the broker before they were read topic={} "
          "partition={} lost={} error=\"{}\"",
          topic, msg->partition, lost, detail);
      if (impl_->on_lost) impl_->on_lost(topic, msg->partition, lost);
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
