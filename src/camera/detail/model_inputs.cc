#include "camera/detail/model_inputs.h"

#include <algorithm>

namespace kadr::camera::detail {

void ModelInputs::Note(const protocol::WorkerHeartbeat& heartbeat, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  if (heartbeat.state != "running") {
    by_worker_.erase(heartbeat.worker_id);
    return;
  }
  const std::int64_t interval =
      std::clamp<std::int64_t>(heartbeat.interval_ms, 100, std::int64_t{60000});
  // Segmentation masks come back at the wire frame's resolution and are scaled up to the
  // video's: those frames keep max_frame_side (0 here: "any size").
  const int long_side =
      heartbeat.task == "segment" ? 0 : std::max(heartbeat.input_width, heartbeat.input_height);
  Entry entry{heartbeat.model, long_side, now_ms + 3 * interval};
  if (const auto it = by_worker_.find(heartbeat.worker_id); it != by_worker_.end()) {
    it->second = std::move(entry);
    return;
  }
  if (by_worker_.size() >= kMaxWorkers) {
    std::erase_if(by_worker_, [&](const auto& kv) { return kv.second.expires_ms <= now_ms; });
    if (by_worker_.size() >= kMaxWorkers) return;
  }
  by_worker_.emplace(heartbeat.worker_id, std::move(entry));
}

int ModelInputs::LongSide(std::string_view model, std::int64_t now_ms) const {
  std::lock_guard lock(mu_);
  int longest = 0;
  for (const auto& [worker, entry] : by_worker_) {
    if (entry.model != model || entry.expires_ms <= now_ms) continue;
    if (entry.long_side <= 0) return 0;  // a dynamic input takes the frames as they come
    longest = std::max(longest, entry.long_side);
  }
  return longest;
}

int WireSide(int max_frame_side, int input_side) {
  if (input_side <= 0) return max_frame_side;
  const int fit = std::max(kMinWireSide, input_side);
  return max_frame_side > 0 ? std::min(max_frame_side, fit) : fit;
}

}  // namespace kadr::camera::detail
