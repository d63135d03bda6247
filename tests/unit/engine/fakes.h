// Test doubles for the engine's own interfaces: sources that yield N frames or wait for the
// test, a dispatcher that answers at once, holds frames for the test to answer (from the test's
// thread, i.e. another thread than Run's), or fails sends, a recording sink that can fail, a
// settable clock, and a helper that runs a FrameRun on its own thread with a bounded wait.
//
// Waits are on condition variables where the fakes can notify, and poll state the engine
// exposes without a notification (RunStats, the clock's calls); each is bounded by kWait, which
// only limits a wait that should succeed: a test that passes never waits that long.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/frame_run.h"
#include "protocol/frame.h"

namespace kadr::engine::testing {

// The bound on waits for something that should happen.
inline constexpr std::chrono::milliseconds kWait{2000};
// When Run answered them: what the fake dispatcher passes as received_ms.
inline constexpr std::int64_t kAnsweredMs = 424242;

// A settable Unix-ms clock for RunOptions::now_ms that counts how often the run asks it.
// Thread-safe.
class FakeClock {
 public:
  explicit FakeClock(std::int64_t start = 1'700'000'000'000) : now_(start) {}
  std::int64_t Now() const { return now_.load(); }
  void Advance(std::int64_t ms) { now_ += ms; }
  std::function<std::int64_t()> Fn() {
    return [this] {
      ++calls_;
      return Now();
    };
  }
  // Times the run asked for the time.
  int calls() const { return calls_; }

 private:
  std::atomic<std::int64_t> now_;
  std::atomic<int> calls_{0};
};

// A frame whose encoded bytes name its index, so a test can tell which frame was sent.
inline SourceFrame TestFrame(int index, std::int64_t capture_ms = 0) {
  SourceFrame f;
  f.encoded = {0xFF, 0xD8, static_cast<std::uint8_t>(index), 0xFF, 0xD9};
  f.capture_ms = capture_ms;
  return f;
}

// An ok result for frame `id`, with one detection.
inline protocol::FrameResult OkResult(const std::string& id, std::string annotated_topic = {}) {
  protocol::FrameResult r;
  r.frame_id = id;
  r.correlation_id = id;
  r.status = protocol::FrameStatus::kOk;
  protocol::Detection d;
  d.class_id = 15;
  d.label = "cat";
  d.score = 0.9f;
  d.box = {1, 2, 3, 4};
  r.result.detections.push_back(d);
  r.annotated_topic = std::move(annotated_topic);
  return r;
}

inline protocol::FrameResult ErrorResult(const std::string& id, Status error) {
  protocol::FrameResult r;
  r.frame_id = id;
  r.correlation_id = id;
  r.status = protocol::FrameStatus::kError;
  r.error = std::move(error);
  return r;
}

// Frames sent and not yet released, and the most there ever were. Thread-safe.
class InFlight {
 public:
  void Add() {
    const int now = ++count_;
    int max = max_.load();
    while (now > max && !max_.compare_exchange_weak(max, now)) {
    }
  }
  void Remove() { --count_; }
  int count() const { return count_; }
  int max() const { return max_; }

 private:
  std::atomic<int> count_{0};
  std::atomic<int> max_{0};
};

// Yields `n` frames (TestFrame(i, capture_ms)), then the end. Calls `on_read` at every Read.
class CountingSource final : public Source {
 public:
  explicit CountingSource(int n, std::function<void()> on_read = {})
      : n_(n), on_read_(std::move(on_read)) {}
  // The source ends with `error` after `after` frames instead.
  void FailAfter(int after, Status error) {
    n_ = after;
    error_ = std::move(error);
  }
  void set_capture_ms(std::int64_t ms) { capture_ms_ = ms; }

  Result<std::optional<SourceFrame>> Read(const std::stop_token&) override {
    ++reads_;
    if (on_read_) on_read_();
    if (given_ >= n_) {
      if (error_) return *error_;
      return std::optional<SourceFrame>();
    }
    return std::optional<SourceFrame>(TestFrame(given_++, capture_ms_));
  }
  int reads() const { return reads_; }

