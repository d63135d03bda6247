// WorkerService: a model's worker. Consumes frames, runs the model, publishes the result and
// the annotated image, and acknowledges each frame only after everything it caused is
// delivered (at-least-once).
//
// The stages of consecutive frames overlap, as a pipeline of four threads joined by FIFOs:
//
//   poll (Run's thread)   Poll, frame headers, options, deadline; heartbeats; re-publishing
//     -> decode           one frame at a time
//     -> detect           consecutive frames with equal options together, up to the model's
//                         max_batch; the deadline is checked again first
//     -> finish           draw, encode, publish; the frame is acked once all is delivered
//
// so that decoding and encoding of neighbouring frames can use the CPU that the model's
// forward pass leaves idle. Every frame, whatever becomes of it, passes every stage in the order it
// was taken, so results come out in the order the frames were taken (one partition's in
// its offset order). At most WorkerOptions::pipeline_depth frames are between being taken
// and being handed to the publisher; while that many are, the poll thread does not poll
// (back-pressure on the broker, and a bound on memory).
//
// Frames of kind "video" or "live" (kadr-kind) are tracked: the finish stage, which sees the
// frames in the order they were taken, runs the stream's tracker (tracking/tracker.h, keyed by
// kadr-stream-id) on the detections before drawing and publishing, so each detection carries
// its track_id and the annotation shows it. Other frames are never tracked. The kind is echoed
// on the result and the annotated image.
//
// Per frame, exactly one result goes to the frame's reply-to topic: "ok" with detections,
// "skipped" when its deadline had passed before processing, or "error" (the frame also goes
// to the dead-letter topic, with the reason in its headers). A bad frame never stops the
// frames behind it. Publishes that fail after the transport's own retries are retried here.
//
// Written against bus.h, so unit tests use the in-memory bus and production uses Kafka.
// Poll and Close are called only from Run's thread, Ack from the delivery callbacks.
// Run() is called from one thread; stats() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "inference/detector.h"
#include "protocol/frame.h"
#include "tracking/tracker.h"
#include "worker/frame_processor.h"

namespace kadr::worker {

struct WorkerOptions {
  std::size_t max_batch = 8;  // frames taken per poll, and per detector call (micro-batch bound)
  // Frames between being taken from the bus and being handed to the publisher, at most; the
  // worker polls only while fewer are. 0: max(4, 2 * max_batch), so that one batch can be
  // decoded while the previous one is detected. Memory: each such frame holds its encoded
  // bytes and, once decoded, its pixels (width * height * 3 bytes, up to
  // processing.limits.max_pixels * 3), so depth * that bounds the pipeline's images. A depth
  // under max_batch also caps the batches; 1 processes one frame at a time, without overlap.
  std::size_t pipeline_depth = 0;
  // Extra wait for a batch to fill. 0 takes the frames already fetched and waiting, without
  // delaying the first one (measured: 2 ms cost ~10 ms of round trip on the embedded broker).
  std::chrono::milliseconds batch_linger{0};
  std::chrono::milliseconds poll_timeout{100};  // idle poll; also the stop-check interval
  std::string annotated_topic = std::string(protocol::kAnnotatedTopic);
  // Topics a frame may name for its answers (kadr-reply-to, kadr-annotated-to), by prefix;
  // a frame naming another is answered with an error on kadr.results and dead-lettered.
  // Empty: any topic.
  std::vector<std::string> reply_topic_prefixes = {std::string(protocol::kDefaultReplyPrefix)};
  std::string dead_letter_topic = std::string(protocol::kDeadLetterTopic);
  FrameProcessorOptions processing;
  // On stop: bound for the deliveries, once the pipeline's frames are finished.
  std::chrono::milliseconds drain_timeout{10000};
  // Announcements on kadr.workers (protocol/frame.h): one at start, one every interval,
  // one "stopping" at the end. An empty topic turns them off.
  std::string heartbeat_topic = std::string(protocol::kWorkersTopic);
  std::chrono::milliseconds heartbeat_interval{2000};
  std::string worker_id;  // unique per worker; "<host>-<pid>-<model>" when empty
  // Unix ms; system clock when unset. Called from the poll, detect and finish threads.
  std::function<std::int64_t()> now_ms;
  // Tracking of video and live frames: the tracker's thresholds, how long a stream may go
  // without frames before its tracks are forgotten (its ids restart), and how many streams
  // are tracked at once (least recently seen evicted beyond that).
  tracking::TrackerOptions tracking;
  std::int64_t tracking_idle_ms = 60000;
  std::size_t max_tracked_streams = 1024;
  // Told of each range of frames the broker deleted before this worker read them (counted
  // in stats().lost and announced either way), from Run's thread. Optional.
  std::function<void(const bus::Loss&)> on_lost;
};

struct WorkerStats {
  std::uint64_t frames = 0;           // frames taken from the bus
  std::uint64_t processed = 0;        // "ok" results
  std::uint64_t skipped = 0;          // deadline passed
  std::uint64_t failed = 0;           // "error" results, sent to the dead-letter topic
  std::uint64_t acked = 0;            // frames whose outputs were all delivered
  std::uint64_t publish_retries = 0;  // messages re-published after a failed delivery
  std::uint64_t tracked = 0;          // "ok" frames that went through a tracker
  // Frames the broker deleted before this worker read them (bus::FrameSubscriber::TakeLosses;
  // logged as errors; announced in the heartbeat so that their producers learn of it).
  std::uint64_t lost = 0;
  // How long the worker has held frames without finishing any (0 when it holds none): a
  // model or stage that hangs shows here while the poll loop and announcements go on.
  std::int64_t stalled_ms = 0;
};

class WorkerService {
 public:
  // The publisher and subscriber must outlive the service.
  WorkerService(WorkerOptions options, std::shared_ptr<inference::Detector> detector,
                bus::FramePublisher& publisher, bus::FrameSubscriber& subscriber);

