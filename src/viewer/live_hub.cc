#include "viewer/live_hub.h"

#include <utility>

namespace kadr::viewer {
namespace {

constexpr std::int64_t kSweepEveryMs = 1000;

}  // namespace

LiveHub::LiveHub(LiveHubOptions options, std::function<std::int64_t()> now_ms)
    : options_(std::move(options)), now_ms_(std::move(now_ms)) {}

std::int64_t LiveHub::NowMs() const {
  if (now_ms_) return now_ms_();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const std::optional<LiveItem>& LiveHub::Slot(const Entry& e, LiveKind kind) {
  return kind == LiveKind::kFrame ? e.frame : e.result;
}

Status LiveHub::Put(LiveKind kind, std::string_view stream_id, std::int64_t sequence,
                    std::string data) {
  if (stream_id.empty()) return InvalidArgumentError("live item without a stream id");
  if (stream_id.size() > options_.max_stream_id_bytes) {
    return InvalidArgumentError("live stream id longer than " +
                                std::to_string(options_.max_stream_id_bytes) + " bytes");
  }
  if (data.empty()) return InvalidArgumentError("empty live item");
  if (data.size() > options_.max_item_bytes) {
    return TooLargeError("live item of " + std::to_string(data.size()) + " bytes exceeds " +
                         std::to_string(options_.max_item_bytes));
  }
  auto shared = std::make_shared<const std::string>(std::move(data));
  const std::int64_t now = NowMs();
  {
    std::lock_guard lock(mu_);
    if (now - last_sweep_ms_ >= kSweepEveryMs) {
      last_sweep_ms_ = now;
      SweepLocked(now);
    }
    auto it = streams_.find(stream_id);
    if (it == streams_.end()) {
      if (streams_.size() >= options_.max_streams && !streams_.empty()) {
        auto oldest = streams_.begin();
        for (auto s = streams_.begin(); s != streams_.end(); ++s) {
          if (s->second.updated_ms < oldest->second.updated_ms) oldest = s;
        }
        streams_.erase(oldest);
      }
      it = streams_.emplace(std::string(stream_id), Entry{}).first;
    }
    Entry& e = it->second;
    e.updated_ms = now;
    LiveItem item{std::move(shared), sequence, ++last_generation_, now};
    (kind == LiveKind::kFrame ? e.frame : e.result) = std::move(item);
  }
  cv_.notify_all();
  return Status::Ok();
}

std::optional<LiveItem> LiveHub::Latest(LiveKind kind, std::string_view stream_id) const {
  std::lock_guard lock(mu_);
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return std::nullopt;
  return Slot(it->second, kind);
}

std::optional<LiveItem> LiveHub::Next(LiveKind kind, std::string_view stream_id,
                                      std::uint64_t after, std::chrono::milliseconds timeout,
                                      const std::stop_token& stop) {
  std::optional<LiveItem> out;
  auto newer = [&] {
    auto it = streams_.find(stream_id);
    if (it == streams_.end()) return false;
    const auto& item = Slot(it->second, kind);
    if (!item || item->generation <= after) return false;
    out = item;
    return true;
  };
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, stop, std::chrono::steady_clock::now() + timeout, newer);
  return out;
}

std::size_t LiveHub::SweepLocked(std::int64_t now) {
  std::size_t forgotten = 0;
  for (auto it = streams_.begin(); it != streams_.end();) {
    if (now - it->second.updated_ms > options_.idle_timeout.count()) {
      it = streams_.erase(it);
      ++forgotten;
    } else {
      ++it;
    }
  }
  return forgotten;
}

std::size_t LiveHub::Sweep() {
  const std::int64_t now = NowMs();
  std::lock_guard lock(mu_);
  last_sweep_ms_ = now;
  return SweepLocked(now);
}

std::size_t LiveHub::stream_count() const {
  std::lock_guard lock(mu_);
  return streams_.size();
}

}  // namespace kadr::viewer
