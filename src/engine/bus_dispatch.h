// The frame engine on the bus (docs/protocol.md): BusDispatcher sends a run's frames to
// kadr.frames.<model> with the frame headers of the contract; Router hands each answer that
// comes back on a reply topic to the run whose frame it answers.
//
//   FrameRun ── BusDispatcher::Send ──► kadr.frames.<model> ──► worker
//   FrameRun ◄── Router::Route ◄── reply topic (result JSON, annotated JPEG) ◄──┘
//
// Admission bounds the bytes of frames on the broker that wait for their answer, per frames
// topic: a broker keeps only so much per partition (the embedded broker 5 MiB, deleting the
// oldest beyond, consumed or not; Apache Kafka its retention), so frames beyond that would be
// lost before a worker reads them (docs/adr/0009-admission-by-bytes.md).
//
// Thread-safety: all three are thread-safe. Ownership: the publisher and the admission are
// borrowed and must outlive the dispatcher; a Router holds plain pointers to runs between Add
// and Remove; an Admission::Ticket keeps what it needs alive by itself.
#pragma once

#include <chrono>
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

#include "bus/bus.h"
#include "common/status.h"
#include "engine/frame_run.h"
#include "protocol/result.h"

namespace kadr::engine {

struct AdmissionOptions {
  // Bytes of frames sent to one frames topic and not yet answered, at most. The embedded
  // broker keeps 5 MiB per partition: kEmbeddedBudgetBytes. On Apache Kafka, size it below
  // the topic's retention.bytes per partition, divided by the processes that produce to it.
  std::size_t budget_bytes = 256u << 20;
  // The largest frame (bytes, headers included) the broker is known to keep; larger ones are
  // kTooLarge (0: the budget). The embedded broker: kEmbeddedMaxFrameBytes.
  std::size_t max_frame_bytes = 0;
  // Frames waiting for room on one topic, all clients together, at most; beyond, Acquire
  // refuses at once (kResourceExhausted: the caller answers 429 with Retry-After).
  std::size_t max_waiting = 256;
};

// Admission control by bytes, shared by every run of a process that publishes frames. A frame
// takes a Ticket for its bytes before it is published and gives it back when its answer
// comes (or it leaves the run, or its delivery failed). A frame that does not fit waits in a
// bounded queue: first in, first out for one client, clients served in turn (round robin), so
// a client with many frames waiting delays another's next frame by one frame at most. The
// frame at the head of the queue waits until it fits: nothing overtakes it.
class Admission {
 public:
  // The embedded broker's 5 MiB per partition less room for the frames' headers, a resend
  // and the oldest consumed message it has not deleted yet.
  static constexpr std::size_t kEmbeddedBudgetBytes = 4u << 20;
  // librdkafka 2.0.2's mock cluster loses a message whose append makes it delete every
  // older one of its partition (it then sets the log start past the new message): two
  // consecutive messages of a partition must stay under 5 MiB together. Measured with kcat:
  // three 2.4 MiB messages keep the last two, two 2.6 MiB ones keep none.
  static constexpr std::size_t kEmbeddedMaxFrameBytes = (5u << 20) / 2 - (64u << 10);

  // Room held for one frame; given back when destroyed.
  class Ticket {
   public:
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    std::size_t bytes() const { return bytes_; }

   private:
    friend class Admission;
    struct State;
    Ticket(std::shared_ptr<State> state, std::string topic, std::size_t bytes);
    std::shared_ptr<State> state_;
    std::string topic_;
    std::size_t bytes_;
  };

  explicit Admission(AdmissionOptions options = {});
  ~Admission();
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Room for `bytes` on `topic`, for `client` (any name: an address, a job, a stream).
  // Waits in the queue until the frame fits and it is its turn, `stop` is requested
  // (kCancelled) or `until` passes (kDeadlineExceeded; unset: no limit). Errors also:
  // kTooLarge for a frame larger than the whole budget or max_frame_bytes,
  // kResourceExhausted when max_waiting frames wait already.
  Result<std::shared_ptr<const Ticket>> Acquire(
      const std::string& topic, std::size_t bytes, const std::string& client,
      const std::stop_token& stop,
      std::optional<std::chrono::steady_clock::time_point> until = std::nullopt);
  // Room now or nothing (nullptr): a live frame is dropped rather than queued. Also nullptr
  // for a frame larger than the budget or max_frame_bytes.
  std::shared_ptr<const Ticket> TryAcquire(const std::string& topic, std::size_t bytes);

