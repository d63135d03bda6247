#include "gateway/gateway_service.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "gateway/detail/responses.h"
#include "gateway/detail/upload.h"
#include "gateway/detail/video_jobs.h"
#include "gateway/detail/wire_image.h"
#include "http/server.h"
#include "protocol/frame.h"
#include "protocol/heartbeat.h"
#include "video/video.h"
#include "viewer/job_json.h"
#include "viewer/viewer_service.h"

namespace kadr::gateway {
namespace {

using http::HttpRequest;
using http::HttpResponse;
using nlohmann::json;
namespace header = protocol::header;
using detail::Dump;
using detail::ErrorResponse;

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

// One upload's job. Guarded by Impl::mu_ except where noted.
struct Job {
  viewer::JobRecord record;  // state, error, result_json, has_image as the API shows them
  bool draw = true;
  std::chrono::milliseconds timeout{0};
  SteadyClock::time_point received;  // request arrived (set before publishing, then const)
  SteadyClock::time_point deadline;  // received + timeout
  double gateway_ms = 0;             // checking, converting and publishing
  std::optional<double> result_ms;   // request -> result arrival
  std::optional<protocol::FrameResult> result;
  std::vector<std::uint8_t> image;  // the annotated JPEG
  bool finished = false;
  bool wait_for_image = false;  // result is in, its annotated image is on its way
  std::uint64_t bytes = 0;      // counted in Impl::job_bytes_
  Gauge* in_flight = nullptr;   // kadr_gateway_in_flight{model}
  std::list<std::string>::iterator order;
  std::condition_variable done;  // notified when finished
};

class GatewayService::Impl {
 public:
  Impl(GatewayOptions options, bus::FramePublisher& publisher, bus::FrameSubscriber& replies,
       bus::FrameSubscriber& workers, std::vector<ConfiguredModel> configured,
       std::function<Status()> broker_check, MetricsRegistry& metrics,
       viewer::HistoryStore* history)
      : options_(std::move(options)),
        publisher_(publisher),
        replies_(replies),
        workers_(workers),
        configured_(std::move(configured)),
        broker_check_(std::move(broker_check)),
        metrics_(metrics),
        history_(history) {
    metrics_.GetGauge(kInFlightLimitName, kInFlightLimitHelp)
        .Set(static_cast<double>(options_.max_in_flight));
    metrics_.GetGauge(kBrokerUpName, kBrokerUpHelp).Set(0);
    for (const auto& m : configured_) {
      InFlightGauge(m.name);
      metrics_.GetGauge(kModelWorkersName, kModelWorkersHelp, {{"model", m.name}});
    }
    if (!options_.video_dir.empty()) {
      detail::VideoJobsOptions vo;
      vo.dir = options_.video_dir;
      vo.reply_topic = options_.reply_topic;
      vo.window = options_.video_window;
      vo.max_running = options_.max_video_jobs;
      vo.max_queued = options_.max_queued_video_jobs;
      vo.max_kept = options_.max_videos_kept;
      vo.frame_timeout = options_.video_frame_timeout;
      vo.now_ms = options_.now_ms;
      vo.history = history_;
      video_ = std::make_unique<detail::VideoJobs>(std::move(vo), publisher_, metrics_);
    }
  }

