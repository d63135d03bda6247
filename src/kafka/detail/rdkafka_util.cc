#include "kafka/detail/rdkafka_util.h"

namespace kadr::kafka::detail {

ConfBuilder& ConfBuilder::Set(const std::string& key, const std::string& value) {
  if (!status_.ok()) return *this;
  char err[512];
  if (rd_kafka_conf_set(conf_.get(), key.c_str(), value.c_str(), err, sizeof(err)) !=
      RD_KAFKA_CONF_OK) {
    status_ = InvalidArgumentError("kafka setting " + key + ": " + err);
  }
  return *this;
}

ConfBuilder& ConfBuilder::Common(const KafkaOptions& options) {
  Set("bootstrap.servers", options.brokers);
  Set("message.max.bytes", std::to_string(options.max_message_bytes + 64 * 1024));
  Set("log.connection.close", "false");
  for (const auto& [k, v] : options.properties) Set(k, v);
  return *this;
}

Result<ConfPtr> ConfBuilder::Build() {
  if (!status_.ok()) return status_;
  return std::move(conf_);
}

Result<HandlePtr> NewHandle(rd_kafka_type_t type, ConfPtr conf) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), err, sizeof(err));
  if (rk == nullptr) return InvalidArgumentError(std::string("cannot create kafka client: ") + err);
  (void)conf.release();  // owned by rk now
  return HandlePtr(rk);
}

Status FromKafkaError(rd_kafka_resp_err_t err, const std::string& context) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Ok();
  const std::string msg = context + ": " + rd_kafka_err2str(err);
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
      return TooLargeError(msg);
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      return ResourceExhaustedError(msg);
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
      return DeadlineExceededError(msg);
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
      return InvalidArgumentError(msg);
    default:
      return UnavailableError(msg);
  }
}

}  // namespace kadr::kafka::detail
