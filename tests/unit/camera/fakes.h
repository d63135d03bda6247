// Test doubles for the camera tests: a scripted FrameSource and a fake worker that answers
// the frames the runner publishes on an in-memory bus.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/core.hpp>

#include "bus/fake_bus.h"
#include "camera/stream_runner.h"
#include "capture/frame_source.h"
#include "protocol/frame.h"

namespace kadr::camera::testing {

// What the n-th opened source does.
struct SourceScript {
  Status open = Status::Ok();  // Open()'s result
  int frames = -1;             // frames delivered before `after` happens; -1: for ever
  enum class After { kEnd, kStall, kLost } after = After::kLost;
  std::chrono::milliseconds interval{5};  // between frames (a live camera's pace)
  bool live = true;
  double fps = 0;
};

// Runs scripts in order; the last one repeats. Thread-safe.
class ScriptedSources {
 public:
  explicit ScriptedSources(std::vector<SourceScript> scripts) : scripts_(std::move(scripts)) {}

  SourceFactory Factory() {
    return [this](const StreamSpec&,
                  const capture::SourceOptions&) -> Result<std::unique_ptr<capture::FrameSource>> {
      std::lock_guard lock(mu_);
      const std::size_t i = std::min<std::size_t>(opens_, scripts_.size() - 1);
      ++opens_;
      return std::unique_ptr<capture::FrameSource>(std::make_unique<Source>(scripts_[i]));
    };
  }
  int opens() const {
    std::lock_guard lock(mu_);
    return opens_;
  }

 private:
  class Source final : public capture::FrameSource {
   public:
    explicit Source(SourceScript s) : s_(std::move(s)) {}
    Status Open() override { return s_.open; }
    Result<capture::Frame> Read() override {
      std::this_thread::sleep_for(s_.interval);
      capture::Frame f;
      if (s_.frames < 0 || delivered_ < s_.frames) {
        ++delivered_;
        f.image = cv::Mat(24, 32, CV_8UC3, cv::Scalar::all(delivered_ % 255));
        return f;
      }
      switch (s_.after) {
        case SourceScript::After::kEnd:
          f.end_of_stream = true;
          return f;
        case SourceScript::After::kStall:
          return f;  // no frame, no error: only the stall timeout notices
        case SourceScript::After::kLost:
          return UnavailableError("lost rtsp://***@cam/x: connection closed");
      }
      return f;
    }
    void Close() override {}
    capture::SourceInfo info() const override {
      capture::SourceInfo i;
      i.live = s_.live;
      i.fps = s_.fps;
      i.kind = s_.live ? capture::SourceKind::kRtsp : capture::SourceKind::kFile;
      i.width = 32;
      i.height = 24;
      return i;
    }

   private:
    SourceScript s_;
    int delivered_ = 0;
  };

  mutable std::mutex mu_;
  std::vector<SourceScript> scripts_;
  int opens_ = 0;
};

// Answers the frames on `topic` one at a time, taking `busy` per frame, by calling
// `deliver` with the result (and appending its JSON to kadr.live.results). Records the
// largest number of frames that were published but not yet answered.
class FakeWorker {
 public:
  FakeWorker(bus::FakeBus& bus, std::string topic, std::chrono::milliseconds busy,
             std::function<void(const protocol::FrameResult&)> deliver,
             protocol::FrameStatus status = protocol::FrameStatus::kOk)
      : bus_(bus),
        topic_(std::move(topic)),
        busy_(busy),
        deliver_(std::move(deliver)),
        status_(status) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeWorker() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::size_t answered() const { return answered_; }
  std::size_t max_outstanding() const { return max_outstanding_; }

 private:
  void Loop() {
    while (!stop_) {
      const std::size_t published = bus_.Size(topic_);
      if (published > answered_) {
        max_outstanding_ = std::max<std::size_t>(max_outstanding_, published - answered_);
        const bus::Message m = bus_.Topic(topic_)[answered_];
        std::this_thread::sleep_for(busy_);
        auto meta = protocol::DecodeFrameHeaders(m.headers);
        if (meta) {
          protocol::FrameResult r;
          r.frame_id = meta->frame_id;
          r.stream_id = meta->stream_id;
          r.sequence = meta->sequence;
          r.capture_ms = meta->capture_ms;
          r.correlation_id = meta->correlation_id;
          r.status = status_;
          if (status_ == protocol::FrameStatus::kSkipped) {
            r.error = DeadlineExceededError("past its deadline");
          }
          const std::string json = protocol::FrameResultToJson(r);
          bus_.Append(
              bus::Message{meta->reply_to, meta->stream_id, {json.begin(), json.end()}, {}});
          if (deliver_) deliver_(r);
        }
        ++answered_;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }

  bus::FakeBus& bus_;
  const std::string topic_;
  const std::chrono::milliseconds busy_;
  const std::function<void(const protocol::FrameResult&)> deliver_;
  const protocol::FrameStatus status_;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> answered_{0};
  std::atomic<std::size_t> max_outstanding_{0};
  std::thread thread_;
};

inline bool WaitFor(const std::function<bool()>& done,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace kadr::camera::testing
