#include "gateway/gateway_service.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "engine/bus_dispatch.h"
#include "engine/frame_run.h"
#include "gateway/detail/publish.h"
#include "gateway/detail/responses.h"
#include "gateway/detail/upload.h"
#include "gateway/detail/video_upload.h"
#include "gateway/detail/wire_image.h"
#include "http/server.h"
#include "jobs/job.h"
#include "protocol/frame.h"
#include "video/video.h"

namespace kadr::gateway {
namespace {

using detail::Dump;
using detail::ErrorResponse;
using http::HttpRequest;
using http::HttpResponse;
using nlohmann::json;

constexpr std::size_t kPollBatch = 64;
constexpr char kJobIdHeader[] = "X-Kadr-Job-Id";
// Workers silent this long are forgotten (their model stays known); bounds the table when
// workers restart under new ids.
constexpr std::int64_t kForgetDeadWorkerMs = 10 * 60 * 1000;

constexpr char kRequestsName[] = "kadr_http_requests_total";
constexpr char kRequestsHelp[] = "HTTP requests served, by route, method and status code.";
constexpr char kLatencyName[] = "kadr_http_request_duration_seconds";
constexpr char kLatencyHelp[] = "HTTP request latency in seconds, by route.";
constexpr char kInFlightName[] = "kadr_gateway_in_flight";
constexpr char kInFlightHelp[] = "Gateway jobs waiting for a result, by model.";
constexpr char kInFlightLimitName[] = "kadr_gateway_in_flight_limit";
constexpr char kInFlightLimitHelp[] = "The gateway's bound on jobs waiting for a result.";
constexpr char kJobsName[] = "kadr_gateway_jobs_total";
constexpr char kJobsHelp[] =
    "Gateway jobs finished, by model and outcome (done, or the error code).";
constexpr char kModelWorkersName[] = "kadr_model_workers";
constexpr char kModelWorkersHelp[] = "Live workers announced on kadr.workers, by model.";
constexpr char kWorkerFramesName[] = "kadr_worker_frames_total";
constexpr char kWorkerFramesHelp[] =
    "Frames a worker reports in its heartbeat, cumulative since it started, by outcome.";
constexpr char kBrokerUpName[] = "kadr_broker_up";
constexpr char kBrokerUpHelp[] = "1 when the gateway's last broker check succeeded.";

bool AcceptsJpeg(const HttpRequest& req) {
  std::string accept = req.Header("Accept").value_or("");
  std::transform(accept.begin(), accept.end(), accept.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return accept.find("image/jpeg") != std::string::npos;
}

HttpResponse JpegResponse(std::vector<std::uint8_t> jpeg, const std::string& job_id) {
  HttpResponse r;
  r.content_type = "image/jpeg";
  r.body.assign(jpeg.begin(), jpeg.end());
  r.headers.emplace(kJobIdHeader, job_id);
  return r;
}

std::string JoinNames(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

}  // namespace

// One image request on the frame engine: the dispatcher (wrapped, to time the gateway's part)
// and the sink (its one answer) of a one-frame run.
class ImageRequest final : public engine::Dispatcher, public engine::Sink {
 public:
  ImageRequest(jobs::JobRecord record, engine::BusDispatchOptions dispatch, engine::RunOptions run,
               bus::FramePublisher& publisher, std::vector<std::uint8_t> jpeg,
               SteadyClock::time_point received)
      : record_(std::move(record)),
        bus_(WithDeliveryHook(std::move(dispatch)), publisher),
        run_(std::move(run), *this, *this),
        received_(received) {
    engine::SourceFrame frame;
    frame.encoded = std::move(jpeg);
    frame.capture_ms = record_.created_ms;
    frame.deadline_ms = record_.deadline_ms;
    frames_.push_back(std::move(frame));
  }

  Status Send(const engine::Outgoing& frame, engine::FrameRun& run) override {
    Status s = bus_.Send(frame, run);
    gateway_ms_ = MillisSince(received_);
    return s;
  }
  Status Release(engine::Released frame) override {
    result_ms_ = MillisSince(received_);
    released_ = std::move(frame);
    return Status::Ok();
  }

  // Sends the image and waits for its answer (or its deadline, or `stop`), with the run known
  // to `router` meanwhile; the run's status.
  Status Execute(engine::Router& router, const std::stop_token& stop) {
    engine::FramesSource source(std::move(frames_));
    router.Add(run_);
    Status s = run_.Run(source, stop);
    router.Remove(run_);
    // An answer means the broker had the frame, even if its delivery report comes later;
    // else the run's failure says why it never will.
    SetDelivered(s);
    return s;
  }

  // Waits until the broker has taken the frame: OK, or why it never will (the run's end).
  Status WaitDelivered() {
    std::unique_lock lock(delivery_->mu);
    delivery_->changed.wait(lock, [&] { return delivery_->status.has_value(); });
    return *delivery_->status;
  }

  const jobs::JobRecord& record() const { return record_; }
  const std::string& client() const { return bus_.options().client; }
  // Whether the frame went to the broker (else it never got room there, or failed before).
  bool sent() const { return run_.stats().sent > 0; }
  const std::optional<engine::Released>& released() const { return released_; }
  // The gateway's part: checking, converting and publishing; and request -> answer.
  double gateway_ms() const { return gateway_ms_; }
  std::optional<double> result_ms() const { return result_ms_; }
  SteadyClock::time_point received() const { return received_; }

 private:
  struct Delivery;
  const jobs::JobRecord record_;
  const std::shared_ptr<Delivery> delivery_ = std::make_shared<Delivery>();
  engine::BusDispatcher bus_;
  engine::FrameRun run_;
  std::vector<engine::SourceFrame> frames_;
  const SteadyClock::time_point received_;
  double gateway_ms_ = 0;
  std::optional<double> result_ms_;
  std::optional<engine::Released> released_;

  // The frame's delivery, shared with the transport's callback (which may come after this
  // request is gone).
  struct Delivery {
    std::mutex mu;
    std::condition_variable changed;
    std::optional<Status> status;
    void Set(const Status& s) {
      std::lock_guard lock(mu);
      if (!status) status = s;
      changed.notify_all();
    }
  };
  engine::BusDispatchOptions WithDeliveryHook(engine::BusDispatchOptions options) {
    options.on_delivered = [delivery = delivery_](const std::string&) {
      delivery->Set(Status::Ok());
    };
    return options;
  }
  void SetDelivered(const Status& s) { delivery_->Set(s); }
};

// What a client is told when its frame could not be published: too large, no room (429) or
// its own deadline passed first (504, as the synchronous route answers it) as they are;
// anything else is the broker's trouble (503).
Status SendFailure(const Status& s) {
  return s.code() == StatusCode::kTooLarge || s.code() == StatusCode::kResourceExhausted ||
                 s.code() == StatusCode::kDeadlineExceeded
             ? s
             : UnavailableError("cannot publish the frame: " + s.message());
}

class GatewayService::Impl {
 public:
  Impl(GatewayOptions options, bus::FramePublisher& publisher, bus::FrameSubscriber& replies,
       bus::FrameSubscriber& workers, std::vector<ConfiguredModel> configured,
       std::function<Status()> broker_check, MetricsRegistry& metrics)
      : options_(std::move(options)),
        publisher_(publisher),
        replies_(replies),
        workers_(workers),
        configured_(std::move(configured)),
        broker_check_(std::move(broker_check)),
        metrics_(metrics) {
    metrics_.GetGauge(kInFlightLimitName, kInFlightLimitHelp)
        .Set(static_cast<double>(options_.max_in_flight));
    metrics_.GetGauge(kBrokerUpName, kBrokerUpHelp).Set(0);
    for (const auto& m : configured_) {
      InFlightGauge(m.name);
      metrics_.GetGauge(kModelWorkersName, kModelWorkersHelp, {{"model", m.name}});
    }
  }

  ~Impl() { StopRequests(); }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  Status Init();
  Status RegisterRoutes(http::HttpServer& server);
  Status Run(const std::stop_token& stop);

 private:
  struct ModelView {
    std::string name;
    std::vector<std::string> labels;
  };

  // Route handlers.
  HttpResponse Submit(const HttpRequest& req, bool async);
  HttpResponse SubmitVideo(const detail::Upload& upload, bool async);
  HttpResponse Models();
  HttpResponse Ready();
  HttpResponse Metrics();
  http::Handler Instrument(const std::string& route,
                           std::function<HttpResponse(const HttpRequest&)> handler);

  // Run()'s work.
  void HandleHeartbeat(const bus::InboundMessage& in);
  void CheckBroker();
  void PruneWorkers();
  void RefreshWorkerGauges();

  // Image requests.
  // Runs `request` to its end and settles it: its outcome (OK, or why it failed), counted,
  // its in-flight slot released, a failure the worker did not report published in its
  // snapshot.
  Status Finish(ImageRequest& request, const Status& run_status);
  std::map<std::string, double> Timings(const ImageRequest& request, double total_ms) const;
  // Gives back a request's slot, and its client's.
  void GiveSlotLocked(const std::string& client) {
    --in_flight_;
    const auto it = in_flight_by_client_.find(client);
    if (it != in_flight_by_client_.end() && --it->second == 0) in_flight_by_client_.erase(it);
  }
  // Publishes the job's snapshot to kadr.jobs (the recorder's), without waiting.
  void PublishSnapshot(const jobs::JobRecord& record);
  // Joins the threads of asynchronous requests that have ended.
  void ReapAsync();
  // Stops every request still waiting and joins the asynchronous ones.
  void StopRequests();

  // Models and workers; need mu_.
  std::vector<std::string> KnownModelsLocked() const;
  std::string DefaultModelLocked(std::int64_t now) const;
  int LiveWorkersLocked(const std::string& model, std::int64_t now) const;
  Result<ModelView> ResolveModelLocked(const std::optional<std::string>& requested,
                                       std::int64_t now) const;

  const ConfiguredModel* FindConfigured(std::string_view name) const {
    for (const auto& m : configured_) {
      if (m.name == name) return &m;
    }
    return nullptr;
  }
  Gauge& InFlightGauge(const std::string& model) {
    return metrics_.GetGauge(kInFlightName, kInFlightHelp, {{"model", model}});
  }
  std::int64_t NowMs() const { return options_.now_ms ? options_.now_ms() : UnixMillis(); }

  const GatewayOptions options_;
  bus::FramePublisher& publisher_;
  bus::FrameSubscriber& replies_;
  bus::FrameSubscriber& workers_;
  const std::vector<ConfiguredModel> configured_;
  const std::function<Status()> broker_check_;
  MetricsRegistry& metrics_;
  engine::Router router_;  // the image requests waiting for their answer
  // Room on the broker, shared with this process's other producers.
  const std::shared_ptr<engine::Admission> admission_ =
      options_.admission ? options_.admission : std::make_shared<engine::Admission>();
  std::stop_source stopping_;  // requested when Run() ends: waiting requests answer 503

  mutable std::mutex mu_;                     // guards everything below
  std::map<std::string, std::thread> async_;  // asynchronous requests' threads, by job id
  std::vector<std::string> async_done_;       // of those, the ones that have ended
  std::size_t in_flight_ = 0;  // slots taken: unfinished requests plus uploads being converted
  std::map<std::string, std::size_t> in_flight_by_client_;  // of those, by remote address
  bool stopped_ = false;
  std::optional<Status> broker_;  // the last broker check; none before the first
  std::map<std::string, protocol::WorkerHeartbeat> workers_by_id_;
  std::map<std::string, protocol::WorkerHeartbeat> announced_;  // latest per model
  std::map<std::string, std::int64_t> last_loss_ms_;            // per model, Unix ms
};

// ---------------------------------------------------------------------------------------------
// Uploads

HttpResponse GatewayService::Impl::Submit(const HttpRequest& req, bool async) {
  const auto received = SteadyClock::now();
  auto upload = detail::ParseUpload(req, options_.max_timeout);
  if (!upload) return ErrorResponse(upload.error());
  const auto bytes = imaging::AsBytes(upload->image);
  if (video::SniffVideo(bytes)) return SubmitVideo(*upload, async);
  if (bytes.size() > options_.max_image_bytes) {
    return ErrorResponse(TooLargeError("image is " + std::to_string(bytes.size()) +
                                       " bytes, over the limit of " +
                                       std::to_string(options_.max_image_bytes) + " bytes"));
  }
  auto info = imaging::ProbeImage(bytes, options_.limits);
  if (!info) {
    if (imaging::SniffFormat(bytes) == imaging::ImageFormat::kUnknown) {
      return ErrorResponse(UnsupportedError(
          "the upload is neither an image (JPEG, PNG, BMP, WebP, TIFF) nor a video (MP4, MOV, "
          "MKV, AVI)"));
    }
    return ErrorResponse(info.error());
  }

  const std::int64_t now = NowMs();
  ModelView model;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return ErrorResponse(UnavailableError("the gateway is shutting down"));
    auto resolved = ResolveModelLocked(upload->model, now);
    if (!resolved) return ErrorResponse(resolved.error());
    model = std::move(resolved).value();
    if (broker_ && !broker_->ok()) {
      return ErrorResponse(UnavailableError("the broker is unavailable: " + broker_->message()));
    }
  }
  auto classes = detail::ResolveClasses(upload->classes, model.labels, model.name);
  if (!classes) return ErrorResponse(classes.error());

  // Take a slot before the costly part (decoding and re-encoding).
  const std::string& client = req.remote_addr;
  {
    std::lock_guard lock(mu_);
    if (in_flight_ >= options_.max_in_flight) {
      return ErrorResponse(ResourceExhaustedError("the gateway has " + std::to_string(in_flight_) +
                                                  " requests in flight, its limit; retry later"));
    }
    std::size_t& mine = in_flight_by_client_[client];
    if (mine >= options_.max_in_flight_per_client) {
      return ErrorResponse(
          ResourceExhaustedError("this client has " + std::to_string(mine) +
                                 " requests in flight, its share of the gateway; retry later"));
    }
    ++mine;
    ++in_flight_;
  }
  Gauge& in_flight = InFlightGauge(model.name);
  in_flight.Add(1);
  auto release_slot = [&] {
    {
      std::lock_guard lock(mu_);
      GiveSlotLocked(client);
    }
    in_flight.Sub(1);
  };

  auto wire = detail::ToWireImage(bytes, *info, options_.limits, options_.jpeg_quality,
                                  options_.max_frame_side);
  if (!wire) {
    release_slot();
    return ErrorResponse(wire.error());
  }

  const std::string id = jobs::NewJobId(now);
  const std::chrono::milliseconds timeout = upload->timeout.value_or(options_.default_timeout);
  jobs::JobRecord record;
  record.id = id;
  record.kind = jobs::JobKind::kImage;
  record.model = model.name;
  record.state = jobs::JobState::kQueued;
  record.created_ms = now;
  record.updated_ms = now;
  record.frames_total = 1;
  record.source_name = upload->filename;
  record.deadline_ms = now + timeout.count();

  // The job exists before its frame does: an asynchronous client may ask for it as soon as
  // it has the id, so its snapshot must be on the broker before the 202.
  if (async) {
    if (Status s = detail::PublishAndWait(publisher_, jobs::JobEventMessage(record),
                                          options_.snapshot_timeout);
        !s.ok()) {
      release_slot();
      spdlog::warn("job not recorded job={} error=\"{}\"", id, s.ToString());
      return ErrorResponse(UnavailableError("cannot record the job on the broker: " + s.message()));
    }
  } else {
    PublishSnapshot(record);
  }

  engine::BusDispatchOptions dispatch;
  dispatch.model = model.name;
  dispatch.reply_to = options_.reply_topic;
  dispatch.annotated_to = options_.reply_topic;
  dispatch.source = upload->filename;
  dispatch.options.confidence = upload->confidence;
  dispatch.options.iou = upload->iou;
  dispatch.options.classes = std::move(classes).value();
  dispatch.draw = upload->draw;
  dispatch.admission = admission_.get();
  dispatch.client = client;
  if (wire->scaled) {
    dispatch.report_width = wire->width;
    dispatch.report_height = wire->height;
  }
  engine::RunOptions run;
  run.id = id;
  run.bare_id = true;
  run.mode = engine::Mode::kLossless;
  run.window = 1;
  run.answer_timeout = timeout;
  run.fail_on_timeout = true;
  run.send_attempts = 3;  // a frame the broker loses on a fail-over is sent again
  run.fail_on_send_error = true;
  // A synchronous client gets the annotated image in its answer; an asynchronous one reads
  // it from the job store, where the recorder puts it.
  run.want_image = upload->draw && !async;
  run.image_topic = options_.reply_topic;
  auto request = std::make_shared<ImageRequest>(record, std::move(dispatch), std::move(run),
                                                publisher_, std::move(wire->jpeg), received);
  spdlog::debug("frame ready job={} model={} converted={} format={} ms={:.1f}", id, model.name,
                wire->converted, imaging::FormatName(info->format), MillisSince(received));

  if (async) {
    {
      std::lock_guard lock(mu_);
      if (stopped_) {
        GiveSlotLocked(client);
        in_flight.Sub(1);
        return ErrorResponse(UnavailableError("the gateway is shutting down"));
      }
      async_[id] = std::thread([this, request] {
        (void)Finish(*request, request->Execute(router_, stopping_.get_token()));
        std::lock_guard done(mu_);
        async_done_.push_back(request->record().id);
      });
    }
    // The frame is on the broker before the client hears of the job (the thread settles it).
    if (Status sent = request->WaitDelivered(); !sent.ok()) {
      HttpResponse r = ErrorResponse(sent.code() == StatusCode::kCancelled
                                         ? UnavailableError("the gateway is shutting down")
                                         : SendFailure(sent));
      r.headers.emplace(kJobIdHeader, id);
      return r;
    }
    HttpResponse r = HttpResponse::Json(jobs::JobToJson(record), 202);
    r.headers.emplace("Location", jobs::JobPath(id));
    r.headers.emplace(kJobIdHeader, id);
    return r;
  }

  const Status outcome = Finish(*request, request->Execute(router_, stopping_.get_token()));
  if (!outcome.ok()) {
    HttpResponse r = ErrorResponse(outcome);
    r.headers.emplace(kJobIdHeader, id);
    return r;
  }
  const engine::Released& answer = *request->released();
  if (AcceptsJpeg(req) && !answer.image.empty()) return JpegResponse(answer.image, id);
  jobs::JobRecord answered = record;
  answered.has_image = !answer.image.empty();
  HttpResponse r = HttpResponse::Json(
      jobs::ResultToJson(answered, *answer.result, Timings(*request, MillisSince(received))));
  r.headers.emplace(kJobIdHeader, id);
  return r;
}

HttpResponse GatewayService::Impl::SubmitVideo(const detail::Upload& upload, bool async) {
  if (!async) {
    return ErrorResponse(UnsupportedError(
        "videos are processed as jobs: POST them to /api/v1/jobs and follow the job"));
  }
  if (options_.video_dir.empty()) {
    return ErrorResponse(UnsupportedError(
        "this gateway does not take videos (it has no video folder; start it with --video-dir)"));
  }
  if (upload.image.size() > options_.max_video_bytes) {
    return ErrorResponse(TooLargeError("video is " + std::to_string(upload.image.size()) +
                                       " bytes, over the limit of " +
                                       std::to_string(options_.max_video_bytes) + " bytes"));
  }
  ModelView model;
  const std::int64_t now = NowMs();
  {
    std::lock_guard lock(mu_);
    if (stopped_) return ErrorResponse(UnavailableError("the gateway is shutting down"));
    auto resolved = ResolveModelLocked(upload.model, now);
    if (!resolved) return ErrorResponse(resolved.error());
    model = std::move(resolved).value();
    if (broker_ && !broker_->ok()) {
      return ErrorResponse(UnavailableError("the broker is unavailable: " + broker_->message()));
    }
  }
  auto classes = detail::ResolveClasses(upload.classes, model.labels, model.name);
  if (!classes) return ErrorResponse(classes.error());
  detail::VideoRequest request;
  request.model = model.name;
  request.options.confidence = upload.confidence;
  request.options.iou = upload.iou;
  request.options.classes = std::move(classes).value();
  request.draw = upload.draw;
  request.filename = upload.filename;
  request.frame_timeout_ms = upload.timeout ? upload.timeout->count() : 0;
  detail::VideoUploadOptions vo;
  vo.dir = options_.video_dir;
  vo.snapshot_timeout = options_.snapshot_timeout;
  vo.claim_timeout = options_.video_claim_timeout;
  vo.limits = {.max_pixels = options_.max_video_pixels,
               .max_side = options_.max_video_side,
               .max_frames = options_.max_video_frames,
               .max_seconds = options_.max_video_seconds};
  vo.max_dir_bytes = options_.max_video_dir_bytes;
  return detail::SubmitVideo(vo, upload.image, request, now, publisher_);
}

// ---------------------------------------------------------------------------------------------
// Image requests

Status GatewayService::Impl::Finish(ImageRequest& request, const Status& run_status) {
  const jobs::JobRecord& record = request.record();
  const std::string& id = record.id;
  Status outcome;
  bool tell_recorder = true;  // a failure the worker's own answer does not report
  if (run_status.ok() && request.released() && request.released()->result) {
    const protocol::FrameResult& result = *request.released()->result;
    tell_recorder = false;
    switch (result.status) {
      case protocol::FrameStatus::kOk:
        break;
      case protocol::FrameStatus::kSkipped:
        outcome = DeadlineExceededError(result.error.message());
        break;
      case protocol::FrameStatus::kError:
        outcome =
            result.error.ok() ? InternalError("the worker failed without a reason") : result.error;
        break;
    }
  } else if (run_status.ok()) {
    outcome = InternalError("the frame left without an answer");
  } else {
    switch (run_status.code()) {
      case StatusCode::kDeadlineExceeded:
        outcome = request.sent()
                      ? DeadlineExceededError(
                            "no result from a worker of model '" + record.model + "' within " +
                            std::to_string(record.deadline_ms - record.created_ms) + " ms")
                      : DeadlineExceededError(
                            "the image waited for room on the broker until "
                            "its deadline: " +
                            run_status.message());
        break;
      case StatusCode::kCancelled:
        // The frame is on the broker: a worker's answer still reaches the job's record.
        outcome = UnavailableError("the gateway is shutting down");
        tell_recorder = false;
        break;
      default:
        outcome = SendFailure(run_status);
        break;
    }
  }
  const std::string outcome_name =
      outcome.ok() ? "done" : std::string(StatusCodeName(outcome.code()));
  metrics_.GetCounter(kJobsName, kJobsHelp, {{"model", record.model}, {"outcome", outcome_name}})
      .Increment();
  if (outcome.ok()) {
    spdlog::debug("job done job={} model={}", id, record.model);
  } else {
    spdlog::info("job failed job={} model={} error=\"{}\"", id, record.model, outcome.ToString());
    if (tell_recorder) {
      jobs::JobRecord failed = record;
      failed.state = jobs::JobState::kFailed;
      failed.error = outcome;
      failed.updated_ms = NowMs();
      PublishSnapshot(failed);
    }
  }
  {
    std::lock_guard lock(mu_);
    GiveSlotLocked(request.client());
  }
  InFlightGauge(record.model).Sub(1);
  return outcome;
}

std::map<std::string, double> GatewayService::Impl::Timings(const ImageRequest& request,
                                                            double total_ms) const {
  std::map<std::string, double> t{{"gateway", request.gateway_ms()}, {"total", total_ms}};
  const auto& answer = request.released();
  if (request.result_ms() && answer && answer->result) {
    const auto& worker = answer->result->result.timings_ms;
    const auto it = worker.find("total");
    const double worker_ms = it == worker.end() ? 0.0 : it->second;
    t["queue"] = std::max(0.0, *request.result_ms() - request.gateway_ms() - worker_ms);
  }
  return t;
}

void GatewayService::Impl::PublishSnapshot(const jobs::JobRecord& record) {
  const std::string id = record.id;
  const Status s = publisher_.Publish(
      jobs::JobEventMessage(record), [id](const Status& st, const bus::AckToken&) {
        if (!st.ok())
          spdlog::warn("job snapshot not delivered job={} error=\"{}\"", id, st.ToString());
      });
  if (!s.ok()) spdlog::warn("job snapshot not published job={} error=\"{}\"", id, s.ToString());
}

void GatewayService::Impl::ReapAsync() {
  std::vector<std::thread> ended;
  {
    std::lock_guard lock(mu_);
    for (const std::string& id : async_done_) {
      if (auto it = async_.find(id); it != async_.end()) {
        ended.push_back(std::move(it->second));
        async_.erase(it);
      }
    }
    async_done_.clear();
  }
  for (auto& t : ended) t.join();  // each has ended or is about to
}

void GatewayService::Impl::StopRequests() {
  stopping_.request_stop();
  std::map<std::string, std::thread> all;
  {
    std::lock_guard lock(mu_);
    all.swap(async_);
    async_done_.clear();
  }
  for (auto& [id, t] : all) t.join();
}

// ---------------------------------------------------------------------------------------------
// Models and workers

std::vector<std::string> GatewayService::Impl::KnownModelsLocked() const {
  std::vector<std::string> names;
  for (const auto& m : configured_) names.push_back(m.name);
  for (const auto& [name, hb] : announced_) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  return names;
}

int GatewayService::Impl::LiveWorkersLocked(const std::string& model, std::int64_t now) const {
  int n = 0;
  for (const auto& [id, hb] : workers_by_id_) {
    if (hb.model == model && protocol::IsAlive(hb, now)) ++n;
  }
  return n;
}

std::string GatewayService::Impl::DefaultModelLocked(std::int64_t now) const {
  if (!options_.default_model.empty()) return options_.default_model;
  if (!configured_.empty()) return configured_.front().name;
  for (const auto& [name, hb] : announced_) {
    if (LiveWorkersLocked(name, now) > 0) return name;
  }
  return {};
}

Result<GatewayService::Impl::ModelView> GatewayService::Impl::ResolveModelLocked(
    const std::optional<std::string>& requested, std::int64_t now) const {
  const std::string name = requested ? *requested : DefaultModelLocked(now);
  if (name.empty()) {
    return NotFoundError("no model given and no default model; available: " +
                         JoinNames(KnownModelsLocked()));
  }
  const ConfiguredModel* conf = FindConfigured(name);
  const auto announced = announced_.find(name);
  if (conf == nullptr && announced == announced_.end()) {
    return NotFoundError("unknown model '" + name +
                         "'; available: " + JoinNames(KnownModelsLocked()));
  }
  if (LiveWorkersLocked(name, now) == 0) {
    return UnavailableError("no live worker serves model '" + name + "'");
  }
  ModelView view{name, {}};
  if (conf != nullptr && !conf->labels.empty()) {
    view.labels = conf->labels;
  } else if (announced != announced_.end()) {
    view.labels = announced->second.labels;
  }
  return view;
}

// ---------------------------------------------------------------------------------------------
// Run

Status GatewayService::Impl::Run(const std::stop_token& stop) {
  spdlog::info("gateway started reply_topic={} models={} max_in_flight={}", options_.reply_topic,
               configured_.size(), options_.max_in_flight);
  auto next_check = SteadyClock::now();
  while (!stop.stop_requested()) {
    if (SteadyClock::now() >= next_check) {
      CheckBroker();
      PruneWorkers();
      RefreshWorkerGauges();
      next_check = SteadyClock::now() + options_.broker_check_interval;
    }
    const auto replies = replies_.Poll(kPollBatch, options_.poll_timeout, {});
    const std::int64_t received_ms = NowMs();
    for (const auto& in : replies) {
      // Not a request of this gateway's (any more): late, or redelivered. The recorder has
      // what it says.
      if (!router_.Route(in, received_ms)) {
        spdlog::debug("reply ignored, no request waits for it topic={} offset={}", in.token.topic,
                      in.token.offset);
      }
      replies_.Ack(in.token);
    }
    const auto beats = workers_.Poll(kPollBatch, std::chrono::milliseconds(0), {});
    for (const auto& in : beats) {
      HandleHeartbeat(in);
      workers_.Ack(in.token);
    }
    if (!beats.empty()) RefreshWorkerGauges();
    ReapAsync();
  }
  std::size_t waiting = 0;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    waiting = in_flight_;
  }
  StopRequests();  // every waiting request answers 503 "shutting down"
  (void)replies_.Close();
  (void)workers_.Close();
  spdlog::info("gateway stopped unfinished_jobs={}", waiting);
  return Status::Ok();
}

void GatewayService::Impl::HandleHeartbeat(const bus::InboundMessage& in) {
  const std::string text(in.message.value.begin(), in.message.value.end());
  auto parsed = protocol::WorkerHeartbeatFromJson(text);
  if (!parsed) {
    spdlog::warn("worker announcement ignored offset={} error=\"{}\"", in.token.offset,
                 parsed.error().ToString());
    return;
  }
  const protocol::WorkerHeartbeat& hb = *parsed;
  // Frames deleted before a worker read them: this gateway's among them are sent again, or
  // fail with an error that says so, now rather than at their timeout.
  for (const auto& loss : hb.losses) {
    const std::size_t hit = router_.OnDeletedUnread(loss);
    if (hit > 0) {
      spdlog::error(
          "frames deleted by the broker before a worker read them topic={} partition={} "
          "from_offset={} to_offset={} requests_hit={} worker={}",
          loss.topic, loss.partition, loss.from, loss.to, hit, hb.worker_id);
    }
  }
  {
    std::lock_guard lock(mu_);
    if (!hb.losses.empty()) last_loss_ms_[hb.model] = NowMs();
    auto known = workers_by_id_.find(hb.worker_id);
    if (known != workers_by_id_.end() && known->second.ts_ms > hb.ts_ms) return;  // reordered
    if (hb.state == "stopping") {
      if (known != workers_by_id_.end()) {
        spdlog::info("worker left worker={} model={}", hb.worker_id, hb.model);
        workers_by_id_.erase(known);
      }
    } else {
      if (known == workers_by_id_.end()) {
        spdlog::info("worker joined worker={} model={}", hb.worker_id, hb.model);
      }
      workers_by_id_[hb.worker_id] = hb;
    }
    announced_[hb.model] = hb;
  }
  const MetricLabels base = {{"model", hb.model}, {"worker", hb.worker_id}};
  const std::pair<const char*, std::uint64_t> outcomes[] = {{"processed", hb.processed},
                                                            {"skipped", hb.skipped},
                                                            {"failed", hb.failed},
                                                            {"lost", hb.lost}};
  for (const auto& [outcome, n] : outcomes) {
    MetricLabels labels = base;
    labels.emplace_back("outcome", outcome);
    metrics_.GetGauge(kWorkerFramesName, kWorkerFramesHelp, labels).Set(static_cast<double>(n));
  }
}

void GatewayService::Impl::CheckBroker() {
  Status status;
  try {
    if (broker_check_) status = broker_check_();
  } catch (const std::exception& e) {
    status = UnavailableError(std::string("broker check failed: ") + e.what());
  }
  {
    std::lock_guard lock(mu_);
    if (broker_ && broker_->ok() != status.ok()) {
      if (status.ok()) {
        spdlog::info("broker reachable again");
      } else {
        spdlog::warn("broker unreachable error=\"{}\"", status.ToString());
      }
    }
    broker_ = status;
  }
  metrics_.GetGauge(kBrokerUpName, kBrokerUpHelp).Set(status.ok() ? 1 : 0);
}

void GatewayService::Impl::PruneWorkers() {
  const std::int64_t now = NowMs();
  std::lock_guard lock(mu_);
  std::erase_if(workers_by_id_, [&](const auto& entry) {
    const auto& hb = entry.second;
    return !protocol::IsAlive(hb, now) && now - hb.ts_ms > kForgetDeadWorkerMs;
  });
}

void GatewayService::Impl::RefreshWorkerGauges() {
  const std::int64_t now = NowMs();
  std::vector<std::pair<std::string, int>> counts;
  {
    std::lock_guard lock(mu_);
    for (const auto& name : KnownModelsLocked()) {
      counts.emplace_back(name, LiveWorkersLocked(name, now));
    }
  }
  for (const auto& [name, n] : counts) {
    metrics_.GetGauge(kModelWorkersName, kModelWorkersHelp, {{"model", name}}).Set(n);
  }
}

// ---------------------------------------------------------------------------------------------
// Models, readiness, metrics

HttpResponse GatewayService::Impl::Models() {
  const std::int64_t now = NowMs();
  json models = json::array();
  std::string default_model;
  {
    std::lock_guard lock(mu_);
    default_model = DefaultModelLocked(now);
    const auto entry = [&](const std::string& name, const ConfiguredModel* conf,
                           const protocol::WorkerHeartbeat* hb) {
      const int workers = LiveWorkersLocked(name, now);
      std::string family = conf ? conf->family : "";
      std::string task = conf ? conf->task : "";
      int width = conf ? conf->input_width : 0;
      int height = conf ? conf->input_height : 0;
      std::vector<std::string> labels = conf ? conf->labels : std::vector<std::string>{};
      if (hb != nullptr) {  // fill what the local registry does not know
        if (family.empty()) family = hb->family;
        if (task.empty()) task = hb->task;
        if (width == 0 && height == 0) {
          width = hb->input_width;
          height = hb->input_height;
        }
        if (labels.empty()) labels = hb->labels;
      }
      json m = {{"name", name},
                {"family", family},
                {"state", conf ? conf->state : "remote"},
                {"available", workers > 0},
                {"workers", workers},
                {"input", {{"width", width}, {"height", height}}},
                {"labels", labels},
                {"task", task.empty() ? "detect" : task}};
      if (conf && conf->error && !conf->error->ok()) {
        m["error"] = {{"code", StatusCodeName(conf->error->code())},
                      {"message", conf->error->message()}};
      }
      models.push_back(std::move(m));
    };
    for (const auto& conf : configured_) {
      const auto it = announced_.find(conf.name);
      entry(conf.name, &conf, it == announced_.end() ? nullptr : &it->second);
    }
    for (const auto& [name, hb] : announced_) {
      if (FindConfigured(name) == nullptr) entry(name, nullptr, &hb);
    }
  }
  json body = {{"default", default_model.empty() ? json(nullptr) : json(default_model)},
               {"models", std::move(models)}};
  return HttpResponse::Json(Dump(body));
}

HttpResponse GatewayService::Impl::Ready() {
  const std::int64_t now = NowMs();
  json models = json::array();
  bool ready = true;
  json broker;
  std::vector<std::string> losing_models;
  {
    std::lock_guard lock(mu_);
    if (!broker_) {
      ready = false;
      broker = {{"ok", false}, {"error", "not checked yet"}};
    } else if (!broker_->ok()) {
      ready = false;
      broker = {{"ok", false}, {"error", broker_->ToString()}};
    } else {
      broker = {{"ok", true}};
    }
    for (const auto& name : KnownModelsLocked()) {
      const ConfiguredModel* conf = FindConfigured(name);
      const int workers = LiveWorkersLocked(name, now);
      // Every configured model that can work needs a worker; announced-only ones are extra.
      const bool required = conf != nullptr && conf->state != "failed";
      if (required && workers == 0) ready = false;
      std::uint64_t lost = 0;
      for (const auto& [id, hb] : workers_by_id_) {
        if (hb.model == name) lost += hb.lost;
      }
      const auto last_loss = last_loss_ms_.find(name);
      const bool losing = options_.loss_window.count() > 0 && last_loss != last_loss_ms_.end() &&
                          now - last_loss->second < options_.loss_window.count();
      if (losing) {
        ready = false;
        losing_models.push_back(name);
      }
      models.push_back({{"name", name},
                        {"state", conf != nullptr ? conf->state : "remote"},
                        {"workers", workers},
                        {"required", required},
                        {"frames_lost", lost},
                        {"losing_frames", losing}});
    }
  }
  json body = {{"status", ready ? "ready" : "not_ready"},
               {"broker", std::move(broker)},
               {"models", std::move(models)}};
  if (!losing_models.empty()) {
    body["losing_frames"] = {
        {"models", losing_models},
        {"detail",
         "the broker deleted frames before a worker read them: workers too slow for the load, "
         "or frames produced past the admission budget (docs/operations.md)"}};
  }
  return HttpResponse::Json(Dump(body), ready ? 200 : 503);
}

HttpResponse GatewayService::Impl::Metrics() {
  RefreshWorkerGauges();
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_.RenderPrometheus();
  return r;
}

http::Handler GatewayService::Impl::Instrument(
    const std::string& route, std::function<HttpResponse(const HttpRequest&)> handler) {
  Histogram& latency =
      metrics_.GetHistogram(kLatencyName, kLatencyHelp, kLatencySecondsBuckets, {{"route", route}});
  return [this, route, &latency, handler = std::move(handler)](const HttpRequest& req) {
    const auto start = SteadyClock::now();
    HttpResponse response;
    try {
      response = handler(req);
    } catch (const std::exception& e) {
      spdlog::error("handler failed route={} error=\"{}\"", route, e.what());
      response = ErrorResponse(InternalError(std::string("unexpected error: ") + e.what()));
    }
    latency.Observe(MillisSince(start) / 1000.0);
    metrics_
        .GetCounter(
            kRequestsName, kRequestsHelp,
            {{"route", route}, {"method", req.method}, {"code", std::to_string(response.status)}})
        .Increment();
    return response;
  };
}

Status GatewayService::Impl::Init() {
  return options_.video_dir.empty() ? Status::Ok() : detail::PrepareVideoFolder(options_.video_dir);
}

Status GatewayService::Impl::RegisterRoutes(http::HttpServer& server) {
  using Fn = std::function<HttpResponse(const HttpRequest&)>;
  // Who may call each route (docs/security.md) and how large its body may be: an image for
  // detect, an image or a video for a job, with room for the multipart framing around it.
  const std::size_t image_body = options_.max_image_bytes + kUploadFramingBytes;
  const std::size_t job_body =
      std::max(options_.max_image_bytes,
               options_.video_dir.empty() ? std::size_t{0} : options_.max_video_bytes) +
      kUploadFramingBytes;
  http::RouteOptions detect{.access = http::Access::kOperate, .max_body_bytes = image_body};
  // A job's upload (up to a video's size) is spooled to the video folder as it arrives, not
  // held in memory (http::RouteOptions::spool_dir).
  http::RouteOptions submit{.access = http::Access::kOperate,
                            .max_body_bytes = job_body,
                            .spool_dir = options_.video_dir};
  http::RouteOptions read{.access = http::Access::kRead};
  http::RouteOptions health{.access = http::Access::kPublic, .served_when_busy = true};
  struct Entry {
    const char* method;
    const char* path;
    Fn fn;
    http::RouteOptions options;
  };
  const Entry routes[] = {
      {"POST", "/api/v1/detect", [this](const HttpRequest& r) { return Submit(r, false); }, detect},
      {"POST", "/api/v1/jobs", [this](const HttpRequest& r) { return Submit(r, true); }, submit},
      {"GET", "/api/v1/models", [this](const HttpRequest&) { return Models(); }, read},
      {"GET", "/healthz",
       [](const HttpRequest&) { return HttpResponse::Json(R"({"status":"ok"})"); }, health},
      {"GET", "/readyz", [this](const HttpRequest&) { return Ready(); }, health},
      // Metrics name models, streams and clients' load: for viewers and above.
      {"GET", "/metrics", [this](const HttpRequest&) { return Metrics(); }, read},
  };
  for (const auto& route : routes) {
    RETURN_IF_ERROR(
        server.Route(route.method, route.path, Instrument(route.path, route.fn), route.options));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// GatewayService

Result<std::unique_ptr<GatewayService>> GatewayService::Create(
    GatewayOptions options, bus::FramePublisher& publisher, bus::FrameSubscriber& replies,
    bus::FrameSubscriber& workers, std::vector<ConfiguredModel> configured,
    std::function<Status()> broker_check, MetricsRegistry& metrics) {
  RETURN_IF_ERROR(ValidateOptions(options));
  auto impl = std::make_unique<Impl>(std::move(options), publisher, replies, workers,
                                     std::move(configured), std::move(broker_check), metrics);
  RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<GatewayService>(new GatewayService(std::move(impl)));
}

GatewayService::GatewayService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GatewayService::~GatewayService() = default;

Status GatewayService::ValidateOptions(const GatewayOptions& o) {
  if (!protocol::IsValidTopicName(o.reply_topic)) {
    return InvalidArgumentError("gateway reply_topic is not a valid topic name: '" + o.reply_topic +
                                "'");
  }
  if (o.max_in_flight == 0) return InvalidArgumentError("gateway max_in_flight is 0");
  if (o.max_in_flight_per_client == 0) {
    return InvalidArgumentError("gateway max_in_flight_per_client is 0");
  }
  if (o.max_frame_side != 0 && o.max_frame_side < 32) {
    return InvalidArgumentError("gateway max_frame_side must be 0 (no limit) or at least 32");
  }
  if (o.snapshot_timeout.count() <= 0) {
    return InvalidArgumentError("gateway snapshot_timeout must be positive");
  }
  if (o.default_timeout.count() <= 0 || o.max_timeout < o.default_timeout) {
    return InvalidArgumentError("gateway default_timeout must be positive and at most max_timeout");
  }
  if (o.jpeg_quality < 1 || o.jpeg_quality > 100) {
    return InvalidArgumentError("gateway jpeg_quality must be in 1..100");
  }
  if (o.broker_check_interval.count() <= 0) {
    return InvalidArgumentError("gateway broker_check_interval must be positive");
  }
  if (o.poll_timeout.count() < 0) return InvalidArgumentError("gateway poll_timeout is negative");
  if (o.video_claim_timeout.count() <= 0) {
    return InvalidArgumentError("gateway video_claim_timeout must be positive");
  }
  return Status::Ok();
}

Status GatewayService::RegisterRoutes(http::HttpServer& server) {
  return impl_->RegisterRoutes(server);
}

Status GatewayService::Run(const std::stop_token& stop) { return impl_->Run(stop); }

}  // namespace kadr::gateway
