#include "bus/offset_tracker.h"

namespace kadr::bus {

void OffsetTracker::Track(const std::string& topic, int partition, std::int64_t offset) {
  std::lock_guard lock(mu_);
  Partition& p = partitions_[{topic, partition}];
  // Nothing before the first offset we see is ours to commit.
  if (p.next < 0) p.committable = offset;
  p.pending.insert(offset);
  p.next = std::max(p.next, offset + 1);
}

std::optional<std::int64_t> OffsetTracker::Advance(Partition& p) {
  const std::int64_t c = p.pending.empty() ? p.next : *p.pending.begin();
  if (c <= p.committable) return std::nullopt;
  p.committable = c;
  return c;
}

std::optional<std::int64_t> OffsetTracker::Ack(const std::string& topic, int partition,
                                               std::int64_t offset) {
  std::lock_guard lock(mu_);
  auto it = partitions_.find({topic, partition});
  if (it == partitions_.end() || it->second.pending.erase(offset) == 0) return std::nullopt;
  return Advance(it->second);
}

void OffsetTracker::Forget(const std::string& topic, int partition) {
  std::lock_guard lock(mu_);
  partitions_.erase({topic, partition});
}

std::size_t OffsetTracker::InFlight() const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (const auto& [key, p] : partitions_) n += p.pending.size();
  return n;
}

}  // namespace kadr::bus
