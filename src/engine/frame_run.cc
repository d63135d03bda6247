#include "engine/frame_run.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <thread>
#include <utility>

#include "common/clock.h"

namespace kadr::engine {
namespace {

constexpr std::size_t kMaxRunIdLength = 200;
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();
// The longest single wait of Run's loop: it re-checks stop and expiry at least this often.
constexpr std::int64_t kMaxWaitMs = 1000;

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

std::string_view DropReasonName(DropReason reason) {
  switch (reason) {
    case DropReason::kBackpressure:
      return "backpressure";
    case DropReason::kDeadline:
      return "deadline";
    case DropReason::kError:
      return "error";
  }
  return "error";
}

Result<std::optional<SourceFrame>> FramesSource::Read(const std::stop_token&) {
  if (next_ >= frames_.size()) return std::optional<SourceFrame>();
  return std::optional<SourceFrame>(std::move(frames_[next_++]));
}

Status ValidateRunOptions(const RunOptions& o) {
  if (o.id.empty() || o.id.size() > kMaxRunIdLength ||
      !std::all_of(o.id.begin(), o.id.end(), IsIdChar)) {
    return InvalidArgumentError("run id must be 1.." + std::to_string(kMaxRunIdLength) +
                                " characters from [A-Za-z0-9._-]: '" + o.id + "'");
  }
  if (o.window == 0) return InvalidArgumentError("run window must be at least 1");
  if (o.max_latency.count() <= 0) return InvalidArgumentError("run max_latency must be positive");
  if (o.answer_timeout.count() <= 0) {
    return InvalidArgumentError("run answer_timeout must be positive");
  }
  if (o.send_attempts < 1) return InvalidArgumentError("run send_attempts must be at least 1");
  if (o.want_image && o.image_topic.empty()) {
    return InvalidArgumentError("run want_image needs an image_topic");
  }
  return Status::Ok();
}

std::string FrameIdOf(std::string_view run_id, std::int64_t index) {
  std::string id(run_id);
  id += ':';
  id += std::to_string(index);
  return id;
}

std::string_view RunIdOf(std::string_view frame_id) {
  const std::size_t colon = frame_id.rfind(':');
  return colon == std::string_view::npos ? frame_id : frame_id.substr(0, colon);
}

FrameRun::FrameRun(RunOptions options, Dispatcher& dispatcher, Sink& sink)
    : options_(std::move(options)), dispatcher_(dispatcher), sink_(sink) {
  guard_->run = this;
}

FrameRun::~FrameRun() {
  std::lock_guard lock(guard_->mu);
  guard_->run = nullptr;
}

std::int64_t FrameRun::NowMs() const { return options_.now_ms ? options_.now_ms() : UnixMillis(); }

std::optional<std::int64_t> FrameRun::IndexOf(std::string_view frame_id) const {
  if (options_.bare_id) {
    return frame_id == options_.id ? std::optional<std::int64_t>(0) : std::nullopt;
  }
  const std::size_t colon = frame_id.rfind(':');
  if (colon == std::string_view::npos || frame_id.substr(0, colon) != options_.id) {
    return std::nullopt;
  }
  const std::string_view digits = frame_id.substr(colon + 1);
  std::int64_t index = -1;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || index < 0) return std::nullopt;
  // Only the spelling FrameIdOf gives ("r:01" or "r:-0" name no frame).
  if (std::to_string(index) != digits) return std::nullopt;
  return index;
}

bool FrameRun::ReadyLocked(const Slot& slot) const {
  return slot.dropped.has_value() || (slot.result.has_value() && !slot.waiting_for_image);
}

void FrameRun::CountDropLocked(DropReason reason) {
  switch (reason) {
    case DropReason::kBackpressure:
      ++stats_.dropped_backpressure;
      break;
    case DropReason::kDeadline:
      ++stats_.dropped_deadline;
      break;
    case DropReason::kError:
      ++stats_.dropped_error;
      break;
  }
}

RunStats FrameRun::stats() const {
  std::lock_guard lock(mu_);
  RunStats s = stats_;
  s.in_flight = slots_.size();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Answers

void FrameRun::OnResult(protocol::FrameResult result, std::int64_t received_ms) {
  const std::string& named =
      result.correlation_id.empty() ? result.frame_id : result.correlation_id;
  const auto index = IndexOf(named);
  if (!index) return;
  std::shared_ptr<const void> hold;  // released after the lock
  std::lock_guard lock(mu_);
  const auto it = slots_.find(*index);
  if (it == slots_.end() || it->second.result || it->second.dropped) return;
  Slot& slot = it->second;
  ++stats_.answered;
  slot.answered_ms = received_ms;
  slot.waiting_for_image = options_.want_image && result.status == protocol::FrameStatus::kOk &&
                           slot.image.empty() && slot.annotated.empty() &&
                           !result.annotated_topic.empty() &&
                           result.annotated_topic == options_.image_topic;
  slot.result = std::move(result);
  // The worker has read the frame: its room on the broker is free.
  hold = std::move(slot.hold);
  changed_.notify_all();
}

void FrameRun::OnImage(std::string_view frame_id, std::vector<std::uint8_t> jpeg) {
  if (!options_.want_image) return;
  const auto index = IndexOf(frame_id);
  if (!index) return;
  std::lock_guard lock(mu_);
  const auto it = slots_.find(*index);
  if (it == slots_.end() || it->second.dropped || !it->second.image.empty()) return;
  if (it->second.result && !it->second.waiting_for_image) return;  // left without it
  it->second.image = std::move(jpeg);
  it->second.waiting_for_image = false;
  changed_.notify_all();
}

void FrameRun::OnImage(std::string_view frame_id, cv::Mat pixels) {
  if (!options_.want_image) return;
  const auto index = IndexOf(frame_id);
  if (!index) return;
  std::lock_guard lock(mu_);
  const auto it = slots_.find(*index);
  if (it == slots_.end() || it->second.dropped || !it->second.annotated.empty()) return;
  if (it->second.result && !it->second.waiting_for_image) return;
  it->second.annotated = std::move(pixels);
  it->second.waiting_for_image = false;
  changed_.notify_all();
}

void FrameRun::OnSendFailed(std::string_view frame_id, const Status& error) {
  const auto index = IndexOf(frame_id);
  if (!index) return;
  std::shared_ptr<const void> hold;  // released after the lock
  std::lock_guard lock(mu_);
  const auto it = slots_.find(*index);
  if (it == slots_.end() || it->second.result || it->second.dropped) return;
  hold = std::move(it->second.hold);  // the broker does not have the frame
  it->second.stored_at.reset();
  if (it->second.retained && it->second.attempts < options_.send_attempts) {
    // Sent again by the run's thread: a frame the broker lost on a fail-over is not lost.
    it->second.resend = true;
    it->second.sent = false;
  } else if (options_.fail_on_send_error) {
    if (!send_failure_) send_failure_ = error;
  } else {
    it->second.dropped = DropReason::kError;
    it->second.error = error;
    CountDropLocked(DropReason::kError);
  }
  changed_.notify_all();
}

void FrameRun::Hold(std::string_view frame_id, std::shared_ptr<const void> hold) {
  const auto index = IndexOf(frame_id);
  if (!index) return;
  std::lock_guard lock(mu_);
  const auto it = slots_.find(*index);
  // Otherwise `hold` goes when the function returns, after the lock.
  if (it == slots_.end() || it->second.result || it->second.dropped) return;
  it->second.hold = std::move(hold);
}

bus::DeliveryCallback FrameRun::DeliveryCallback(std::string frame_id) {
  return [guard = guard_, frame_id = std::move(frame_id)](const Status& status,
                                                          const bus::AckToken& stored_at) {
    std::lock_guard lock(guard->mu);
    if (guard->run == nullptr) return;
    if (status.ok()) {
      guard->run->OnStored(frame_id, stored_at);
    } else {
      guard->run->OnSendFailed(frame_id, status);
    }
  };
}

void FrameRun::OnStored(std::string_view frame_id, const bus::AckToken& stored_at) {
  const auto index = IndexOf(frame_id);
  if (!index || stored_at.offset < 0) return;
  std::lock_guard lock(mu_);
  const auto it = slots_.find(*index);
  if (it == slots_.end() || it->second.result || it->second.dropped) return;
  it->second.stored_at = stored_at;
}

std::size_t FrameRun::OnDeletedUnread(const bus::Loss& loss) {
  std::vector<std::string> deleted;
  {
    std::lock_guard lock(mu_);
    for (auto& [index, slot] : slots_) {
      if (slot.result || slot.dropped || !slot.stored_at || !bus::Covers(loss, *slot.stored_at)) {
        continue;
      }
      slot.stored_at.reset();  // a resend is stored elsewhere; the same report may come again
      deleted.push_back(slot.id);
    }
  }
  const Status error = UnavailableError(
      "the broker deleted the frame before a worker read it (" + loss.topic + " partition " +
      std::to_string(loss.partition) + ", offsets " + std::to_string(loss.from) + ".." +
      std::to_string(loss.to - 1) +
      "): the partition held more unread frames than the broker keeps; retry later");
  for (const auto& id : deleted) OnSendFailed(id, error);
  return deleted.size();
}

// ---------------------------------------------------------------------------------------------
// The run's loop

std::optional<Status> FrameRun::ExpireLocked(std::int64_t now) {
  if (send_failure_) return *send_failure_;
  for (auto& [index, slot] : slots_) {
    if (!slot.sent || slot.dropped || (slot.result && !slot.waiting_for_image)) continue;
    if (slot.expires_ms > now) continue;
    if (slot.result) {  // only the annotated image is missing: the frame leaves without it
      slot.waiting_for_image = false;
      continue;
    }
    if (options_.mode == Mode::kLossless && options_.fail_on_timeout) {
      return DeadlineExceededError("no result for frame " + std::to_string(index) + " within " +
                                   std::to_string(options_.answer_timeout.count()) + " ms");
    }
    slot.dropped = DropReason::kDeadline;
    CountDropLocked(DropReason::kDeadline);
  }
  return std::nullopt;
}

std::optional<Status> FrameRun::SendLocked(std::unique_lock<std::mutex>& lock,
                                           std::shared_ptr<SourceFrame> frame) {
  const std::int64_t index = next_index_++;
  Slot slot;
  slot.id = options_.bare_id ? options_.id : FrameIdOf(options_.id, index);
  slot.capture_ms = frame->capture_ms;
  const bool live = options_.mode == Mode::kLive;
  slot.expires_ms = live ? frame->capture_ms + options_.max_latency.count() : kNever;
  slot.deadline_ms = frame->deadline_ms;
  if (live && !slot.deadline_ms) slot.deadline_ms = slot.expires_ms;
  if (options_.keep_frames) slot.frame = frame;
  if (options_.send_attempts > 1) slot.retained = frame;
  slots_.emplace(index, std::move(slot));
  return DispatchLocked(lock, index, *frame);
}

std::optional<Status> FrameRun::DispatchLocked(std::unique_lock<std::mutex>& lock,
                                               std::int64_t index, const SourceFrame& frame) {
  auto it = slots_.find(index);
  Slot& slot = it->second;
  ++slot.attempts;
  slot.resend = false;
  Outgoing out;
  out.index = index;
  out.id = slot.id;
  out.capture_ms = slot.capture_ms;
  out.deadline_ms = slot.deadline_ms;
  out.frame = &frame;
  out.stop = stop_;
  if (options_.mode == Mode::kLossless) {
    const std::int64_t now = NowMs();
    const std::int64_t timeout = now + options_.answer_timeout.count();
    const std::int64_t until = slot.deadline_ms ? std::min(*slot.deadline_ms, timeout) : timeout;
    out.wait_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(until - now);
  }

  lock.unlock();
  const Status sent = dispatcher_.Send(out, *this);
  lock.lock();

  it = slots_.find(index);  // still there: only this thread removes slots
  if (!sent.ok()) {
    if (it == slots_.end() || it->second.result || it->second.dropped) return std::nullopt;
    it->second.hold.reset();  // not on the broker: its room goes back (a resend takes it anew)
    if (options_.mode == Mode::kLive && sent.code() == StatusCode::kResourceExhausted) {
      it->second.dropped = DropReason::kBackpressure;  // no room on the broker now
      CountDropLocked(DropReason::kBackpressure);
      return std::nullopt;
    }
    const bool retriable =
        sent.code() == StatusCode::kUnavailable || sent.code() == StatusCode::kResourceExhausted;
    if (retriable && it->second.attempts < options_.send_attempts) {
      it->second.resend = true;
      return std::nullopt;
    }
    if (options_.fail_on_send_error) {
      slots_.erase(it);
      return sent;
    }
    it->second.dropped = DropReason::kError;
    it->second.error = sent;
    CountDropLocked(DropReason::kError);
    return std::nullopt;
  }
  ++stats_.sent;
  if (it != slots_.end() && !it->second.resend) {
    it->second.sent = true;
    if (options_.mode == Mode::kLossless) {
      it->second.expires_ms = NowMs() + options_.answer_timeout.count();
    }
  }
  return std::nullopt;
}

std::optional<Status> FrameRun::ResendLocked(std::unique_lock<std::mutex>& lock) {
  std::vector<std::int64_t> due;
  for (const auto& [index, slot] : slots_) {
    if (slot.resend && slot.retained && !slot.result && !slot.dropped) due.push_back(index);
  }
  for (const std::int64_t index : due) {
    const auto it = slots_.find(index);  // only this thread removes slots
    if (it == slots_.end()) continue;
    const std::shared_ptr<SourceFrame> frame = it->second.retained;
    ++stats_.resent;
    if (auto failure = DispatchLocked(lock, index, *frame)) return failure;
  }
  return std::nullopt;
}

std::optional<Status> FrameRun::ReleaseReadyLocked(std::unique_lock<std::mutex>& lock) {
  while (!drops_.empty()) {
    Released r = std::move(drops_.front());
    drops_.erase(drops_.begin());
    lock.unlock();
    Status s = sink_.Release(std::move(r));
    lock.lock();
    if (!s.ok()) return s;
  }
  for (auto it = slots_.begin(); it != slots_.end();) {
    if (!ReadyLocked(it->second)) {
      if (options_.ordered) break;
      ++it;
      continue;
    }
    Slot& slot = it->second;
    Released r;
    r.index = it->first;
    r.id = std::move(slot.id);
    r.capture_ms = slot.capture_ms;
    r.answered_ms = slot.answered_ms;
    r.result = std::move(slot.result);
    r.image = std::move(slot.image);
    r.annotated = std::move(slot.annotated);
    r.dropped = slot.dropped;
    r.error = std::move(slot.error);
    r.frame = std::move(slot.frame);
    slots_.erase(it);
    ++releasing_;
    lock.unlock();
    Status s = sink_.Release(std::move(r));
    lock.lock();
    --releasing_;
    changed_.notify_all();  // a lossless reader may read again
    if (!s.ok()) return s;
    it = slots_.begin();  // the table may have changed while unlocked
  }
  return std::nullopt;
}

void FrameRun::ReaderLoop(Source& source, bool live, const std::stop_token& stop) {
  while (!stop.stop_requested()) {
    if (!live) {
      // Lossless: read only when the frame can be sent at once, so nothing waits unsent.
      std::unique_lock lock(mu_);
      changed_.wait(lock, [&] {
        return stop.stop_requested() || (!mailbox_ && slots_.size() + releasing_ < options_.window);
      });
      if (stop.stop_requested()) break;
    }
    auto read = source.Read(stop);
    std::lock_guard lock(mu_);
    if (!read) {
      if (!stop.stop_requested()) source_error_ = read.error();
      source_done_ = true;
      changed_.notify_all();
      return;
    }
    if (!*read) {
      source_done_ = true;
      changed_.notify_all();
      return;
    }
    SourceFrame frame = std::move(**read);
    if (frame.capture_ms == 0) frame.capture_ms = NowMs();
    ++stats_.read;
    if (mailbox_) {
      Released dropped;
      dropped.index = -1;
      dropped.capture_ms = mailbox_->capture_ms;
      dropped.dropped = DropReason::kBackpressure;
      drops_.push_back(std::move(dropped));
      CountDropLocked(DropReason::kBackpressure);
    }
    mailbox_ = std::move(frame);
    changed_.notify_all();
  }
  std::lock_guard lock(mu_);
  source_done_ = true;
  changed_.notify_all();
}

Status FrameRun::Run(Source& source, const std::stop_token& stop) {
  RETURN_IF_ERROR(ValidateRunOptions(options_));
  {
    std::lock_guard lock(mu_);
    if (started_) return FailedPreconditionError("run " + options_.id + " already ran");
    started_ = true;
    stop_ = stop;
  }
  const bool live = options_.mode == Mode::kLive;
  const bool threaded = live || source.Waits();
  std::stop_source reader_stop;
  std::jthread reader;
  if (threaded) {
    reader = std::jthread([this, &source, live, token = reader_stop.get_token()] {
      ReaderLoop(source, live, token);
    });
  }
  // Wakes the loop (and stops the reader) as soon as the caller asks to stop.
  std::stop_callback on_stop(stop, [this, &reader_stop] {
    reader_stop.request_stop();
    std::lock_guard lock(mu_);
    changed_.notify_all();
  });

  Status outcome;
  std::unique_lock lock(mu_);
  while (true) {
    if (auto failure = ExpireLocked(NowMs())) {
      outcome = *failure;
      break;
    }
    if (auto failure = ReleaseReadyLocked(lock)) {
      outcome = *failure;
      break;
    }
    if (stop.stop_requested()) {
      outcome = CancelledError("stopped");
      break;
    }
    if (source_error_) {
      outcome = *source_error_;
      break;
    }
    if (auto failure = ResendLocked(lock)) {
      outcome = *failure;
      break;
    }
    if (slots_.size() < options_.window) {
      if (threaded && mailbox_) {
        auto frame = std::make_shared<SourceFrame>(std::move(*mailbox_));
        mailbox_.reset();
        changed_.notify_all();
        if (auto failure = SendLocked(lock, std::move(frame))) {
          outcome = *failure;
          break;
        }
        continue;
      }
      if (!threaded && !source_done_) {
        lock.unlock();
        auto read = source.Read(stop);
        lock.lock();
        if (!read) {
          outcome = stop.stop_requested() ? CancelledError("stopped") : read.error();
          break;
        }
        if (!*read) {
          source_done_ = true;
          continue;
        }
        SourceFrame frame = std::move(**read);
        if (frame.capture_ms == 0) frame.capture_ms = NowMs();
        ++stats_.read;
        if (auto failure = SendLocked(lock, std::make_shared<SourceFrame>(std::move(frame)))) {
          outcome = *failure;
          break;
        }
        continue;
      }
    }
    if (source_done_ && slots_.empty() && !mailbox_ && drops_.empty()) break;  // all done

    // Wait for an answer, the reader, stop, or the next expiry.
    std::int64_t next = kNever;
    for (const auto& [index, slot] : slots_) {
      if (slot.sent && !ReadyLocked(slot)) next = std::min(next, slot.expires_ms);
    }
    const std::int64_t wait_ms =
        next == kNever ? kMaxWaitMs : std::clamp<std::int64_t>(next - NowMs(), 1, kMaxWaitMs);
    changed_.wait_for(lock, std::chrono::milliseconds(wait_ms));
  }
  // The reader ends first (it may be inside one blocking Read); then whatever is still in
  // flight or waiting is abandoned: late answers find no slot.
  reader_stop.request_stop();
  changed_.notify_all();  // under the lock: a reader about to wait sees the stop
  lock.unlock();
  if (reader.joinable()) reader.join();
  lock.lock();
  slots_.clear();
  mailbox_.reset();
  drops_.clear();
  source_done_ = true;
  return outcome;
}

}  // namespace kadr::engine