 private:
  int n_;
  std::function<void()> on_read_;
  std::optional<Status> error_;
  std::int64_t capture_ms_ = 0;
  std::atomic<int> given_{0};
  std::atomic<int> reads_{0};
};

// A source the test feeds: Read blocks until the test pushes a frame, ends or fails the
// source, or stop is requested (then it ends, or returns the error set by FailOnStop).
// Thread-safe.
class GatedSource final : public Source {
 public:
  void Push(SourceFrame frame) {
    std::lock_guard lock(mu_);
    frames_.push_back(std::move(frame));
    cv_.notify_all();
  }
  void End() {
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
  }
  void Fail(Status error) {
    std::lock_guard lock(mu_);
    error_ = std::move(error);
    cv_.notify_all();
  }
  void FailOnStop(Status error) {
    std::lock_guard lock(mu_);
    stop_error_ = std::move(error);
  }
  // Waits until a Read is blocked waiting for the test.
  bool WaitForBlockedRead() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return blocked_ > 0 && frames_.empty(); });
  }
  int taken() const {
    std::lock_guard lock(mu_);
    return taken_;
  }

  Result<std::optional<SourceFrame>> Read(const std::stop_token& stop) override {
    std::unique_lock lock(mu_);
    ++blocked_;
    cv_.notify_all();
    const bool ready =
        cv_.wait(lock, stop, [&] { return !frames_.empty() || ended_ || error_.has_value(); });
    --blocked_;
    if (!ready) {
      if (stop_error_) return *stop_error_;
      return std::optional<SourceFrame>();
    }
    if (!frames_.empty()) {
      SourceFrame f = std::move(frames_.front());
      frames_.pop_front();
      ++taken_;
      return std::optional<SourceFrame>(std::move(f));
    }
    if (error_) return *error_;
    return std::optional<SourceFrame>();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<SourceFrame> frames_;
  bool ended_ = false;
  std::optional<Status> error_;
  std::optional<Status> stop_error_;
  int blocked_ = 0;
  int taken_ = 0;
};

// What the dispatcher saw of one Send.
struct SentFrame {
  std::int64_t index = 0;
  std::string id;
  std::int64_t capture_ms = 0;
  std::optional<std::int64_t> deadline_ms;
  SourceFrame frame;  // a copy (Outgoing::frame is valid during Send only)
};

// Records every frame sent. kAnswerNow answers inside Send (with `respond` when set, else an
// ok result); kHold keeps the frame for the test to answer later from its own thread.
// FailSend makes the send of one index return an error. Thread-safe.
class FakeDispatcher final : public Dispatcher {
 public:
  enum class Mode { kAnswerNow, kHold };
  explicit FakeDispatcher(Mode mode = Mode::kAnswerNow) : mode_(mode) {}

  // Set before the run starts.
  std::function<void(const Outgoing&, FrameRun&)> respond;
  std::function<void()> on_send;

  void FailSend(std::int64_t index, Status error) {
    std::lock_guard lock(mu_);
    fail_[index] = std::move(error);
  }

  Status Send(const Outgoing& frame, FrameRun& run) override {
    if (on_send) on_send();
    {
      std::lock_guard lock(mu_);
      sent_.push_back({frame.index, frame.id, frame.capture_ms, frame.deadline_ms, *frame.frame});
      cv_.notify_all();
      if (const auto it = fail_.find(frame.index); it != fail_.end()) return it->second;
      if (mode_ == Mode::kHold) {
        pending_.push_back({frame.id, &run});
        return Status::Ok();
      }
    }
    if (respond) {
      respond(frame, run);
    } else {
      run.OnResult(OkResult(frame.id), kAnsweredMs);
    }
    return Status::Ok();
  }

