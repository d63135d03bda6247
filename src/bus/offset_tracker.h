// OffsetTracker: turns out-of-order acknowledgements into in-order commit points.
//
// Messages of one partition are handed out in offset order but may finish in any order
// (batching, asynchronous delivery). The committable offset of a partition is the lowest
// offset still in flight, or one past the highest tracked when none is: committing it never
// skips unfinished work. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace kadr::bus {

class OffsetTracker {
 public:
  // A message was handed to the application.
  void Track(const std::string& topic, int partition, std::int64_t offset);

  // A message is done. Returns the new committable offset (the next offset to read) when it
  // advanced, nullopt otherwise (or when the partition is not tracked any more).
  std::optional<std::int64_t> Ack(const std::string& topic, int partition, std::int64_t offset);

  // Forgets a partition (it was revoked): later acks for it are ignored.
  void Forget(const std::string& topic, int partition);

  // Messages tracked and not yet acknowledged, all partitions.
  std::size_t InFlight() const;

 private:
  struct Partition {
    std::set<std::int64_t> pending;
    std::int64_t next = -1;  // one past the highest offset tracked
    std::int64_t committable = -1;
  };
  std::optional<std::int64_t> Advance(Partition& p);

  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, Partition> partitions_;
};

}  // namespace kadr::bus
