// The frame engine on the bus (docs/protocol.md): BusDispatcher sends a run's frames to
// kadr.frames.<model> with the frame headers of the contract; Router hands each answer that
// comes back on a reply topic to the run whose frame it answers.
//
//   FrameRun ── BusDispatcher::Send ──► kadr.frames.<model> ──► worker
//   FrameRun ◄── Router::Route ◄── reply topic (result JSON, annotated JPEG) ◄──┘
//
// Thread-safety: both are thread-safe. Ownership: the publisher is borrowed and must outlive
// the dispatcher; a Router holds plain pointers to runs between Add and Remove.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "bus/bus.h"
#include "common/status.h"
#include "engine/frame_run.h"
#include "protocol/result.h"

namespace kadr::engine {

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
  // Told of every frame the broker took (after the run's own delivery handling), from a
  // transport thread; must be quick. Optional.
  std::function<void(const std::string& frame_id)> on_delivered;
};

class BusDispatcher final : public Dispatcher {
 public:
  BusDispatcher(BusDispatchOptions options, bus::FramePublisher& publisher);

  // Encodes pixels as an RGB JPEG (the wire format, docs/adr/0002) or takes the frame's
  // encoded bytes as they are, and publishes it with its headers; a later delivery failure
  // goes to run.OnSendFailed. Errors: the publisher's (kTooLarge, kResourceExhausted,
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

  std::size_t size() const;

 private:
  FrameRun* FindLocked(std::string_view frame_id) const;

  mutable std::mutex mu_;
  std::map<std::string, FrameRun*, std::less<>> runs_;
};

}  // namespace kadr::engine