  std::vector<SentFrame> sent() const {
    std::lock_guard lock(mu_);
    return sent_;
  }
  // Ids of the held frames not answered yet, in send order.
  std::vector<std::string> pending() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> ids;
    for (const auto& p : pending_) ids.push_back(p.id);
    return ids;
  }
  bool WaitForSent(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return sent_.size() >= n; });
  }
  bool WaitForPending(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return pending_.size() >= n; });
  }
  // Answers the oldest held frame with an ok result, from the calling thread; its id.
  std::string AnswerNext() {
    Pending p;
    {
      std::lock_guard lock(mu_);
      if (pending_.empty()) return {};
      p = pending_.front();
      pending_.pop_front();
    }
    p.run->OnResult(OkResult(p.id), kAnsweredMs);
    return p.id;
  }
  // Answers held frame `id` with `result`, from the calling thread.
  void Answer(const std::string& id, protocol::FrameResult result) {
    FrameRun* run = nullptr;
    {
      std::lock_guard lock(mu_);
      const auto it = std::find_if(pending_.begin(), pending_.end(),
                                   [&](const Pending& p) { return p.id == id; });
      if (it == pending_.end()) return;
      run = it->run;
      pending_.erase(it);
    }
    run->OnResult(std::move(result), kAnsweredMs);
  }
  void Answer(const std::string& id) { Answer(id, OkResult(id)); }

 private:
  struct Pending {
    std::string id;
    FrameRun* run = nullptr;
  };
  const Mode mode_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SentFrame> sent_;
  std::deque<Pending> pending_;
  std::map<std::int64_t, Status> fail_;
};

// Records every frame released; FailAt makes one call return an error. Thread-safe.
class RecordingSink final : public Sink {
 public:
  // Set before the run starts.
  std::function<void(const Released&)> on_release;

  // The `call`-th Release (from 0) returns `error` (and records nothing).
  void FailAt(int call, Status error) {
    std::lock_guard lock(mu_);
    fail_at_ = call;
    fail_status_ = std::move(error);
  }

  Status Release(Released frame) override {
    if (on_release) on_release(frame);
    std::lock_guard lock(mu_);
    const int call = calls_++;
    cv_.notify_all();
    if (call == fail_at_) return fail_status_;
    frames_.push_back(std::move(frame));
    cv_.notify_all();
    return Status::Ok();
  }

  std::vector<Released> frames() const {
    std::lock_guard lock(mu_);
    return frames_;
  }
  std::size_t count() const {
    std::lock_guard lock(mu_);
    return frames_.size();
  }
  int calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  bool WaitForCount(std::size_t n, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return frames_.size() >= n; });
  }
  std::vector<std::int64_t> indexes() const {
    std::lock_guard lock(mu_);
    std::vector<std::int64_t> out;
    for (const auto& f : frames_) out.push_back(f.index);
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Released> frames_;
  int calls_ = 0;
  int fail_at_ = -1;
  Status fail_status_;
};

// Runs `run` over `source` on a thread of its own; destroying it stops and joins the run, so
// a test that fails never hangs. Declare it after what the run uses.
class AsyncRun {
 public:
  AsyncRun(FrameRun& run, Source& source) {
    future_ = promise_.get_future();
    thread_ = std::jthread(
        [this, &run, &source](std::stop_token stop) { promise_.set_value(run.Run(source, stop)); });
  }
  ~AsyncRun() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
  }
  AsyncRun(const AsyncRun&) = delete;
  AsyncRun& operator=(const AsyncRun&) = delete;

  void Stop() { thread_.request_stop(); }
  // Run's outcome, or nullopt when it has not returned within `timeout`.
  std::optional<Status> Wait(std::chrono::milliseconds timeout = kWait) {
    if (!outcome_) {
      if (future_.wait_for(timeout) != std::future_status::ready) return std::nullopt;
      outcome_ = future_.get();
    }
    return outcome_;
  }

 private:
  std::promise<Status> promise_;
  std::future<Status> future_;
  std::optional<Status> outcome_;
  std::jthread thread_;
};

// Polls `done` every millisecond until it holds (true) or kWait passes (false): for state the
// engine exposes without a notification (RunStats).
inline bool Eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Waits until the run's loop has been round once more since the call (make the call after the
// event the loop should have seen): each round asks the clock when it checks expiry (before it
// releases what is ready) and again when it computes its wait, and holds the run's lock from
// one to the other, so two more calls mean a round that began after the call. The round may
// have come before the call already; the next one then comes at the loop's next wake-up, so
// give the run a short answer_timeout on a clock that stands still (the loop then wakes every
// answer_timeout, and no frame ever expires).
inline bool WaitForLoopPass(const FakeClock& clock) {
  const int seen = clock.calls();
  return Eventually([&] { return clock.calls() >= seen + 2; });
}

}  // namespace kadr::engine::testing
