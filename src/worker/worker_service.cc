#include "worker/worker_service.h"

#include <unistd.h>

#include <thread>

#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "inference/model_spec.h"

namespace kadr::worker {
namespace {

using protocol::FrameMeta;
using protocol::FrameResult;
using protocol::FrameStatus;
namespace header = protocol::header;

std::vector<std::uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

void EchoIdentity(const FrameMeta& meta, bus::Headers& h) {
  h.Set(header::kSchema, std::to_string(protocol::kProtocolVersion));
  h.Set(header::kFrameId, meta.frame_id);
  h.Set(header::kStreamId, meta.stream_id);
  h.Set(header::kSequence, std::to_string(meta.sequence));
  if (!meta.correlation_id.empty()) h.Set(header::kCorrelationId, meta.correlation_id);
  if (!meta.model.empty()) h.Set(header::kModel, meta.model);
  if (!meta.source.empty()) h.Set(header::kSource, meta.source);
}

FrameResult NewResult(const FrameMeta& m, FrameStatus status, Status error,
                      const std::string& model) {
  FrameResult r{m.frame_id,       m.stream_id, m.sequence, m.correlation_id, m.capture_ms, status,
                std::move(error), {},          {}};
  r.result.model = model;
  return r;
}

// The result message for the frame's reply-to topic.
bus::Message ResultMessage(const FrameMeta& m, const FrameResult& r) {
  bus::Message msg{m.reply_to, m.stream_id, Bytes(protocol::FrameResultToJson(r)), {}};
  EchoIdentity(m, msg.headers);
  msg.headers.Set(header::kContentType, "application/json");
  msg.headers.Set(header::kStatus, std::string(protocol::FrameStatusName(r.status)));
  return msg;
}

// The frame as it came, with the reason it failed, for the dead-letter topic.
bus::Message DeadLetter(const bus::Message& frame, const Status& error, const std::string& topic) {
  bus::Message dlq{topic, frame.key, frame.value, frame.headers};
  dlq.headers.Set(header::kErrorCode, std::string(StatusCodeName(error.code())));
  dlq.headers.Set(header::kErrorMessage, error.message());
  return dlq;
}

}  // namespace

// One frame's outstanding deliveries; the frame is acked when the count reaches zero.
struct WorkerService::Pending {
  bus::AckToken token;
  std::atomic<int> remaining{0};
};

WorkerService::WorkerService(WorkerOptions options, std::shared_ptr<inference::Detector> detector,
                             bus::FramePublisher& publisher, bus::FrameSubscriber& subscriber)
    : options_(std::move(options)),
      detector_(std::move(detector)),
      publisher_(publisher),
      subscriber_(subscriber),
      processor_(options_.processing) {}

WorkerService::~WorkerService() {
  std::lock_guard lock(lifetime_->mu);
  lifetime_->closed = true;
}

std::int64_t WorkerService::NowMs() const {
  if (options_.now_ms) return options_.now_ms();
  return UnixMillis();
}

WorkerStats WorkerService::stats() const {
  return {frames_.load(), processed_.load(), skipped_.load(),
          failed_.load(), acked_.load(),     publish_retries_.load()};
}

void WorkerService::OutputDelivered(const std::shared_ptr<Pending>& pending) {
  if (pending->remaining.fetch_sub(1) == 1) {
    subscriber_.Ack(pending->token);
    ++acked_;
    --outstanding_;
  }
}

void WorkerService::Send(const std::shared_ptr<Pending>& pending, bus::Message message) {
  // The callback keeps a copy for re-publishing: a delivery that failed after the transport's
  // own retries (e.g. a long broker outage) must not lose the frame's output.
  auto copy = std::make_shared<bus::Message>(message);
  auto on_delivery = [this, lifetime = lifetime_, pending, copy](const Status& st) {
    std::lock_guard alive(lifetime->mu);
    if (lifetime->closed) return;
    if (st.ok()) {
      OutputDelivered(pending);
      return;
    }
    std::lock_guard lock(retry_mu_);
    retry_.emplace_back(pending, *copy);
  };
  const Status s = publisher_.Publish(std::move(message), std::move(on_delivery));
  if (s.ok()) return;
  if (s.code() == StatusCode::kTooLarge) {
    // Cannot succeed on retry: logged loudly, and the frame is not held up by it.
    spdlog::error("output dropped, over the size limit topic={} error=\"{}\"", copy->topic,
                  s.message());
    OutputDelivered(pending);
    return;
  }
  // Not queued (queue still full after its timeout): retried from the main loop.
  std::lock_guard lock(retry_mu_);
  retry_.emplace_back(pending, std::move(*copy));
}

void WorkerService::RetryFailed() {
  std::deque<std::pair<std::shared_ptr<Pending>, bus::Message>> batch;
  {
    std::lock_guard lock(retry_mu_);
    batch.swap(retry_);
  }
  for (auto& [pending, message] : batch) {
    ++publish_retries_;
    spdlog::warn("re-publishing topic={} frame_offset={}", message.topic, pending->token.offset);
    Send(pending, std::move(message));
  }
}

void WorkerService::HandleBatch(std::vector<bus::InboundMessage>& batch) {
  struct Work {
    bus::InboundMessage* in;
    FrameMeta meta;
    std::shared_ptr<Pending> pending;
  };
  std::vector<Work> to_process;
  std::vector<FrameInput> inputs;
  const std::int64_t now = NowMs();

  for (auto& in : batch) {
    ++frames_;
    ++outstanding_;
    auto pending = std::make_shared<Pending>();
    pending->token = in.token;
    auto meta = protocol::DecodeFrameHeaders(in.message.headers);
    FrameMeta m;
    Status error;
    if (meta) {
      m = std::move(*meta);
      // Producers that set only the message key (kcat -k cam1) name the stream with it.
      if (!in.message.headers.Get(header::kStreamId) && !in.message.key.empty()) {
        m.stream_id = in.message.key;
      }
    } else {
      // Answer it anyway, with as much of its identity as can be read, and dead-letter it.
      m = protocol::BestEffortFrameMeta(in.message.headers, in.message.key,
                                        in.token.topic + "/" + std::to_string(in.token.partition) +
                                            "/" + std::to_string(in.token.offset));
      error = meta.error();
    }
    if (error.ok()) {
      error = inference::ValidateOptions(m.options, detector_->info());
    }
    if (!error.ok()) {
      ++failed_;
      spdlog::warn("frame rejected frame={} error=\"{}\"", m.frame_id, error.ToString());
      const FrameResult r = NewResult(m, FrameStatus::kError, error, detector_->info().name);
      Answer(pending,
             {DeadLetter(in.message, error, options_.dead_letter_topic), ResultMessage(m, r)});
      continue;
    }
    if (m.deadline_ms && *m.deadline_ms < now) {
      ++skipped_;
      spdlog::debug("frame skipped, deadline passed frame={} late_ms={}", m.frame_id,
                    now - *m.deadline_ms);
      const FrameResult r = NewResult(
          m, FrameStatus::kSkipped,
          DeadlineExceededError("deadline passed " + std::to_string(now - *m.deadline_ms) +
                                " ms before processing"),
          detector_->info().name);
      Answer(pending, {ResultMessage(m, r)});
      continue;
    }
    inputs.push_back({in.message.value, m.options, m.draw});
    to_process.push_back({&in, std::move(m), std::move(pending)});
  }

  auto results = processor_.ProcessBatch(inputs, *detector_);
  for (size_t i = 0; i < to_process.size(); ++i) {
    Work& w = to_process[i];
    const FrameMeta& m = w.meta;
    std::vector<bus::Message> outputs;
    FrameResult r = NewResult(m, FrameStatus::kOk, {}, detector_->info().name);
    if (results[i]) {
      ++processed_;
      r.result = std::move(results[i]->result);
      if (!results[i]->annotated_jpeg.empty()) {
        r.annotated_topic = m.annotated_to.empty() ? options_.annotated_topic : m.annotated_to;
        bus::Message annotated{
            r.annotated_topic, m.stream_id, std::move(results[i]->annotated_jpeg), {}};
        EchoIdentity(m, annotated.headers);
        annotated.headers.Set(header::kContentType, "image/jpeg");
        outputs.push_back(std::move(annotated));
      }
    } else {
      ++failed_;
      const Status& error = results[i].error();
      spdlog::warn("frame failed frame={} error=\"{}\"", m.frame_id, error.ToString());
      r.status = FrameStatus::kError;
      r.error = error;
      outputs.push_back(DeadLetter(w.in->message, error, options_.dead_letter_topic));
    }
    outputs.push_back(ResultMessage(m, r));
    Answer(w.pending, std::move(outputs));
  }
}

void WorkerService::Answer(const std::shared_ptr<Pending>& pending,
                           std::vector<bus::Message> outputs) {
  pending->remaining = static_cast<int>(outputs.size());
  for (auto& message : outputs) Send(pending, std::move(message));
}

void WorkerService::SendHeartbeat(std::string_view state) {
  if (options_.heartbeat_topic.empty()) return;
  const inference::ModelInfo& info = detector_->info();
  protocol::WorkerHeartbeat hb;
  hb.worker_id = options_.worker_id;
  hb.model = info.name;
  hb.ts_ms = NowMs();
  hb.interval_ms = options_.heartbeat_interval.count();
  hb.state = std::string(state);
  hb.family = std::string(inference::FamilyName(info.family));
  hb.task = info.has_masks ? "segment" : "detect";
  hb.input_width = info.input_width;
  hb.input_height = info.input_height;
  hb.labels = info.labels;
  const WorkerStats s = stats();
  hb.frames = s.frames;
  hb.processed = s.processed;
  hb.skipped = s.skipped;
  hb.failed = s.failed;
  hb.in_flight = outstanding_.load();
  bus::Message m{options_.heartbeat_topic, hb.worker_id, {}, {}};
  const std::string json = protocol::WorkerHeartbeatToJson(hb);
  m.value.assign(json.begin(), json.end());
  m.headers.Set(protocol::header::kContentType, "application/json");
  m.headers.Set(protocol::header::kSchema, std::to_string(protocol::kProtocolVersion));
  // Best effort: the next one follows within an interval, so a lost one costs nothing.
  const Status st = publisher_.Publish(std::move(m), [](const Status& delivery) {
    if (!delivery.ok()) spdlog::debug("heartbeat not delivered: {}", delivery.ToString());
  });
  if (!st.ok()) spdlog::debug("heartbeat not queued: {}", st.ToString());
}

Status WorkerService::Run(const std::stop_token& stop) {
  spdlog::info("worker started model={} max_batch={}", detector_->info().name, options_.max_batch);
  if (options_.worker_id.empty()) {
    char host[256] = {};
    (void)gethostname(host, sizeof(host) - 1);
    options_.worker_id =
        std::string(host) + "-" + std::to_string(getpid()) + "-" + detector_->info().name;
  }
  auto next_heartbeat = std::chrono::steady_clock::now();
  while (!stop.stop_requested()) {
    if (std::chrono::steady_clock::now() >= next_heartbeat) {
      SendHeartbeat("running");
      next_heartbeat = std::chrono::steady_clock::now() + options_.heartbeat_interval;
    }
    RetryFailed();
    auto batch = subscriber_.Poll(options_.max_batch, options_.poll_timeout, options_.batch_linger);
    if (!batch.empty()) HandleBatch(batch);
  }
  // Drain: the frames in hand are processed; wait for their outputs to be delivered.
  const auto deadline = std::chrono::steady_clock::now() + options_.drain_timeout;
  while (outstanding_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    RetryFailed();
    (void)publisher_.Flush(std::chrono::milliseconds(100));
  }
  const std::int64_t left = outstanding_.load();
  SendHeartbeat("stopping");
  (void)publisher_.Flush(std::chrono::milliseconds(500));
  Status closed = subscriber_.Close();
  const WorkerStats s = stats();
  spdlog::info("worker stopped frames={} processed={} skipped={} failed={} undelivered={}",
               s.frames, s.processed, s.skipped, s.failed, left);
  if (left > 0) {
    return DeadlineExceededError(std::to_string(left) +
                                 " frames still had undelivered outputs at shutdown; they will "
                                 "be redelivered to another worker");
  }
  return closed;
}

}  // namespace kadr::worker
