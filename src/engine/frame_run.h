// FrameRun: the one frame engine (docs/adr/0008-job-model-and-events.md). Every way kadr turns
// frames into answers — a live stream, a video job, an uploaded image, `kadr detect` — is one
// FrameRun over a Source, a Dispatcher and a Sink:
//
//   Source::Read ──► admission ──► Dispatcher::Send ─ ─ ─► OnResult / OnImage (any thread)
//                    (window;      (the bus, or a        │
//                     live: a      model in process)     ▼
//                     one-slot                        correlate the result and its annotated
//                     mailbox)                        image ──► release (in index order or
//                                                     as they come) ──► Sink::Release
//
// Policies (RunOptions):
// - Live (streams): the newest frame wins. A reader thread reads the source at its pace into a
//   one-slot mailbox; a frame replaced there before it was sent is dropped ("backpressure").
//   Each frame carries a deadline (capture + max_latency): workers skip it past then, and a
//   frame still unanswered then is dropped ("deadline"), so a lost answer cannot wedge the
//   window.
// - Lossless (video jobs, uploads, lossless streams, `kadr detect`): every frame is sent; the
//   source is read only when the window has room. Frames carry no deadline. A frame unanswered
//   answer_timeout after it was sent is dropped ("deadline"), or fails the run
//   (fail_on_timeout).
// - A frame that cannot be sent (the broker refused or lost it, or deleted it before a worker
//   read it: OnDeletedUnread) is sent again, up to
//   send_attempts in all, with the same frame id (a worker's answer to either counts once);
//   then it is dropped ("error"), or fails the run (fail_on_send_error).
// - ordered: frames leave in index order (a video); otherwise as soon as they are answered.
// - want_image: after an ok result that says its annotated image went to image_topic, the
//   frame waits for that image (workers publish it first, so it is normally there) until the
//   frame times out; then it leaves without it.
//
// Frame ids: "<run id>:<index>" (index from 0), used as frame id and correlation id, so that a
// Router (engine/bus_dispatch.h) finds the run of any answer; a one-frame run with bare_id
// uses the run id itself.
//
// Threading: Run() blocks its caller. It reads the source on a reader thread of its own in live
// mode and for a lossless source that Waits(), otherwise on its own thread; the Sink is called
// on Run()'s thread only; OnResult, OnImage,
// OnSendFailed and stats() may be called from any thread, also from inside Dispatcher::Send,
// before and after Run (answers for frames not in flight are ignored).
// Ownership: the dispatcher and sink are borrowed and must outlive Run().
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
#include <vector>

#include <opencv2/core/mat.hpp>

#include "bus/bus.h"
#include "common/status.h"
#include "protocol/frame.h"

namespace kadr::engine {

enum class Mode { kLive, kLossless };

enum class DropReason { kBackpressure, kDeadline, kError };
// "backpressure", "deadline", "error".
std::string_view DropReasonName(DropReason reason);

// One frame from a source: pixels, or bytes already in the wire format.
struct SourceFrame {
  cv::Mat image;                      // 8-bit BGR; empty when `encoded` holds the frame
  std::vector<std::uint8_t> encoded;  // an image in the wire format (JPEG), sent as it is
  std::int64_t capture_ms = 0;        // Unix ms; 0: the run stamps the time it read the frame
  // When an answer stops being useful (Unix ms), sent with the frame so workers skip it
  // after; unset: the run's (live: capture + max_latency; lossless: none).
  std::optional<std::int64_t> deadline_ms;
};

class Source {
 public:
  virtual ~Source() = default;
  // The next frame, or nullopt at the end. May block (a camera: until its next frame) and
  // should return soon after `stop` is requested. An error ends the run with that error.
  virtual Result<std::optional<SourceFrame>> Read(const std::stop_token& stop) = 0;
  // Whether Read may wait for the world (a camera, a network stream) rather than only work
  // (decoding a file, frames in memory). A lossless run reads a waiting source on a reader
  // thread, so that answers keep being released meanwhile; others on its own thread.
  virtual bool Waits() const { return true; }
};

// A Source of frames given up front (an uploaded image, a test's frames).
class FramesSource final : public Source {
 public:
  explicit FramesSource(std::vector<SourceFrame> frames) : frames_(std::move(frames)) {}
  Result<std::optional<SourceFrame>> Read(const std::stop_token& stop) override;
  bool Waits() const override { return false; }

