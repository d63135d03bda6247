#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include <spdlog/spdlog.h>

#include "kafka/detail/rdkafka_util.h"
#include "kafka/kafka_bus.h"

namespace kadr::kafka {

namespace {

// The topic's state in a fresh metadata answer; requesting it lets the broker auto-create it.
// The partition count of `topic`; kUnavailable when the broker does not answer or does not
// have the topic (a broker that auto-creates topics creates it on this request).
// The partition count of `topic` from a metadata response: for that one topic (`rkt`), or,
// when `rkt` is null, among all topics.
Result<int> PartitionsInMetadata(rd_kafka_t* rk, rd_kafka_topic_t* rkt, const std::string& topic,
                                 std::chrono::milliseconds timeout) {
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err =
      rd_kafka_metadata(rk, rkt == nullptr ? 1 : 0, rkt, &md, static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return UnavailableError("metadata for topic " + topic + ": " + rd_kafka_err2str(err));
  }
  Result<int> result = NotFoundError("topic " + topic + " does not exist");
  for (int i = 0; i < md->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& t = md->topics[i];
    if (topic != t.topic) continue;
    if (t.err == RD_KAFKA_RESP_ERR_NO_ERROR && t.partition_cnt > 0) {
      result = t.partition_cnt;
    } else {
      result = UnavailableError("topic " + topic + ": " + rd_kafka_err2str(t.err));
    }
  }
  rd_kafka_metadata_destroy(md);
  return result;
}

// Metadata for `topic` by name: a broker with auto.create.topics.enable creates it now, with
// its own defaults (num.partitions, no topic configs).
Result<int> TopicInMetadata(rd_kafka_t* rk, const std::string& topic,
                            std::chrono::milliseconds timeout) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  if (rkt == nullptr) return InvalidArgumentError("bad topic name '" + topic + "'");
  auto result = PartitionsInMetadata(rk, rkt, topic, timeout);
  rd_kafka_topic_destroy(rkt);
  return result;
}

// Whether `rk` talks to kadr's embedded broker: librdkafka's mock cluster names its cluster
// "mockCluster<hex>".
bool IsEmbeddedBroker(rd_kafka_t* rk, std::chrono::milliseconds timeout) {
  char* id = rd_kafka_clusterid(rk, static_cast<int>(timeout.count()));
  const bool mock = id != nullptr && std::string_view(id).starts_with("mockCluster");
  if (id != nullptr) rd_kafka_mem_free(rk, id);
  return mock;
}

// The same among all topics: never creates it.
Result<int> ListedTopic(rd_kafka_t* rk, const std::string& topic,
                        std::chrono::milliseconds timeout) {
  return PartitionsInMetadata(rk, nullptr, topic, timeout);
}

}  // namespace

struct KafkaPublisher::Impl {
  KafkaOptions options;
  // Topics this producer has asked metadata for (see Publish).
  std::mutex topics_mu;
  std::set<std::string> known_topics;
  detail::HandlePtr rk;
  std::atomic<bool> stop{false};
  std::thread poller;

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* msg, void*) {
    auto* cb = static_cast<bus::DeliveryCallback*>(msg->_private);
    if (cb == nullptr) return;
    const std::string topic = rd_kafka_topic_name(msg->rkt);
    Status s = detail::FromKafkaError(msg->err, "delivery to " + topic);
    if (!s.ok()) spdlog::warn("delivery failed error=\"{}\"", s.message());
    const bus::AckToken stored_at{topic, msg->partition, s.ok() ? msg->offset : -1};
    if (*cb) (*cb)(s, stored_at);
    delete cb;
  }
};