  struct Usage {
    std::size_t bytes = 0;    // held by tickets
    std::size_t waiting = 0;  // frames in the queue
  };
  Usage usage(const std::string& topic) const;
  const AdmissionOptions& options() const { return options_; }

 private:
  const AdmissionOptions options_;
  const std::shared_ptr<Ticket::State> state_;
};

// How a run's frames are addressed: what their headers say beyond their identity.
struct BusDispatchOptions {
  std::string model;         // frames go to kadr.frames.<model>
  std::string stream_id;     // message key and kadr-stream-id; empty: the frame's id
  std::string reply_to;      // where results go
  std::string annotated_to;  // where annotated images go
  std::string source;        // for display: a file name, a stream's name
  std::string kind;          // kadr-kind: protocol::kind::k*
  protocol::DetectOptions options;
  bool draw = true;
  int jpeg_quality = 90;  // frames given as pixels are encoded so (1..100)
  // Frames given as pixels larger than this on their long side are scaled down (aspect
  // kept) before they are encoded: the wire carries no more than the models use. Workers
  // answer in the pixels of what they got (FrameResult image size); 0: no limit.
  int max_side = 0;
  // kadr-report-size: frames given encoded that were scaled down from an image of this size
  // ask the worker to answer in its pixels (0: in the frame's).
  int report_width = 0;
  int report_height = 0;
  // Where the frames take their room on the broker (nullptr: no admission control), and
  // whose turn they wait for there (an address, a job, a stream). Lossless frames wait for
  // room until their deadline or the run's answer timeout (Outgoing::wait_until); live
  // frames do not wait: no room is a kResourceExhausted send error, a backpressure drop.
  Admission* admission = nullptr;
  std::string client;
  // Told of every frame the broker took (after the run's own delivery handling), from a
  // transport thread; must be quick. Optional.
  std::function<void(const std::string& frame_id)> on_delivered;
};

class BusDispatcher final : public Dispatcher {
 public:
  BusDispatcher(BusDispatchOptions options, bus::FramePublisher& publisher);

  // Encodes pixels as an RGB JPEG (the wire format, docs/adr/0002) or takes the frame's
  // encoded bytes as they are, takes room for it from the admission (run.Hold keeps the
  // ticket until the answer), and publishes it with its headers; a later delivery failure
  // goes to run.OnSendFailed. Errors: the admission's (kResourceExhausted, kTooLarge,
  // kDeadlineExceeded, kCancelled), the publisher's (kTooLarge, kResourceExhausted,
  // kUnavailable), kInternal (the JPEG encoder).
  Status Send(const Outgoing& frame, FrameRun& run) override;

  const BusDispatchOptions& options() const { return options_; }

 private:
  const BusDispatchOptions options_;
  const std::string topic_;
  bus::FramePublisher& publisher_;
};

// Routes answers on reply topics to the runs added to it, by the run id in their correlation
// id (engine::RunIdOf). Results are told from annotated images by protocol::IsImageMessage.
class Router {
 public:
  // Adds `run` (replacing a run of the same id); it must stay alive until Remove.
  void Add(FrameRun& run);
  void Remove(const FrameRun& run);

  // Delivers one message from a reply topic to its run. Returns true when its run is here
  // (also when the run then ignores it as late or duplicated); false when no run of this
  // router is named, so the caller may handle it otherwise. A result that names a run but
  // does not parse reaches it as an error result ("the worker's result is unreadable").
  bool Route(const bus::InboundMessage& in, std::int64_t received_ms);

  // Messages the broker deleted before a worker read them (from a worker's announcement,
  // protocol::WorkerHeartbeat::losses): tells every run (FrameRun::OnDeletedUnread), so
  // their frames stored there are sent again or fail with an error that says so. Returns
  // how many frames it hit.
  std::size_t OnDeletedUnread(const bus::Loss& loss);

  std::size_t size() const;

 private:
  FrameRun* FindLocked(std::string_view frame_id) const;

  mutable std::mutex mu_;
  std::map<std::string, FrameRun*, std::less<>> runs_;
};

}  // namespace kadr::engine
