#include "worker/worker_service.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "inference/detector.h"

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
  if (!meta.kind.empty()) h.Set(header::kKind, meta.kind);
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

// Owned by one stage at a time: handed over through the FIFOs, whose mutexes order the
// stages' accesses.
struct WorkerService::Item {
  bus::InboundMessage in;  // kept for the dead-letter copy
  FrameMeta meta;
  std::shared_ptr<Pending> pending;
  SteadyClock::time_point taken;  // its timings_ms["total"] counts from here
  bool more_follow = false;       // the next frame of the same poll is right behind it
  DecodedFrame frame;             // after the decode stage
  // Done: its outputs are decided (answered early, failed, or finished); the stages after
  // the one that decided only pass it on, and the finish stage publishes the outputs.
  bool done = false;
  std::vector<bus::Message> outputs;
};

namespace {

// A FIFO between two stages: one thread pushes, one pops. Not bounded itself; the
// Pipeline's count of frames bounds all of them together.
template <typename T>
class Fifo {
 public:
  void Push(std::unique_ptr<T> item) {
    {
      std::lock_guard lock(mu_);
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
  }
  // The oldest item; waits for one. Null once closed and empty.
  std::unique_ptr<T> Pop() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !items_.empty() || closed_; });
    return PopLocked();
  }
  // The oldest item, or null when there is none now.
  std::unique_ptr<T> TryPop() {
    std::lock_guard lock(mu_);
    return PopLocked();
  }
  // No more pushes: Pop returns what is left, then null.
  void Close() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::unique_ptr<T> PopLocked() {
    if (items_.empty()) return nullptr;
    std::unique_ptr<T> item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<T>> items_;
  bool closed_ = false;
};

}  // namespace

// Lives for one Run(). Frames enter when polled and leave when the finish stage has handed
// their outputs to the publisher; at most `depth` are inside.
struct WorkerService::Pipeline {
  explicit Pipeline(std::size_t max_frames) : depth(max_frames) {}

  // How many more frames may enter; waits up to `timeout` while none may. 0 when full.
  std::size_t WaitForRoom(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, timeout, [&] { return frames < depth; });
    return frames < depth ? depth - frames : 0;
  }
  void Enter(std::size_t n) {
    std::lock_guard lock(mu);
    frames += n;
  }
  void Leave() {
    {
      std::lock_guard lock(mu);
      --frames;
    }
    cv.notify_all();
  }
  // True once no frame is inside; waits up to `timeout`.
  bool WaitEmpty(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return frames == 0; });
  }

  const std::size_t depth;
  Fifo<Item> to_decode, to_detect, to_finish;
  std::mutex mu;
  std::condition_variable cv;
  std::size_t frames = 0;  // guarded by mu
};

WorkerService::WorkerService(WorkerOptions options, std::shared_ptr<inference::Detector> detector,
                             bus::FramePublisher& publisher, bus::FrameSubscriber& subscriber)
    : options_(std::move(options)),
      detector_(std::move(detector)),
      publisher_(publisher),
      subscriber_(subscriber),
      processor_(options_.processing),
      trackers_(options_.tracking, options_.tracking_idle_ms, options_.max_tracked_streams) {}

WorkerService::~WorkerService() {
  std::lock_guard lock(lifetime_->mu);
  lifetime_->closed = true;
}

std::int64_t WorkerService::NowMs() const {
  if (options_.now_ms) return options_.now_ms();
  return UnixMillis();
}

