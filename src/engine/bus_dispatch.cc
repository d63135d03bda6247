#include "engine/bus_dispatch.h"

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "imaging/decode.h"
#include "imaging/encode.h"
#include "protocol/frame.h"

namespace kadr::engine {
namespace {

namespace header = protocol::header;

}  // namespace

BusDispatcher::BusDispatcher(BusDispatchOptions options, bus::FramePublisher& publisher)
    : options_(std::move(options)),
      topic_(protocol::FramesTopic(options_.model)),
      publisher_(publisher) {}

Status BusDispatcher::Send(const Outgoing& frame, FrameRun& run) {
  std::vector<std::uint8_t> bytes;
  if (!frame.frame->encoded.empty()) {
    bytes = frame.frame->encoded;
  } else {
    imaging::JpegOptions jo;
    jo.quality = options_.jpeg_quality;
    auto jpeg =
        imaging::EncodeJpeg(imaging::FitLongSide(frame.frame->image, options_.max_side), jo);
    if (!jpeg) return jpeg.error().WithContext("encoding frame " + std::to_string(frame.index));
    bytes = std::move(jpeg).value();
  }
  protocol::FrameMeta meta;
  meta.frame_id = frame.id;
  meta.stream_id = options_.stream_id.empty() ? frame.id : options_.stream_id;
  meta.sequence = frame.index;
  meta.capture_ms = frame.capture_ms;
  meta.deadline_ms = frame.deadline_ms;
  meta.model = options_.model;
  meta.reply_to = options_.reply_to;
  meta.annotated_to = options_.annotated_to;
  meta.source = options_.source;
  meta.correlation_id = frame.id;
  meta.options = options_.options;
  meta.draw = options_.draw;
  meta.kind = options_.kind;
  meta.report_width = options_.report_width;
  meta.report_height = options_.report_height;
  bus::Message message{topic_, meta.stream_id, std::move(bytes), {}};
  protocol::EncodeFrameHeaders(meta, message.headers);
  if (options_.admission != nullptr) {
    std::size_t size = message.value.size() + message.key.size();
    for (const auto& [name, value] : message.headers.items()) size += name.size() + value.size();
    std::shared_ptr<const Admission::Ticket> ticket;
    if (frame.wait_until) {
      auto acquired =
          options_.admission->Acquire(topic_, size, options_.client, frame.stop, frame.wait_until);
      if (!acquired) return acquired.error();
      ticket = std::move(acquired).value();
    } else {
      ticket = options_.admission->TryAcquire(topic_, size);
      if (!ticket) {
        return ResourceExhaustedError("no room on " + topic_ + " for the frame now");
      }
    }
    run.Hold(frame.id, std::move(ticket));
  }
  auto on_delivery = run.DeliveryCallback(frame.id);
  if (options_.on_delivered) {
    on_delivery = [run_callback = std::move(on_delivery), delivered = options_.on_delivered,
                   id = frame.id](const Status& s, const bus::AckToken& stored_at) {
      run_callback(s, stored_at);
      if (s.ok()) delivered(id);
    };
  }
  return publisher_.Publish(std::move(message), std::move(on_delivery));
}

void Router::Add(FrameRun& run) {
  std::lock_guard lock(mu_);
  runs_[run.id()] = &run;
}

void Router::Remove(const FrameRun& run) {
  std::lock_guard lock(mu_);
  const auto it = runs_.find(run.id());
  if (it != runs_.end() && it->second == &run) runs_.erase(it);
}

std::size_t Router::size() const {
  std::lock_guard lock(mu_);
  return runs_.size();
}

FrameRun* Router::FindLocked(std::string_view frame_id) const {
  if (frame_id.empty()) return nullptr;
  // A one-frame run's frame id is the run id itself; any other's is "<run id>:<index>".
  if (const auto it = runs_.find(frame_id); it != runs_.end()) return it->second;
  const std::string_view run_id = RunIdOf(frame_id);
  if (run_id.size() == frame_id.size()) return nullptr;
  const auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : it->second;
}

std::size_t Router::OnDeletedUnread(const bus::Loss& loss) {
  std::lock_guard lock(mu_);
  std::size_t hit = 0;
  for (const auto& [id, run] : runs_) hit += run->OnDeletedUnread(loss);
  return hit;
}

bool Router::Route(const bus::InboundMessage& in, std::int64_t received_ms) {
  const bus::Headers& h = in.message.headers;
  std::string id = h.Get(header::kCorrelationId).value_or("");
  if (id.empty()) id = h.Get(header::kFrameId).value_or("");

  if (protocol::IsImageMessage(in.message)) {
    // The run copies what it keeps; the lock keeps the run alive meanwhile (Remove waits).
    std::lock_guard lock(mu_);
    FrameRun* run = FindLocked(id);
    if (run == nullptr) return false;
    run->OnImage(id, in.message.value);
    return true;
  }

  auto parsed = protocol::FrameResultFromJson(bus::ValueText(in.message));
  if (parsed && id.empty()) {
    id = parsed->correlation_id.empty() ? parsed->frame_id : parsed->correlation_id;
  }
  std::lock_guard lock(mu_);
  FrameRun* run = FindLocked(id);
  if (run == nullptr) return false;
  protocol::FrameResult result;
  if (parsed) {
    result = std::move(parsed).value();
    result.correlation_id = id;
  } else {
    spdlog::warn("engine: unreadable result id={} topic={} offset={} error=\"{}\"", id,
                 in.token.topic, in.token.offset, parsed.error().ToString());
    result.frame_id = result.correlation_id = id;
    result.status = protocol::FrameStatus::kError;
    result.error = InternalError("the worker's result is unreadable: " + parsed.error().message());
  }
  run->OnResult(std::move(result), received_ms);
  return true;
}

}  // namespace kadr::engine