Result<std::unique_ptr<KafkaPublisher>> KafkaPublisher::Create(const KafkaOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  detail::ConfBuilder b;
  b.Common(options)
      .Set("enable.idempotence", "true")
      .Set("acks", "all")
      .Set("linger.ms", std::to_string(options.linger_ms))
      .Set("queue.buffering.max.messages", std::to_string(options.queue_max_messages))
      .Set("queue.buffering.max.kbytes", std::to_string(options.queue_max_kbytes))
      .Set("delivery.timeout.ms", std::to_string(options.delivery_timeout_ms))
      .Set("compression.type", "none");  // JPEG does not compress
  rd_kafka_conf_set_dr_msg_cb(b.get(), &Impl::OnDelivery);
  ASSIGN_OR_RETURN(auto conf, b.Build());
  ASSIGN_OR_RETURN(impl->rk, detail::NewHandle(RD_KAFKA_PRODUCER, std::move(conf)));
  Impl* raw = impl.get();
  impl->poller = std::thread([raw] {
    while (!raw->stop.load()) rd_kafka_poll(raw->rk.get(), 50);
  });
  return std::unique_ptr<KafkaPublisher>(new KafkaPublisher(std::move(impl)));
}

KafkaPublisher::KafkaPublisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KafkaPublisher::~KafkaPublisher() {
  if (Status s = Flush(std::chrono::seconds(10)); !s.ok()) {
    spdlog::warn("publisher closing with undelivered messages count={}",
                 rd_kafka_outq_len(impl_->rk.get()));
    rd_kafka_purge(impl_->rk.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  }
  impl_->stop = true;
  impl_->poller.join();
  rd_kafka_poll(impl_->rk.get(), 0);  // serve the purged messages' callbacks
}

// librdkafka 2.0.2 does not ask for a topic's metadata when a message for a topic new to the
// producer is queued: it waits for its once-a-second topic scan, so the first frame to each
// topic took up to a second (measured: 0.8 s for a gateway's first request, and again for the
// worker's first reply to that gateway). One metadata request on first sight removes that.
void KafkaPublisher::WarmTopic(const std::string& topic) {
  {
    std::lock_guard lock(impl_->topics_mu);
    if (!impl_->known_topics.insert(topic).second) return;
  }
  if (auto s = TopicInMetadata(impl_->rk.get(), topic, std::chrono::milliseconds(1000)); !s) {
    spdlog::debug("metadata for new topic not ready: {}", s.error().ToString());
  }
}

Status KafkaPublisher::Publish(bus::Message message, bus::DeliveryCallback on_delivery) {
  if (message.value.size() > impl_->options.max_message_bytes) {
    return TooLargeError("message of " + std::to_string(message.value.size()) +
                         " bytes is over the limit of " +
                         std::to_string(impl_->options.max_message_bytes) + " bytes");
  }
  WarmTopic(message.topic);
  auto* cb = new bus::DeliveryCallback(std::move(on_delivery));
  const auto deadline = std::chrono::steady_clock::now() + impl_->options.enqueue_timeout;
  while (true) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(message.headers.items().size());
    for (const auto& [k, v] : message.headers.items()) {
      rd_kafka_header_add(headers, k.data(), static_cast<ssize_t>(k.size()), v.data(),
                          static_cast<ssize_t>(v.size()));
    }
    // rd_kafka_produceva rather than the producev macros, which use GNU statement expressions.
    // librdkafka copies key and value (RD_KAFKA_MSG_F_COPY) and never writes through them.
    rd_kafka_vu_t vus[6] = {};
    vus[0].vtype = RD_KAFKA_VTYPE_TOPIC;
    vus[0].u.cstr = message.topic.c_str();
    vus[1].vtype = RD_KAFKA_VTYPE_KEY;
    vus[1].u.mem.ptr = const_cast<char*>(message.key.data());
    vus[1].u.mem.size = message.key.size();
    vus[2].vtype = RD_KAFKA_VTYPE_VALUE;
    vus[2].u.mem.ptr = message.value.data();
    vus[2].u.mem.size = message.value.size();
    vus[3].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vus[3].u.i = RD_KAFKA_MSG_F_COPY;
    vus[4].vtype = RD_KAFKA_VTYPE_HEADERS;
    vus[4].u.headers = headers;
    vus[5].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vus[5].u.ptr = cb;
    rd_kafka_error_t* error = rd_kafka_produceva(impl_->rk.get(), vus, 6);
    const rd_kafka_resp_err_t err =
        error == nullptr ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_error_code(error);
    if (error != nullptr) rd_kafka_error_destroy(error);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Ok();  // headers now owned by rk
    rd_kafka_headers_destroy(headers);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || std::chrono::steady_clock::now() >= deadline) {
      delete cb;
      return detail::FromKafkaError(err, "publish to " + message.topic);
    }
    // Back-pressure: wait for deliveries to make room.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status KafkaPublisher::Flush(std::chrono::milliseconds timeout) {
  return detail::FromKafkaError(rd_kafka_flush(impl_->rk.get(), static_cast<int>(timeout.count())),
                                "flush");
}

