#include "kafka/kafka_publisher.h"

#include <atomic>
#include <thread>

#include <spdlog/spdlog.h>

#include "kafka/detail/rdkafka_util.h"

namespace kadr::kafka {

struct KafkaPublisher::Impl {
  KafkaOptions options;
  detail::HandlePtr rk;
  std::atomic<bool> stop{false};
  std::thread poller;

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* msg, void*) {
    auto* cb = static_cast<bus::DeliveryCallback*>(msg->_private);
    if (cb == nullptr) return;
    Status s = detail::FromKafkaError(msg->err,
                                      "delivery to " + std::string(rd_kafka_topic_name(msg->rkt)));
    if (!s.ok()) spdlog::warn("delivery failed error=\"{}\"", s.message());
    if (*cb) (*cb)(s);
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

Status KafkaPublisher::Publish(bus::Message message, bus::DeliveryCallback on_delivery) {
  if (message.value.size() > impl_->options.max_message_bytes) {
    return TooLargeError("message of " + std::to_string(message.value.size()) +
                         " bytes is over the limit of " +
                         std::to_string(impl_->options.max_message_bytes) + " bytes");
  }
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

}  // namespace kadr::kafka
