// EmbeddedBroker: librdkafka's built-in mock cluster, which speaks the real Kafka protocol
// over TCP on 127.0.0.1, for development (`kadr broker`, `kadr up`) and tests.
//
// It keeps everything in memory, in this process: data is gone when the process exits, there
// is no replication to disk and no security. Each partition keeps only its newest ~5 MB
// (librdkafka 2.0.2's fixed mock log size, about 50 frames of 100 KB): a consumer that falls
// further behind finds its offset deleted and skips ahead, losing those messages. Production uses
// Apache Kafka; kadr's clients are the same either way. Fault injection (broker down, request
// errors) is for tests.
//
// Thread-safe. The cluster stops when the object is destroyed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace kadr::kafka {

struct EmbeddedBrokerOptions {
  int brokers = 1;     // mock broker count (ids 1..brokers)
  int partitions = 4;  // partitions of the topics created here (auto-created ones get 4)
  // A fixed bootstrap port on 127.0.0.1 (a relay to the first broker); 0: none, use the
  // mock's own ephemeral bootstrap addresses.
  int port = 0;
  std::vector<std::string> topics;  // created at start with `partitions` partitions
};

class EmbeddedBroker {
 public:
  static Result<std::unique_ptr<EmbeddedBroker>> Create(const EmbeddedBrokerOptions& options);
  ~EmbeddedBroker();

  // "host:port[,host:port]" for clients' bootstrap.servers.
  const std::string& bootstrap() const;

  Status CreateTopic(const std::string& topic, int partitions);

  // Fault injection: a down broker closes its connections and refuses new ones.
  Status SetBrokerDown(int broker_id);
  Status SetBrokerUp(int broker_id);
  // The next `count` requests of Kafka API `api_key` (e.g. 0 Produce, 1 Fetch, 8 OffsetCommit)
  // fail with Kafka error code `error_code` (e.g. 6 NOT_LEADER_FOR_PARTITION).
  void PushRequestErrors(int api_key, int count, int error_code);

  struct Impl;

 private:
  explicit EmbeddedBroker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::kafka