Status KafkaPublisher::CheckBroker(std::chrono::milliseconds timeout) {
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err =
      rd_kafka_metadata(impl_->rk.get(), 0, nullptr, &md, static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return UnavailableError("broker " + impl_->options.brokers +
                            " did not answer: " + rd_kafka_err2str(err));
  }
  const int brokers = md->broker_cnt;
  rd_kafka_metadata_destroy(md);
  if (brokers == 0)
    return UnavailableError("broker " + impl_->options.brokers + " lists no brokers");
  return Status::Ok();
}

Status KafkaPublisher::EnsureTopic(const std::string& topic, int partitions,
                                   std::chrono::milliseconds timeout) {
  TopicSettings settings;
  settings.partitions = partitions;
  auto created = EnsureTopic(topic, settings, timeout);
  return created ? Status::Ok() : created.error();
}

Result<int> KafkaPublisher::EnsureTopic(const std::string& topic, const TopicSettings& settings,
                                        std::chrono::milliseconds timeout) {
  rd_kafka_t* rk = impl_->rk.get();
  const auto probe = std::min(timeout, std::chrono::milliseconds(2000));
  // An existing topic keeps its partitions and configs. It is looked for among all topics:
  // naming it in the request would make a broker that auto-creates topics (Kafka's default)
  // create it with the broker's defaults before CreateTopics could apply `settings`.
  auto existing = ListedTopic(rk, topic, probe);
  if (existing) return *existing;
  if (existing.error().code() != StatusCode::kNotFound) return existing.error();
  if (IsEmbeddedBroker(rk, probe)) {
    // librdkafka's mock cluster has no CreateTopics (a request would wait for the whole
    // timeout); a metadata request naming the topic creates it there.
    auto created = TopicInMetadata(rk, topic, probe);
    if (created) spdlog::info("topic auto-created topic={} partitions={}", topic, *created);
    return created;
  }
  char errstr[512] = {};
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(
      topic.c_str(), settings.partitions, settings.replication_factor, errstr, sizeof(errstr));
  if (nt == nullptr) return InvalidArgumentError("topic " + topic + ": " + errstr);
  for (const auto& [name, value] : settings.configs) {
    if (rd_kafka_NewTopic_set_config(nt, name.c_str(), value.c_str()) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_NewTopic_destroy(nt);
      std::string message = "topic " + topic + ": bad config ";
      message.append(name).append("=").append(value);
      return InvalidArgumentError(std::move(message));
    }
  }
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t* opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  (void)rd_kafka_AdminOptions_set_request_timeout(opts, static_cast<int>(timeout.count()), errstr,
                                                  sizeof(errstr));
  rd_kafka_CreateTopics(rk, &nt, 1, opts, queue);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(queue, static_cast<int>(timeout.count()));
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
  std::string detail;
  if (ev != nullptr) {
    err = rd_kafka_event_error(ev);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      size_t n = 0;
      const rd_kafka_topic_result_t** results =
          rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
      if (n == 1) {
        err = rd_kafka_topic_result_error(results[0]);
        const char* msg = rd_kafka_topic_result_error_string(results[0]);
        if (msg != nullptr) detail = msg;
      }
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_AdminOptions_destroy(opts);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_queue_destroy(queue);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::info("topic created topic={} partitions={}", topic, settings.partitions);
    return settings.partitions;
  }
  if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
    // Made meanwhile (or just now, by this client: a new topic reaches the metadata of every
    // broker a moment after CreateTopics answers). Its partition count, once listed.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto listed = ListedTopic(rk, topic, probe);
    while (!listed && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      listed = ListedTopic(rk, topic, probe);
    }
    return listed;
  }
  return UnavailableError("topic " + topic + " could not be created: " + rd_kafka_err2str(err) +
                          (detail.empty() ? "" : " (" + detail + ")"));
}

}  // namespace kadr::kafka