  ~Impl() {
    video_.reset();  // joins the video jobs' threads
    std::lock_guard lock(lifetime_->mu);
    lifetime_->closed = true;
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

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
  HttpResponse Cancel(const HttpRequest& req);
  HttpResponse GetVideo(const HttpRequest& req);
  HttpResponse GetJob(const HttpRequest& req);
  HttpResponse GetResult(const HttpRequest& req);
  HttpResponse GetImage(const HttpRequest& req);
  HttpResponse Models();
  HttpResponse Ready();
  HttpResponse Metrics();
  http::Handler Instrument(const std::string& route,
                           std::function<HttpResponse(const HttpRequest&)> handler);

  // Run()'s work.
  void HandleReply(const bus::InboundMessage& in);
  void HandleHeartbeat(const bus::InboundMessage& in);
  void CheckBroker();
  void ExpireDeadlines();
  void PruneWorkers();
  void RefreshWorkerGauges();

  // Jobs; all *Locked methods need mu_.
  void InsertLocked(const std::shared_ptr<Job>& job);
  void RemoveLocked(Job& job);
  void FinishLocked(Job& job, const Status& error);
  void ExpireLocked(Job& job);
  void EvictLocked();
  void SetImageLocked(Job& job, std::vector<std::uint8_t> image);
  std::map<std::string, double> TimingsLocked(const Job& job, double total_ms) const;

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
  viewer::HistoryStore* const history_;
  std::unique_ptr<detail::VideoJobs> video_;  // when options_.video_dir is set

  // Delivery callbacks that arrive after destruction find `closed` and do nothing.
  struct Lifetime {
    std::mutex mu;
    bool closed = false;
  };
  std::shared_ptr<Lifetime> lifetime_ = std::make_shared<Lifetime>();

  mutable std::mutex mu_;                                          // guards everything below
  std::unordered_map<std::string, std::shared_ptr<Job>> jobs_;     // kept jobs by id
  std::unordered_map<std::string, std::shared_ptr<Job>> pending_;  // the unfinished ones
  std::list<std::string> order_;                                   // job ids, oldest first
  std::uint64_t job_bytes_ = 0;
  std::size_t in_flight_ = 0;  // slots taken: unfinished jobs plus uploads being converted
  bool stopped_ = false;
  std::optional<Status> broker_;  // the last broker check; none before the first
  std::map<std::string, protocol::WorkerHeartbeat> workers_by_id_;
  std::map<std::string, protocol::WorkerHeartbeat> announced_;  // latest per model
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
  {
    std::lock_guard lock(mu_);
    if (in_flight_ >= options_.max_in_flight) {
      return ErrorResponse(ResourceExhaustedError("the gateway has " + std::to_string(in_flight_) +
                                                  " requests in flight, its limit; retry later"));
    }
    ++in_flight_;
  }
  Gauge& in_flight = InFlightGauge(model.name);
  in_flight.Add(1);

  auto wire = detail::ToWireImage(bytes, *info, options_.limits, options_.jpeg_quality);
  if (!wire) {
    {
      std::lock_guard lock(mu_);
      --in_flight_;
    }
    in_flight.Sub(1);
    return ErrorResponse(wire.error());
  }

  auto job = std::make_shared<Job>();
  const std::string id = detail::NewJobId();
  const std::chrono::milliseconds timeout = upload->timeout.value_or(options_.default_timeout);
  job->record.id = id;
  job->record.kind = "image";
  job->record.model = model.name;
  job->record.state = "queued";
  job->record.created_ms = now;
  job->record.updated_ms = now;
  job->record.frames_total = 1;
  job->record.source_name = upload->filename;
  job->draw = upload->draw;
  job->timeout = timeout;
  job->received = received;
  job->deadline = received + timeout;
  job->in_flight = &in_flight;

  protocol::FrameMeta meta;
  meta.frame_id = id;
  meta.stream_id = id;
  meta.capture_ms = now;
  meta.deadline_ms = now + timeout.count();
  meta.model = model.name;
  meta.reply_to = options_.reply_topic;
  meta.annotated_to = options_.reply_topic;
  meta.source = upload->filename;
  meta.correlation_id = id;
  meta.options.confidence = upload->confidence;
  meta.options.iou = upload->iou;
  meta.options.classes = std::move(classes).value();
  meta.draw = upload->draw;
  bus::Message message{protocol::FramesTopic(model.name), id, std::move(wire->jpeg), {}};
  protocol::EncodeFrameHeaders(meta, message.headers);
  const std::size_t frame_bytes = message.value.size();

  {
    std::lock_guard lock(mu_);
    InsertLocked(job);
  }
  // A transport may report the delivery from inside Publish (the in-memory bus does), so no
  // lock is held here.
  auto on_delivery = [this, lifetime = lifetime_, id](const Status& st) {
    if (st.ok()) return;
    std::lock_guard alive(lifetime->mu);
    if (lifetime->closed) return;
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    const std::shared_ptr<Job> held = it->second;
    spdlog::warn("frame not delivered job={} error=\"{}\"", id, st.ToString());
    FinishLocked(
        *held, UnavailableError("the frame could not be delivered to the broker: " + st.message()));
  };
  const Status published = publisher_.Publish(std::move(message), std::move(on_delivery));
  const double gateway_ms = MillisSince(received);
  if (!published.ok()) {
    {
      std::lock_guard lock(mu_);
      RemoveLocked(*job);
    }
    spdlog::warn("frame not published job={} error=\"{}\"", id, published.ToString());
    if (published.code() == StatusCode::kTooLarge) return ErrorResponse(published);
    return ErrorResponse(UnavailableError("cannot publish the frame: " + published.message()));
  }
  spdlog::debug("frame published job={} model={} bytes={} converted={} format={} ms={:.1f}", id,
                model.name, frame_bytes, wire->converted, imaging::FormatName(info->format),
                gateway_ms);

  std::unique_lock lock(mu_);
  job->gateway_ms = gateway_ms;
  if (async) {
    HttpResponse r = HttpResponse::Json(viewer::JobToJson(job->record), 202);
    r.headers.emplace("Location", viewer::JobPath(id));
    r.headers.emplace(kJobIdHeader, id);
    return r;
  }
  job->done.wait_until(lock, job->deadline, [&] { return job->finished; });
  if (!job->finished) ExpireLocked(*job);
  if (job->record.state != "done" || !job->result) {
    HttpResponse r = ErrorResponse(job->record.error.value_or(InternalError("job failed")));
    r.headers.emplace(kJobIdHeader, id);
    return r;
  }
  if (AcceptsJpeg(req) && !job->image.empty()) return JpegResponse(job->image, id);
  const viewer::JobRecord record = job->record;
  const protocol::FrameResult result = *job->result;
  const auto timings = TimingsLocked(*job, MillisSince(received));
  lock.unlock();
  HttpResponse r = HttpResponse::Json(viewer::ResultToJson(record, result, timings));
  r.headers.emplace(kJobIdHeader, id);
  return r;
}

HttpResponse GatewayService::Impl::SubmitVideo(const detail::Upload& upload, bool async) {
  if (!async) {
    return ErrorResponse(UnsupportedError(
        "videos are processed as jobs: POST them to /api/v1/jobs and follow the job"));
  }
  if (!video_) {
    return ErrorResponse(UnsupportedError(
        "this gateway does not take videos (it has no video folder; start it with --video-dir)"));
  }
  if (upload.image.size() > options_.max_video_bytes) {
    return ErrorResponse(TooLargeError("video is " + std::to_string(upload.image.size()) +
                                       " bytes, over the limit of " +
                                       std::to_string(options_.max_video_bytes) + " bytes"));
  }
  ModelView model;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return ErrorResponse(UnavailableError("the gateway is shutting down"));
    auto resolved = ResolveModelLocked(upload.model, NowMs());
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
  request.frame_timeout = upload.timeout;
  return video_->Submit(upload.image, std::move(request));
}

std::map<std::string, double> GatewayService::Impl::TimingsLocked(const Job& job,
                                                                  double total_ms) const {
  std::map<std::string, double> t{{"gateway", job.gateway_ms}, {"total", total_ms}};
  if (job.result_ms && job.result) {
    const auto& worker = job.result->result.timings_ms;
    const auto it = worker.find("total");
    const double worker_ms = it == worker.end() ? 0.0 : it->second;
    t["queue"] = std::max(0.0, *job.result_ms - job.gateway_ms - worker_ms);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Jobs

void GatewayService::Impl::InsertLocked(const std::shared_ptr<Job>& job) {
  const std::string& id = job->record.id;
  jobs_[id] = job;
  pending_[id] = job;
  order_.push_back(id);
  job->order = std::prev(order_.end());
  EvictLocked();
}

void GatewayService::Impl::RemoveLocked(Job& job) {
  if (!job.finished) {
    --in_flight_;
    job.in_flight->Sub(1);
    job.finished = true;
  }
  const std::string id = job.record.id;
  pending_.erase(id);
  if (auto it = jobs_.find(id); it != jobs_.end() && it->second.get() == &job) {
    job_bytes_ -= job.bytes;
    order_.erase(job.order);
    jobs_.erase(it);
  }
}

void GatewayService::Impl::FinishLocked(Job& job, const Status& error) {
  if (job.finished) return;
  job.finished = true;
  job.wait_for_image = false;
  job.record.state = error.ok() ? "done" : "failed";
  if (!error.ok()) job.record.error = error;
  job.record.frames_done = error.ok() ? 1 : 0;
  job.record.updated_ms = NowMs();
  --in_flight_;
  job.in_flight->Sub(1);
  const std::string outcome = error.ok() ? "done" : std::string(StatusCodeName(error.code()));
  metrics_.GetCounter(kJobsName, kJobsHelp, {{"model", job.record.model}, {"outcome", outcome}})
      .Increment();
  if (error.ok()) {
    spdlog::debug("job done job={} model={}", job.record.id, job.record.model);
  } else {
    spdlog::info("job failed job={} model={} error=\"{}\"", job.record.id, job.record.model,
                 error.ToString());
  }
  job.done.notify_all();
  // Callers hold the job: it may now leave the tables.
  const std::string id = job.record.id;
  pending_.erase(id);
  EvictLocked();
}

void GatewayService::Impl::ExpireLocked(Job& job) {
  if (job.finished) return;
  if (job.result) {
    // The result is in and only the annotated image is missing: answer without it.
    spdlog::warn("annotated image did not arrive job={}", job.record.id);
    FinishLocked(job, Status::Ok());
    return;
  }
  FinishLocked(job,
               DeadlineExceededError("no result from a worker of model '" + job.record.model +
                                     "' within " + std::to_string(job.timeout.count()) + " ms"));
}

void GatewayService::Impl::EvictLocked() {
  auto it = order_.begin();
  while ((jobs_.size() > options_.max_jobs_kept || job_bytes_ > options_.max_job_bytes) &&
         it != order_.end()) {
    auto job = jobs_.find(*it);
    if (job == jobs_.end() || !job->second->finished) {
      ++it;
      continue;
    }
    job_bytes_ -= job->second->bytes;
    jobs_.erase(job);
    it = order_.erase(it);
  }
}

void GatewayService::Impl::SetImageLocked(Job& job, std::vector<std::uint8_t> image) {
  job.bytes += image.size();
  job_bytes_ += image.size();
  job.image = std::move(image);
  job.record.has_image = true;
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
  RETURN_IF_ERROR(GatewayService::ValidateOptions(options_));
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
    for (const auto& in : replies_.Poll(kPollBatch, options_.poll_timeout, {})) {
      HandleReply(in);
      replies_.Ack(in.token);
    }
    const auto beats = workers_.Poll(kPollBatch, std::chrono::milliseconds(0), {});
    for (const auto& in : beats) {
      HandleHeartbeat(in);
      workers_.Ack(in.token);
    }
    if (!beats.empty()) RefreshWorkerGauges();
    ExpireDeadlines();
  }
  if (video_) video_->Shutdown();
  std::size_t failed = 0;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    const auto pending = pending_;  // FinishLocked erases from pending_
    for (const auto& [id, job] : pending) {
      FinishLocked(*job, UnavailableError("the gateway is shutting down"));
      ++failed;
    }
  }
  (void)replies_.Close();
  (void)workers_.Close();
  spdlog::info("gateway stopped unfinished_jobs={}", failed);
  return Status::Ok();
}

void GatewayService::Impl::HandleReply(const bus::InboundMessage& in) {
  if (video_ && video_->HandleReply(in)) return;
  const bus::Headers& h = in.message.headers;
  std::string id = h.Get(header::kCorrelationId).value_or("");
  if (id.empty()) id = h.Get(header::kFrameId).value_or("");
  const auto& value = in.message.value;
  if (viewer::IsImageMessage(in.message)) {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      spdlog::debug("annotated image ignored, unknown job id={}", id);
      return;
    }
    const std::shared_ptr<Job> held = it->second;  // FinishLocked may drop it from the tables
    Job& job = *held;
    if (!job.image.empty() || (job.finished && job.record.state != "done")) {
      spdlog::debug("annotated image ignored, duplicate or failed job id={}", id);
      return;
    }
    SetImageLocked(job, value);
    if (job.wait_for_image) {
      FinishLocked(job, Status::Ok());
    } else if (job.finished) {
      EvictLocked();  // a late image adds bytes to a kept job
    }
    return;
  }

