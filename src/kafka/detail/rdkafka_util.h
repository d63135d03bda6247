// Small helpers around librdkafka's C API: building a configuration with errors as Status,
// and owning handles with unique_ptr.
#pragma once

#include <memory>
#include <string>

#include <librdkafka/rdkafka.h>

#include "common/status.h"
#include "kafka/kafka_bus.h"

namespace kadr::kafka::detail {

struct ConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

struct HandleDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using HandlePtr = std::unique_ptr<rd_kafka_t, HandleDeleter>;

class ConfBuilder {
 public:
  ConfBuilder() : conf_(rd_kafka_conf_new()) {}
  // Records the first error; later calls are no-ops after one fails.
  ConfBuilder& Set(const std::string& key, const std::string& value);
  // bootstrap.servers and the pass-through properties of `options`.
  ConfBuilder& Common(const KafkaOptions& options);
  rd_kafka_conf_t* get() { return conf_.get(); }
  // The conf (ownership passes to the caller) or the first error.
  Result<ConfPtr> Build();

 private:
  ConfPtr conf_;
  Status status_;
};

// rd_kafka_new, which takes ownership of the conf on success.
Result<HandlePtr> NewHandle(rd_kafka_type_t type, ConfPtr conf);

Status FromKafkaError(rd_kafka_resp_err_t err, const std::string& context);

}  // namespace kadr::kafka::detail
