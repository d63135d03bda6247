// ModelInputs: the input size each model's workers announce on kadr.workers, so that a video
// job's frames travel no larger than the model looks at them (docs/adr/0017). The camera
// service draws the MP4 on the frames it decoded, so the wire size only feeds the model.
//
// Announcements are bus input: a worker is forgotten 3 of its intervals (at most 3 minutes)
// after it was last heard, or when it says it is stopping; at most kMaxWorkers are kept.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "protocol/frame.h"

namespace kadr::camera::detail {

class ModelInputs {
 public:
  static constexpr std::size_t kMaxWorkers = 4096;

  // Notes one announcement received at `now_ms` (this host's clock).
  void Note(const protocol::WorkerHeartbeat& heartbeat, std::int64_t now_ms);

  // The longest input side among the live workers of `model`; 0 when none is known, or when
  // one of them has a dynamic input (it takes any size) or segments (its masks come back at
  // the wire frame's resolution).
  int LongSide(std::string_view model, std::int64_t now_ms) const;

 private:
  struct Entry {
    std::string model;
    int long_side = 0;
    std::int64_t expires_ms = 0;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> by_worker_;
};

// The long side of a video job's frames on the wire: `max_frame_side` (0: any), lowered to
// the model's input side (`input_side`, 0: unknown) but never below kMinWireSide.
inline constexpr int kMinWireSide = 320;
int WireSide(int max_frame_side, int input_side);

}  // namespace kadr::camera::detail