 private:
  std::vector<SourceFrame> frames_;
  std::size_t next_ = 0;
};

// One frame on its way to the dispatcher.
struct Outgoing {
  std::int64_t index = 0;                   // position in the run, from 0
  std::string id;                           // frame id = correlation id
  std::int64_t capture_ms = 0;              // Unix ms
  std::optional<std::int64_t> deadline_ms;  // the frame's, else live: capture + max_latency
  const SourceFrame* frame = nullptr;       // valid during Send only
  // Until when Send may wait for room on the broker: lossless frames until their deadline or
  // answer_timeout from now (on the run's clock, RunOptions::now_ms); unset (live): not at
  // all. `stop` ends the wait.
  std::optional<std::chrono::steady_clock::time_point> wait_until;
  std::stop_token stop;
};

class FrameRun;

// Where frames go to be answered: the bus (engine::BusDispatcher) or a model in this process
// (worker::LocalDispatcher). Thread-safe.
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // Sends one frame of `run`. Its answer comes back through run.OnResult / OnImage, from any
  // thread, possibly before Send returns; a failure reported after Send returned OK goes to
  // run.OnSendFailed. An error means the frame was not sent (kTooLarge, kUnavailable, ...).
  virtual Status Send(const Outgoing& frame, FrameRun& run) = 0;
};

// One frame leaving the run: answered, or dropped.
struct Released {
  std::int64_t index = 0;
  std::string id;
  std::int64_t capture_ms = 0;
  std::int64_t answered_ms = 0;                 // when its result came, Unix ms (0: dropped)
  std::optional<protocol::FrameResult> result;  // set when answered (any status)
  std::vector<std::uint8_t> image;              // the annotated JPEG, when it came
  cv::Mat annotated;                            // annotated pixels (a dispatcher in process)
  std::optional<DropReason> dropped;            // set when never answered
  Status error;                                 // a kError drop: why the send failed
  // The source frame (RunOptions::keep_frames), the sink's now: nothing else holds it.
  std::shared_ptr<SourceFrame> frame;
};

class Sink {
 public:
  virtual ~Sink() = default;
  // Takes one frame leaving the run, on Run()'s thread. An error fails the run.
  virtual Status Release(Released frame) = 0;
};

struct RunOptions {
  // The run's id: the frame id prefix. 1..200 characters from [A-Za-z0-9._-]; unique among
  // the runs of one Router.
  std::string id;
  Mode mode = Mode::kLossless;
  // Frames sent and not yet released, at most (>= 1). In order mode answered frames waiting
  // for an earlier one count too.
  std::size_t window = 16;
  // Live: each frame's deadline after its capture.
  std::chrono::milliseconds max_latency{2000};
  // Lossless: how long after its send a frame may wait for its answer.
  std::chrono::milliseconds answer_timeout{60000};
  bool fail_on_timeout = false;
  // Sends of a frame whose delivery fails with a retriable error (kUnavailable,
  // kResourceExhausted), in all; >= 1.
  int send_attempts = 1;
  bool fail_on_send_error = false;
  bool ordered = false;
  bool want_image = false;
  std::string image_topic;  // where the annotated images this run waits for arrive
  bool keep_frames = false;
  bool bare_id = false;  // frame id = run id (a one-frame run)
  // Unix ms; the system clock when unset.
  std::function<std::int64_t()> now_ms;
};

struct RunStats {
  std::uint64_t read = 0;      // frames taken from the source
  std::uint64_t sent = 0;      // handed to the dispatcher without an error
  std::uint64_t resent = 0;    // sent again after a failed delivery
  std::uint64_t answered = 0;  // results received (any status)
  std::uint64_t dropped_backpressure = 0;
  std::uint64_t dropped_deadline = 0;
  std::uint64_t dropped_error = 0;
  std::size_t in_flight = 0;  // sent, not yet released
};

// kInvalidArgument naming the bad field.
Status ValidateRunOptions(const RunOptions& options);

// "<run id>:<index>", the id of a frame of a run (what Outgoing::id holds).
std::string FrameIdOf(std::string_view run_id, std::int64_t index);
// The run id a frame id names: the part before its last ':' (the whole id when it has none).
std::string_view RunIdOf(std::string_view frame_id);

class FrameRun {
 public:
  // `options` must pass ValidateRunOptions (checked by Run).
  FrameRun(RunOptions options, Dispatcher& dispatcher, Sink& sink);
  ~FrameRun();
  FrameRun(const FrameRun&) = delete;
  FrameRun& operator=(const FrameRun&) = delete;

  // Reads, sends and releases until the source has ended and every frame sent has been
  // released (OK), `stop` is requested (kCancelled "stopped"; frames in flight are not
  // released), or the run fails: the source's or the sink's error, kDeadlineExceeded for a
  // frame unanswered in time (fail_on_timeout), the send error (fail_on_send_error), or
  // ValidateRunOptions's error. Once per object.
  Status Run(Source& source, const std::stop_token& stop);

