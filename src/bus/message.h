// Messages on the bus: what a frame or a result looks like in transit, independent of the
// transport (Kafka in production, an in-memory fake in unit tests). Plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kadr::bus {

// Ordered (name, value) pairs; names may repeat, as in Kafka. Values are UTF-8 text.
class Headers {
 public:
  void Set(std::string name, std::string value);  // replaces every header of that name
  void Add(std::string name, std::string value);  // appends
  std::optional<std::string> Get(std::string_view name) const;  // last one of that name
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }
  bool empty() const { return items_.empty(); }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

struct Message {
  std::string topic;
  std::string key;                  // keeps one stream's messages ordered (one partition)
  std::vector<std::uint8_t> value;  // JPEG bytes for frames, JSON for results
  Headers headers;
};

// Identifies a consumed message for acknowledgement (Kafka: partition + offset).
struct AckToken {
  std::string topic;
  int partition = 0;
  std::int64_t offset = 0;
};

struct InboundMessage {
  Message message;
  AckToken token;
  std::int64_t timestamp_ms = 0;  // broker/producer timestamp, Unix ms; 0 if unknown
};

}  // namespace kadr::bus