namespace {

std::int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

WorkerStats WorkerService::stats() const {
  WorkerStats st{frames_.load(), processed_.load(),       skipped_.load(), failed_.load(),
                 acked_.load(),  publish_retries_.load(), tracked_.load(), lost_.load()};
  const std::uint64_t finished = st.processed + st.skipped + st.failed;
  if (st.frames > finished)
    st.stalled_ms = std::max<std::int64_t>(0, SteadyMs() - last_progress_ms_);
  return st;
}

void WorkerService::Progress() { last_progress_ms_ = SteadyMs(); }

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
  auto on_delivery = [this, lifetime = lifetime_, pending, copy](const Status& st,
                                                                 const bus::AckToken&) {
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
  // Not queued (queue still full after its timeout): retried from the poll thread.
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

Status WorkerService::CheckRoutes(protocol::FrameMeta& meta) const {
  for (const std::string* topic : {&meta.reply_to, &meta.annotated_to}) {
    if (topic->empty() || protocol::IsAllowedReplyTopic(*topic, options_.reply_topic_prefixes)) {
      continue;
    }
    std::string allowed;
    for (const auto& p : options_.reply_topic_prefixes)
      allowed += (allowed.empty() ? "" : ", ") + p;
    Status error = InvalidArgumentError("the frame's answers may go only to topics starting with " +
                                        allowed + ", not to '" + *topic + "'");
    meta.reply_to = std::string(protocol::kResultsTopic);
    meta.annotated_to.clear();
    return error;
  }
  return Status::Ok();
}

void WorkerService::Reject(Item& item, const Status& error) {
  ++failed_;
  Progress();
  const FrameResult r = NewResult(item.meta, FrameStatus::kError, error, detector_->info().name);
  item.outputs = {DeadLetter(item.in.message, error, options_.dead_letter_topic),
                  ResultMessage(item.meta, r)};
  item.frame = {};
  item.done = true;
}

void WorkerService::Skip(Item& item, std::int64_t now) {
  ++skipped_;
  Progress();
  const std::int64_t late = now - *item.meta.deadline_ms;
  spdlog::debug("frame skipped, deadline passed frame={} late_ms={}", item.meta.frame_id, late);
  const FrameResult r = NewResult(
      item.meta, FrameStatus::kSkipped,
      DeadlineExceededError("deadline passed " + std::to_string(late) + " ms before processing"),
      detector_->info().name);
  item.outputs = {ResultMessage(item.meta, r)};
  item.frame = {};
  item.done = true;
}

bool WorkerService::StillToProcess(Item& item) {
  if (item.done) return false;
  // Models that need no pixels have nothing to save by a second look (and keep the
  // behaviour they had before the pipeline: the deadline is checked when the frame is taken).
  if (!detector_->info().needs_pixels || !item.meta.deadline_ms) return true;
  const std::int64_t now = NowMs();
  if (*item.meta.deadline_ms >= now) return true;
  Skip(item, now);
  return false;
}

void WorkerService::Admit(std::vector<bus::InboundMessage>& batch, Pipeline& pipeline) {
  const std::int64_t now = NowMs();
  const auto taken = SteadyClock::now();
  pipeline.Enter(batch.size());
  // Taken while none was held: the stall clock starts now, not at the last frame finished.
  if (frames_ == processed_ + skipped_ + failed_) Progress();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    bus::InboundMessage& in = batch[i];
    ++frames_;
    ++outstanding_;
    auto item = std::make_unique<Item>();
    item->taken = taken;
    item->more_follow = i + 1 < batch.size();
    item->pending = std::make_shared<Pending>();
    item->pending->token = in.token;
    auto meta = protocol::DecodeFrameHeaders(in.message.headers);
    Status error;
    if (meta) {
      item->meta = std::move(*meta);
      // Producers that set only the message key (kcat -k cam1) name the stream with it.
      if (!in.message.headers.Get(header::kStreamId) && !in.message.key.empty()) {
        item->meta.stream_id = in.message.key;
      }
    } else {
      // Answer it anyway, with as much of its identity as can be read, and dead-letter it.
      item->meta =
          protocol::BestEffortFrameMeta(in.message.headers, in.message.key,
                                        in.token.topic + "/" + std::to_string(in.token.partition) +
                                            "/" + std::to_string(in.token.offset));
      error = meta.error();
    }
    if (Status route = CheckRoutes(item->meta); !route.ok() && error.ok()) error = route;
    if (error.ok()) error = inference::ValidateOptions(item->meta.options, detector_->info());
    item->in = std::move(in);
    if (!error.ok()) {
      spdlog::warn("frame rejected frame={} error=\"{}\"", item->meta.frame_id, error.ToString());
      Reject(*item, error);
    } else if (item->meta.deadline_ms && *item->meta.deadline_ms < now) {
      Skip(*item, now);
    }
    // Answered or not, it goes down the pipeline, so that results keep the frames' order.
    pipeline.to_decode.Push(std::move(item));
  }
}

void WorkerService::DecodeStage(Pipeline& pipeline) {
  const inference::ModelInfo& info = detector_->info();
  while (std::unique_ptr<Item> item = pipeline.to_decode.Pop()) {
    if (!item->done) {
      auto frame = processor_.Decode(item->in.message.value, info, item->taken);
      if (frame) {
        item->frame = std::move(*frame);
      } else {
        spdlog::warn("frame failed frame={} error=\"{}\"", item->meta.frame_id,
                     frame.error().ToString());
        Reject(*item, frame.error());
      }
    }
    pipeline.to_detect.Push(std::move(item));
  }
  pipeline.to_detect.Close();
}

void WorkerService::DetectStage(Pipeline& pipeline) {
  const std::size_t max_batch = std::max<std::size_t>(
      1, std::min<std::size_t>(options_.max_batch, std::max(1, detector_->info().max_batch)));
  std::unique_ptr<Item> carried;  // taken while building a run, but not part of it
  while (true) {
    std::unique_ptr<Item> first = carried ? std::move(carried) : pipeline.to_detect.Pop();
    if (!first) break;
    if (!StillToProcess(*first)) {
      pipeline.to_finish.Push(std::move(first));
      continue;
    }
    // A run: the frames waiting behind it with the same options, up to the batch size.
    std::vector<std::unique_ptr<Item>> run;
    run.push_back(std::move(first));
    while (run.size() < max_batch) {
      std::unique_ptr<Item> next = pipeline.to_detect.TryPop();
      // The rest of its poll batch is being decoded right now: frames taken together are
      // detected together, as before the pipeline. Not waited for otherwise: a lone frame
      // goes at once.
      if (!next && run.back()->more_follow) next = pipeline.to_detect.Pop();
      if (!next) break;
      if (!StillToProcess(*next) ||
          !SameDetectOptions(next->meta.options, run.front()->meta.options)) {
        carried = std::move(next);
        break;
      }
      run.push_back(std::move(next));
    }
    std::vector<DecodedFrame*> frames;
    frames.reserve(run.size());
    for (const auto& item : run) frames.push_back(&item->frame);
    const Status detected = processor_.Detect(frames, run.front()->meta.options, *detector_);
    for (auto& item : run) {
      if (!detected.ok()) {
        spdlog::warn("frame failed frame={} error=\"{}\"", item->meta.frame_id,
                     detected.ToString());
        Reject(*item, detected);
      }
      pipeline.to_finish.Push(std::move(item));
    }
  }
  pipeline.to_finish.Close();
}

void WorkerService::FinishStage(Pipeline& pipeline) {
  while (std::unique_ptr<Item> item = pipeline.to_finish.Pop()) {
    if (!item->done) {
      const FrameMeta& m = item->meta;
      if (protocol::IsTrackedKind(m.kind)) {
        // Here, not earlier: this stage sees one stream's frames in the order they were taken.
        Stopwatch sw;
        trackers_.Update(m.stream_id, NowMs(), item->frame.result.detections);
        item->frame.result.timings_ms["track"] = sw.Lap();
        ++tracked_;
      }
      auto finished = processor_.Finish(std::move(item->frame), m.draw);
      if (finished) {
        ++processed_;
        Progress();
        FrameResult r = NewResult(m, FrameStatus::kOk, {}, detector_->info().name);
        r.result = std::move(finished->result);
        // Drawn on the frame as it came; reported in the pixels of the image it stands for.
        if (m.report_width > 0) protocol::ScaleToSize(r.result, m.report_width, m.report_height);
        if (!finished->annotated_jpeg.empty()) {
          r.annotated_topic = m.annotated_to.empty() ? options_.annotated_topic : m.annotated_to;
          bus::Message annotated{
              r.annotated_topic, m.stream_id, std::move(finished->annotated_jpeg), {}};
          EchoIdentity(m, annotated.headers);
          annotated.headers.Set(header::kContentType, "image/jpeg");
          item->outputs.push_back(std::move(annotated));
        }
        item->outputs.push_back(ResultMessage(m, r));
        item->done = true;
      } else {
        spdlog::warn("frame failed frame={} error=\"{}\"", m.frame_id, finished.error().ToString());
        Reject(*item, finished.error());
      }
    }
    Answer(item->pending, std::move(item->outputs));
    item.reset();  // its bytes and pixels go before its place is given to the next frame
    pipeline.Leave();
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
  hb.lost = s.lost;
  while (!recent_losses_.empty() &&
         (hb.ts_ms - recent_losses_.front().first > protocol::kLossReportMs ||
          recent_losses_.size() > protocol::kMaxLossesPerHeartbeat)) {
    recent_losses_.pop_front();
  }
  for (const auto& [found_ms, loss] : recent_losses_) hb.losses.push_back(loss);
  bus::Message m{options_.heartbeat_topic, hb.worker_id, {}, {}};
  const std::string json = protocol::WorkerHeartbeatToJson(hb);
  m.value.assign(json.begin(), json.end());
  m.headers.Set(protocol::header::kContentType, "application/json");
  m.headers.Set(protocol::header::kSchema, std::to_string(protocol::kProtocolVersion));
  // Best effort: the next one follows within an interval, so a lost one costs nothing.
  const Status st =
      publisher_.Publish(std::move(m), [](const Status& delivery, const bus::AckToken&) {
        if (!delivery.ok()) spdlog::debug("heartbeat not delivered: {}", delivery.ToString());
      });
  if (!st.ok()) spdlog::debug("heartbeat not queued: {}", st.ToString());
}

bool WorkerService::TakeLosses() {
  const std::vector<bus::Loss> losses = subscriber_.TakeLosses();
  const std::int64_t now = NowMs();
  for (const auto& loss : losses) {
    lost_ += static_cast<std::uint64_t>(loss.count());
    recent_losses_.emplace_back(now, loss);
    if (options_.on_lost) options_.on_lost(loss);
  }
  return !losses.empty();
}

Status WorkerService::Run(const std::stop_token& stop) {
  if (options_.worker_id.empty()) {
    char host[256] = {};
    (void)gethostname(host, sizeof(host) - 1);
    options_.worker_id =
        std::string(host) + "-" + std::to_string(getpid()) + "-" + detector_->info().name;
  }
  const std::size_t depth = options_.pipeline_depth > 0
                                ? options_.pipeline_depth
                                : std::max<std::size_t>(4, 2 * options_.max_batch);
  spdlog::info("worker started model={} max_batch={} pipeline_depth={}", detector_->info().name,
               options_.max_batch, depth);
  Pipeline pipeline(depth);
  // Named for `top -H` and profilers (15 characters at most).
  std::jthread decode([&] {
    pthread_setname_np(pthread_self(), "kadr-decode");
    DecodeStage(pipeline);
  });
  std::jthread detect([&] {
    pthread_setname_np(pthread_self(), "kadr-detect");
    DetectStage(pipeline);
  });
  std::jthread finish([&] {
    pthread_setname_np(pthread_self(), "kadr-finish");
    FinishStage(pipeline);
  });
  // Whichever way this scope is left, the stages drain and end before their threads are
  // joined (the guard is destroyed first).
  struct CloseOnExit {
    Pipeline& pipeline;
    ~CloseOnExit() { pipeline.to_decode.Close(); }
  } close_on_exit{pipeline};

  auto next_heartbeat = std::chrono::steady_clock::now();
  while (!stop.stop_requested()) {
    // Frames deleted before they were read: their producers hear of it now, not in an interval.
    if (TakeLosses()) next_heartbeat = std::chrono::steady_clock::now();
    if (std::chrono::steady_clock::now() >= next_heartbeat) {
      SendHeartbeat("running");
      next_heartbeat = std::chrono::steady_clock::now() + options_.heartbeat_interval;
    }
    RetryFailed();
    // A full pipeline is not polled (back-pressure); its frames wait on the broker.
    const std::size_t room = pipeline.WaitForRoom(options_.poll_timeout);
    if (room == 0) continue;
    auto batch = subscriber_.Poll(std::min(options_.max_batch, room), options_.poll_timeout,
                                  options_.batch_linger);
    if (!batch.empty()) Admit(batch, pipeline);
  }
  // Drain: no more polling; every frame in the pipeline is finished and handed to the
  // publisher (deliveries that fail meanwhile are re-published from here), then the
  // deliveries are waited for.
  pipeline.to_decode.Close();
  while (!pipeline.WaitEmpty(std::chrono::milliseconds(100))) RetryFailed();
  decode.join();
  detect.join();
  finish.join();
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