  // An answer to one of this run's frames, named by result.correlation_id (else frame_id).
  // Answers to frames not in flight (late, duplicated, another run's) are ignored.
  void OnResult(protocol::FrameResult result, std::int64_t received_ms);
  // The annotated image of frame `frame_id` (JPEG bytes, or pixels from a dispatcher in
  // process).
  void OnImage(std::string_view frame_id, std::vector<std::uint8_t> jpeg);
  void OnImage(std::string_view frame_id, cv::Mat pixels);
  // A frame whose delivery failed after Send returned OK.
  void OnSendFailed(std::string_view frame_id, const Status& error);
  // Keeps `hold` (a dispatcher's admission ticket) with frame `frame_id` until its answer
  // comes, its delivery fails or it leaves the run; dropped at once when none of that can
  // happen any more (the frame is answered already or not in flight).
  void Hold(std::string_view frame_id, std::shared_ptr<const void> hold);
  // Where the broker stored frame `frame_id` (for OnDeletedUnread).
  void OnStored(std::string_view frame_id, const bus::AckToken& stored_at);
  // Messages the broker deleted before a worker read them (a worker's announcement): every
  // frame of this run stored there and not answered yet failed its delivery (OnSendFailed
  // with kUnavailable naming the partition and offsets), so it is sent again while it has
  // attempts left. Returns how many frames it hit.
  std::size_t OnDeletedUnread(const bus::Loss& loss);
  // A transport's delivery callback for frame `frame_id`: where it was stored goes to
  // OnStored, an error to OnSendFailed. It may be called from any thread, also after this
  // run is destroyed (it then does nothing).
  bus::DeliveryCallback DeliveryCallback(std::string frame_id);

  const std::string& id() const { return options_.id; }
  const RunOptions& options() const { return options_; }
  RunStats stats() const;

 private:
  struct Slot {
    std::string id;
    std::int64_t capture_ms = 0;
    std::int64_t expires_ms = 0;  // live: the deadline; lossless: send + answer_timeout
    std::shared_ptr<SourceFrame> frame;
    std::optional<protocol::FrameResult> result;
    std::int64_t answered_ms = 0;
    std::vector<std::uint8_t> image;
    cv::Mat annotated;
    bool waiting_for_image = false;
    std::optional<DropReason> dropped;
    Status error;
    bool sent = false;                        // Send returned; until then expiry waits
    std::optional<std::int64_t> deadline_ms;  // sent with the frame
    std::shared_ptr<SourceFrame> retained;    // for a resend (send_attempts > 1)
    int attempts = 0;                         // sends so far
    bool resend = false;                      // a delivery failed: send it again
    std::shared_ptr<const void> hold;         // room on the broker, until the answer
    std::optional<bus::AckToken> stored_at;   // where the broker has the frame (last send)
  };

  std::optional<std::int64_t> IndexOf(std::string_view frame_id) const;
  bool ReadyLocked(const Slot& slot) const;
  // Expires what is due; returns the failure when a policy turns a timeout into one.
  std::optional<Status> ExpireLocked(std::int64_t now);
  // Sends `frame` as the next index; `lock` is released while the dispatcher runs.
  std::optional<Status> SendLocked(std::unique_lock<std::mutex>& lock,
                                   std::shared_ptr<SourceFrame> frame);
  // Sends the frame of slot `index` (again); `lock` is released while the dispatcher runs.
  std::optional<Status> DispatchLocked(std::unique_lock<std::mutex>& lock, std::int64_t index,
                                       const SourceFrame& frame);
  // Sends again every frame whose delivery failed with attempts left.
  std::optional<Status> ResendLocked(std::unique_lock<std::mutex>& lock);
  // Releases every frame that may leave now; `lock` is released around the sink.
  std::optional<Status> ReleaseReadyLocked(std::unique_lock<std::mutex>& lock);
  void ReaderLoop(Source& source, bool live, const std::stop_token& stop);
  void CountDropLocked(DropReason reason);
  std::int64_t NowMs() const;

  // What a delivery callback holds: the run, until it is destroyed.
  struct Guard {
    std::mutex mu;
    FrameRun* run = nullptr;
  };

  const RunOptions options_;
  Dispatcher& dispatcher_;
  Sink& sink_;
  const std::shared_ptr<Guard> guard_ = std::make_shared<Guard>();

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::int64_t, Slot> slots_;  // sent and not yet released, by index
  std::vector<Released> drops_;         // live: backpressure drops for the run's thread
  std::size_t releasing_ = 0;           // frames out of slots_, in the sink's hands
  std::int64_t next_index_ = 0;
  std::int64_t next_release_ = 0;  // ordered: the index that leaves next
  RunStats stats_;
  // Live mode: the reader's mailbox and state.
  std::optional<SourceFrame> mailbox_;
  bool source_done_ = false;
  std::optional<Status> source_error_;
  std::optional<Status> send_failure_;  // fail_on_send_error: a delivery that failed
  bool started_ = false;
  std::stop_token stop_;  // Run's, for the dispatcher's waits
};

}  // namespace kadr::engine