  std::string text(value.begin(), value.end());
  auto parsed = protocol::FrameResultFromJson(text);
  if (!parsed) {
    spdlog::warn("reply ignored, not a frame result topic={} offset={} error=\"{}\"",
                 in.token.topic, in.token.offset, parsed.error().ToString());
    return;
  }
  protocol::FrameResult result = std::move(parsed).value();
  if (id.empty()) id = result.correlation_id.empty() ? result.frame_id : result.correlation_id;

  std::lock_guard lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) {
    spdlog::debug("result ignored, unknown or finished job id={}", id);
    return;
  }
  const std::shared_ptr<Job> held = it->second;  // FinishLocked may drop it from the tables
  Job& job = *held;
  job.result_ms = MillisSince(job.received);
  job.bytes += text.size();
  job_bytes_ += text.size();
  job.record.result_json = std::move(text);
  switch (result.status) {
    case protocol::FrameStatus::kOk: {
      // The worker publishes the annotated image before the result, on the same topic and key,
      // so it is normally here already. One sent elsewhere never comes here: do not wait.
      const bool image_coming =
          job.draw && job.image.empty() && result.annotated_topic == options_.reply_topic;
      job.result = std::move(result);
      if (image_coming) {
        job.wait_for_image = true;
      } else {
        FinishLocked(job, Status::Ok());
      }
      break;
    }
    case protocol::FrameStatus::kSkipped:
      FinishLocked(job, DeadlineExceededError(result.error.message()));
      break;
    case protocol::FrameStatus::kError:
      FinishLocked(job, result.error.ok() ? InternalError("the worker failed without a reason")
                                          : result.error);
      break;
  }
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
  {
    std::lock_guard lock(mu_);
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
  const std::pair<const char*, std::uint64_t> outcomes[] = {
      {"processed", hb.processed}, {"skipped", hb.skipped}, {"failed", hb.failed}};
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

void GatewayService::Impl::ExpireDeadlines() {
  const auto now = SteadyClock::now();
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Job>> due;
  for (const auto& [id, job] : pending_) {
    if (job->deadline <= now) due.push_back(job);
  }
  for (const auto& job : due) ExpireLocked(*job);
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
// Reading jobs

namespace {

Result<std::string> JobIdFrom(const HttpRequest& req) {
  const auto it = req.path_params.find("id");
  const std::string id = it == req.path_params.end() ? std::string() : it->second;
  if (!viewer::IsValidJobId(id)) return NotFoundError("unknown job '" + id + "'");
  return id;
}

Status NotFoundJob(const std::string& id) { return NotFoundError("unknown job '" + id + "'"); }

}  // namespace

HttpResponse GatewayService::Impl::GetJob(const HttpRequest& req) {
  auto id = JobIdFrom(req);
  if (!id) return ErrorResponse(id.error());
  if (video_) {
    if (auto r = video_->GetJob(*id)) return std::move(*r);
  }
  {
    std::lock_guard lock(mu_);
    if (auto it = jobs_.find(*id); it != jobs_.end()) {
      return HttpResponse::Json(viewer::JobToJson(it->second->record));
    }
  }
  if (history_ == nullptr) return ErrorResponse(NotFoundJob(*id));
  auto record = history_->GetJob(*id);
  if (!record) {
    return ErrorResponse(record.error().code() == StatusCode::kNotFound ? NotFoundJob(*id)
                                                                        : record.error());
  }
  return HttpResponse::Json(viewer::JobToJson(*record));
}

HttpResponse GatewayService::Impl::GetResult(const HttpRequest& req) {
  auto id = JobIdFrom(req);
  if (!id) return ErrorResponse(id.error());
  if (video_) {
    if (auto r = video_->GetResult(*id, req.Query("format").value_or("") == "jsonl")) {
      return std::move(*r);
    }
  }
  viewer::JobRecord record;
  std::optional<protocol::FrameResult> result;
  std::map<std::string, double> timings;
  bool found = false;
  {
    std::lock_guard lock(mu_);
    if (auto it = jobs_.find(*id); it != jobs_.end()) {
      const Job& job = *it->second;
      found = true;
      record = job.record;
      if (job.finished && job.result) {
        result = job.result;
        timings = TimingsLocked(job, job.result_ms.value_or(0));
      }
    }
  }
  if (!found) {
    if (history_ == nullptr) return ErrorResponse(NotFoundJob(*id));
    auto stored = history_->GetJob(*id);
    if (!stored) {
      return ErrorResponse(stored.error().code() == StatusCode::kNotFound ? NotFoundJob(*id)
                                                                          : stored.error());
    }
    record = std::move(stored).value();
    if (record.state == "done") {
      auto parsed = protocol::FrameResultFromJson(record.result_json);
      if (!parsed) {
        return ErrorResponse(InternalError("stored result of job '" + *id +
                                           "' is unreadable: " + parsed.error().message()));
      }
      result = std::move(parsed).value();
    }
  }
  if (record.state == "queued" || record.state == "running") {
    return HttpResponse::Json(viewer::JobToJson(record), 202);
  }
  if (record.state == "done" && result) {
    return HttpResponse::Json(viewer::ResultToJson(record, *result, timings));
  }
  if (record.state == "cancelled") {
    return ErrorResponse(record.error.value_or(CancelledError("job was cancelled")));
  }
  return ErrorResponse(record.error.value_or(InternalError("job failed")));
}

HttpResponse GatewayService::Impl::GetImage(const HttpRequest& req) {
  auto id = JobIdFrom(req);
  if (!id) return ErrorResponse(id.error());
  bool known = false;
  {
    std::lock_guard lock(mu_);
    if (auto it = jobs_.find(*id); it != jobs_.end()) {
      known = true;
      if (!it->second->image.empty()) return JpegResponse(it->second->image, *id);
    }
  }
  // The viewer may hold it: a job from before a restart, or an image that went elsewhere.
  if (history_ != nullptr) {
    auto image = history_->LoadAnnotatedImage(*id);
    if (image) return JpegResponse(std::move(image).value(), *id);
    if (image.error().code() != StatusCode::kNotFound) return ErrorResponse(image.error());
    known = known || history_->GetJob(*id).has_value();
  }
  if (!known) return ErrorResponse(NotFoundJob(*id));
  return ErrorResponse(NotFoundError("job '" + *id + "' has no annotated image"));
}

HttpResponse GatewayService::Impl::GetVideo(const HttpRequest& req) {
  auto id = JobIdFrom(req);
  if (!id) return ErrorResponse(id.error());
  if (video_) {
    if (auto r = video_->GetVideo(*id, req.Header("Range"))) return std::move(*r);
  }
  {
    std::lock_guard lock(mu_);
    if (jobs_.count(*id) != 0) {
      return ErrorResponse(NotFoundError("job '" + *id + "' is an image job and has no video"));
    }
  }
  return ErrorResponse(NotFoundJob(*id));
}

HttpResponse GatewayService::Impl::Cancel(const HttpRequest& req) {
  auto id = JobIdFrom(req);
  if (!id) return ErrorResponse(id.error());
  if (video_) {
    if (auto r = video_->Cancel(*id)) return std::move(*r);
  }
  {
    std::lock_guard lock(mu_);
    if (auto it = jobs_.find(*id); it != jobs_.end()) {
      // An image is one frame, answered within its deadline: nothing worth cancelling.
      return ErrorResponse(FailedPreconditionError(
          it->second->finished ? "job '" + *id + "' is already " + it->second->record.state
                               : "job '" + *id +
                                     "' is an image job; only video jobs can be "
                                     "cancelled"));
    }
  }
  if (history_ != nullptr && history_->GetJob(*id).has_value()) {
    return ErrorResponse(FailedPreconditionError("job '" + *id + "' is already finished"));
  }
  return ErrorResponse(NotFoundJob(*id));
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
      models.push_back({{"name", name},
                        {"state", conf != nullptr ? conf->state : "remote"},
                        {"workers", workers},
                        {"required", required}});
    }
  }
  json body = {{"status", ready ? "ready" : "not_ready"},
               {"broker", std::move(broker)},
               {"models", std::move(models)}};
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

Status GatewayService::Impl::RegisterRoutes(http::HttpServer& server) {
  RETURN_IF_ERROR(GatewayService::ValidateOptions(options_));
  if (video_) RETURN_IF_ERROR(video_->Init());
  using Fn = std::function<HttpResponse(const HttpRequest&)>;
  const std::pair<std::pair<const char*, const char*>, Fn> routes[] = {
      {{"POST", "/api/v1/detect"}, [this](const HttpRequest& r) { return Submit(r, false); }},
      {{"POST", "/api/v1/jobs"}, [this](const HttpRequest& r) { return Submit(r, true); }},
      {{"GET", "/api/v1/jobs/:id"}, [this](const HttpRequest& r) { return GetJob(r); }},
      {{"GET", "/api/v1/jobs/:id/result"}, [this](const HttpRequest& r) { return GetResult(r); }},
      {{"GET", "/api/v1/jobs/:id/image"}, [this](const HttpRequest& r) { return GetImage(r); }},
      {{"GET", "/api/v1/jobs/:id/video"}, [this](const HttpRequest& r) { return GetVideo(r); }},
      {{"DELETE", "/api/v1/jobs/:id"}, [this](const HttpRequest& r) { return Cancel(r); }},
      {{"GET", "/api/v1/models"}, [this](const HttpRequest&) { return Models(); }},
      {{"GET", "/healthz"},
       [](const HttpRequest&) { return HttpResponse::Json(R"({"status":"ok"})"); }},
      {{"GET", "/readyz"}, [this](const HttpRequest&) { return Ready(); }},
      {{"GET", "/metrics"}, [this](const HttpRequest&) { return Metrics(); }},
  };
  for (const auto& [route, fn] : routes) {
    RETURN_IF_ERROR(server.Route(route.first, route.second, Instrument(route.second, fn)));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// GatewayService

GatewayService::GatewayService(GatewayOptions options, bus::FramePublisher& publisher,
                               bus::FrameSubscriber& replies, bus::FrameSubscriber& workers,
                               std::vector<ConfiguredModel> configured,
                               std::function<Status()> broker_check, MetricsRegistry& metrics,
                               viewer::HistoryStore* history)
    : impl_(std::make_unique<Impl>(std::move(options), publisher, replies, workers,
                                   std::move(configured), std::move(broker_check), metrics,
                                   history)) {}

GatewayService::~GatewayService() = default;

Status GatewayService::ValidateOptions(const GatewayOptions& o) {
  if (!protocol::IsValidTopicName(o.reply_topic)) {
    return InvalidArgumentError("gateway reply_topic is not a valid topic name: '" + o.reply_topic +
                                "'");
  }
  if (o.max_in_flight == 0) return InvalidArgumentError("gateway max_in_flight is 0");
  if (o.max_jobs_kept == 0) return InvalidArgumentError("gateway max_jobs_kept is 0");
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
  if (o.video_window < 1 || o.video_window > 256) {
    return InvalidArgumentError("gateway video_window must be in 1..256");
  }
  if (o.max_video_jobs == 0) return InvalidArgumentError("gateway max_video_jobs is 0");
  if (o.max_videos_kept == 0) return InvalidArgumentError("gateway max_videos_kept is 0");
  if (o.video_frame_timeout.count() <= 0) {
    return InvalidArgumentError("gateway video_frame_timeout must be positive");
  }
  return Status::Ok();
}

Status GatewayService::RegisterRoutes(http::HttpServer& server) {
  return impl_->RegisterRoutes(server);
}

Status GatewayService::Run(const std::stop_token& stop) { return impl_->Run(stop); }

}  // namespace kadr::gateway
