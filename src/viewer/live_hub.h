// LiveHub: the latest annotated JPEG and the latest result JSON of each live stream, in
// memory, for the viewer's live routes (MJPEG, Server-Sent Events, latest frame).
//
// Latest wins: a stream holds one frame and one result; a new one replaces the old, so a slow
// reader skips to the newest instead of building a queue. Every item gets a generation from
// one hub-wide counter that only grows, so a reader that passes back the generation it last
// saw gets the next newer item (never the same one twice, even across a forgotten stream).
//
// Bounded: at most `max_streams` streams (adding one more forgets the least recently updated)
// and items of at most `max_item_bytes`; a stream with no new item for `idle_timeout` is
// forgotten (checked by Put at most once a second, and by Sweep). Nothing is ever persisted.
//
// Threading: thread-safe. Put is called by the viewer's polling thread; Latest and Next by
// HTTP threads, Next blocking until an item, its timeout, or its stop token.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kadr::viewer {

struct LiveHubOptions {
  // Streams held at once; one more forgets the least recently updated.
  std::size_t max_streams = 64;
  // A stream with no new frame or result for this long is forgotten.
  std::chrono::milliseconds idle_timeout{60000};
  // Largest frame or result accepted, in bytes.
  std::size_t max_item_bytes = 16U << 20;
  // Longest accepted stream id, in bytes.
  std::size_t max_stream_id_bytes = 128;
};

enum class LiveKind { kFrame, kResult };

// One item as held by the hub; `data` is shared (and never changed), so handing it out
// copies no bytes.
struct LiveItem {
  std::shared_ptr<const std::string> data;  // JPEG bytes (kFrame) or result JSON (kResult)
  std::int64_t sequence = 0;                // the frame's kadr-seq
  std::uint64_t generation = 0;             // hub-wide, increasing; >= 1
  std::int64_t received_ms = 0;             // hub clock when Put
};

class LiveHub {
 public:
  // `now_ms`: milliseconds on a monotonic clock (idle expiry); steady_clock when unset.
  explicit LiveHub(LiveHubOptions options = {}, std::function<std::int64_t()> now_ms = {});
  LiveHub(const LiveHub&) = delete;
  LiveHub& operator=(const LiveHub&) = delete;

  // Makes `data` the stream's latest item of `kind` and wakes the waiters.
  // kInvalidArgument: empty or over-long stream id, empty data. kTooLarge: data over
  // max_item_bytes.
  Status Put(LiveKind kind, std::string_view stream_id, std::int64_t sequence, std::string data);

  // The stream's latest item of `kind`, if it has one.
  std::optional<LiveItem> Latest(LiveKind kind, std::string_view stream_id) const;

  // The stream's latest item of `kind` whose generation is greater than `after` (0: any):
  // at once when there is one, else the first to arrive within `timeout`. nullopt when none
  // came in time or `stop` was requested.
  std::optional<LiveItem> Next(LiveKind kind, std::string_view stream_id, std::uint64_t after,
                               std::chrono::milliseconds timeout, const std::stop_token& stop);

  // Forgets the streams idle for longer than idle_timeout; returns how many.
  std::size_t Sweep();

  // Streams held now.
  std::size_t stream_count() const;

 private:
  struct Entry {
    std::optional<LiveItem> frame;
    std::optional<LiveItem> result;
    std::int64_t updated_ms = 0;
  };
  static const std::optional<LiveItem>& Slot(const Entry& e, LiveKind kind);
  std::int64_t NowMs() const;
  std::size_t SweepLocked(std::int64_t now);

  const LiveHubOptions options_;
  const std::function<std::int64_t()> now_ms_;
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::map<std::string, Entry, std::less<>> streams_;  // guarded by mu_
  std::uint64_t last_generation_ = 0;                  // guarded by mu_
  std::int64_t last_sweep_ms_ = 0;                     // guarded by mu_
};

}  // namespace kadr::viewer