  // Serves until `stop` is requested, then stops polling, finishes every frame in the
  // pipeline, waits (bounded by drain_timeout) for their deliveries, announces "stopping",
  // and closes the subscriber, which commits and leaves the group. Returns kDeadlineExceeded
  // when deliveries were still pending. Starts and joins the stage threads itself.
  Status Run(const std::stop_token& stop);

  WorkerStats stats() const;

  // Delivery callbacks that arrive after destruction (a publisher flushed later) are ignored.
  ~WorkerService();

 private:
  struct Pending;
  struct Item;      // one frame on its way through the pipeline
  struct Pipeline;  // the FIFOs between the stages and the bound on frames in them
  // Poll stage: takes the polled frames, answers the ones that cannot be processed, and
  // queues them all in order.
  void Admit(std::vector<bus::InboundMessage>& batch, Pipeline& pipeline);
  void DecodeStage(Pipeline& pipeline);
  void DetectStage(Pipeline& pipeline);
  void FinishStage(Pipeline& pipeline);
  // False when the frame is already answered, or is answered now because its deadline passed.
  bool StillToProcess(Item& item);
  // OK when the frame's answers go to allowed topics; else its error, with the frame's
  // routes reset to kadr.results (and the default annotated topic).
  Status CheckRoutes(protocol::FrameMeta& meta) const;
  void Reject(Item& item, const Status& error);  // an "error" result and a dead-letter copy
  void Skip(Item& item, std::int64_t now);       // a "skipped" result
  // Publishes all of a frame's outputs; the frame is acked once every one is delivered.
  void Answer(const std::shared_ptr<Pending>& pending, std::vector<bus::Message> outputs);
  void Send(const std::shared_ptr<Pending>& pending, bus::Message message);
  // One of a frame's outputs is delivered (or given up); acks the frame after the last.
  void OutputDelivered(const std::shared_ptr<Pending>& pending);
  void RetryFailed();
  void SendHeartbeat(std::string_view state);
  // Takes the subscriber's losses; true when there were any (announced at once).
  bool TakeLosses();
  std::int64_t NowMs() const;

  WorkerOptions options_;
  std::shared_ptr<inference::Detector> detector_;
  bus::FramePublisher& publisher_;
  bus::FrameSubscriber& subscriber_;
  FrameProcessor processor_;
  tracking::TrackerSet trackers_;  // used by the finish stage only

  // Guards against callbacks after destruction; shared with every pending callback.
  struct Lifetime {
    std::mutex mu;
    bool closed = false;
  };
  std::shared_ptr<Lifetime> lifetime_ = std::make_shared<Lifetime>();

  std::mutex retry_mu_;
  std::deque<std::pair<std::shared_ptr<Pending>, bus::Message>> retry_;
  std::atomic<std::int64_t> outstanding_{0};  // frames not yet acked

  std::atomic<std::uint64_t> frames_{0}, processed_{0}, skipped_{0}, failed_{0}, acked_{0},
      publish_retries_{0}, tracked_{0}, lost_{0};
  // Losses of the last protocol::kLossReportMs with when they were found (poll thread only).
  std::deque<std::pair<std::int64_t, bus::Loss>> recent_losses_;
  // Steady-clock ms of the last frame finished, or taken while none was held (stats().stalled_ms).
  std::atomic<std::int64_t> last_progress_ms_{0};
  void Progress();
};

}  // namespace kadr::worker
