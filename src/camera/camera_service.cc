#include "camera/camera_service.h"

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "capture/frame_source.h"
#include "common/clock.h"
#include "common/random.h"
#include "http/status_mapping.h"
#include "protocol/frame.h"

namespace kadr::camera {
namespace {

using nlohmann::json;

constexpr char kStreamsPath[] = "/api/v1/streams";

std::string NewStreamId() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t v = OsRandom64();  // not guessable from other streams' ids
  std::string id = "s";
  for (int i = 0; i < 16; ++i) {
    id += kHex[v & 0xf];
    v >>= 4;
  }
  return id;
}

}  // namespace

// An error as the stream routes answer it: the Status C++ callers get, plus the HTTP status
// and a code finer than the Status's (docs/api.md "Streams").
struct CameraService::ApiError {
  Status status;
  int http_status = 500;
  std::string code;

  static ApiError Of(const Status& s) {
    return {s, http::HttpStatusFor(s.code()), std::string(StatusCodeName(s.code()))};
  }
  static ApiError Fine(StatusCode code, int http_status, std::string api_code,
                       const std::string& message) {
    return {Status(code, capture::RedactUrl(message)), http_status, std::move(api_code)};
  }
};

namespace {

http::HttpResponse ErrorResponse(int http_status, const std::string& code,
                                 const std::string& message) {
  json body = {{"error", {{"code", code}, {"message", capture::RedactUrl(message)}}}};
  return http::HttpResponse::Json(body.dump(-1, ' ', false, json::error_handler_t::replace),
                                  http_status);
}

http::HttpResponse ErrorResponse(const Status& s) {
  return ErrorResponse(http::HttpStatusFor(s.code()), std::string(StatusCodeName(s.code())),
                       s.message());
}

json OptionalNumber(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

double Round2(double v) { return std::round(v * 100.0) / 100.0; }

}  // namespace

Result<std::unique_ptr<CameraService>> CameraService::Create(
    CameraOptions options, bus::FramePublisher& publisher, bus::FrameSubscriber& results,
    bus::FrameSubscriber* requests, MetricsRegistry& metrics, ModelCheck check,
    SourceFactory factory) {
  if (requests != nullptr && !options.video.dir.empty()) {
    RETURN_IF_ERROR(VideoJobs::ValidateOptions(options.video));
  }
  // One admission for the streams and video jobs of this service (and whatever else of the
  // process its creator shares it with).
  if (!options.runner.admission) options.runner.admission = options.video.admission;
  if (!options.runner.admission) options.runner.admission = std::make_shared<engine::Admission>();
  if (!options.video.admission) options.video.admission = options.runner.admission;
  ASSIGN_OR_RETURN(options.runner.source_policy, capture::SourcePolicy::Create(options.sources));
  spdlog::info("camera: stream sources {}", options.runner.source_policy->Describe());
  ASSIGN_OR_RETURN(std::unique_ptr<StreamStore> store, StreamStore::Create(options.data_dir));
  ASSIGN_OR_RETURN(std::vector<StreamSpec> specs, store->List());
  std::unique_ptr<CameraService> service(new CameraService(std::move(options), publisher, results,
                                                           requests, metrics, std::move(check),
                                                           std::move(factory), std::move(store)));
  if (service->video_) RETURN_IF_ERROR(service->video_->Init());
  std::lock_guard lock(service->mu_);
  for (const StreamSpec& spec : specs) {
    spdlog::info("camera: restoring stream={} name=\"{}\" source={} model={}", spec.id, spec.name,
                 capture::RedactUrl(spec.source), spec.model);
    service->StartRunnerLocked(spec);
  }
  return service;
}

CameraService::CameraService(CameraOptions options, bus::FramePublisher& publisher,
                             bus::FrameSubscriber& results, bus::FrameSubscriber* requests,
                             MetricsRegistry& metrics, ModelCheck check, SourceFactory factory,
                             std::unique_ptr<StreamStore> store)
    : options_(std::move(options)),
      publisher_(publisher),
      results_(results),
      requests_(requests),
      metrics_(metrics),
      check_(std::move(check)),
      factory_(std::move(factory)),
      store_(std::move(store)),
      streams_gauge_(metrics.GetGauge("kadr_camera_streams", "Live streams of this camera.")),
      results_ignored_(metrics.GetCounter(
          "kadr_camera_results_total",
          "Answers read from kadr.live.results and the video reply topic that reached no run: "
          "ignored (another camera's, a stream gone, late) or malformed.",
          {{"outcome", "ignored"}})),
      results_malformed_(metrics.GetCounter(
          "kadr_camera_results_total",
          "Answers read from kadr.live.results and the video reply topic that reached no run: "
          "ignored (another camera's, a stream gone, late) or malformed.",
          {{"outcome", "malformed"}})) {
  if (requests_ != nullptr && !options_.video.dir.empty()) {
    VideoJobsOptions vo = options_.video;
    if (!vo.now_ms) vo.now_ms = options_.runner.now_ms;
    if (!vo.model_input_side) {
      vo.model_input_side = [this](std::string_view model) {
        return model_inputs_.LongSide(
            model, options_.runner.now_ms ? options_.runner.now_ms() : UnixMillis());
      };
    }
    video_ = std::make_unique<VideoJobs>(std::move(vo), publisher_, router_, metrics_);
  }
}

CameraService::~CameraService() { StopAll(); }

void CameraService::StartRunnerLocked(const StreamSpec& spec) {
  auto runner =
      std::make_unique<StreamRunner>(spec, options_.runner, factory_, publisher_, metrics_);
  router_.Add(runner->run());
  runner->Start();
  runners_[spec.id] = std::move(runner);
  order_.push_back(spec.id);
  streams_gauge_.Set(static_cast<double>(runners_.size()));
}

void CameraService::StopAll() {
  std::vector<std::unique_ptr<StreamRunner>> all;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, r] : runners_) all.push_back(std::move(r));
    for (auto& r : retired_) all.push_back(std::move(r));
    runners_.clear();
    retired_.clear();
    order_.clear();
  }
  for (auto& r : all) router_.Remove(r->run());
  for (auto& r : all) r->RequestStop();  // all at once: each may wait in a blocking read
  if (video_) video_->Shutdown();
  for (auto& r : all) r->Stop();
}

void CameraService::ReapRetired() {
  std::vector<std::unique_ptr<StreamRunner>> done;
  {
    std::lock_guard lock(mu_);
    for (auto it = retired_.begin(); it != retired_.end();) {
      if ((*it)->Stopped()) {
        done.push_back(std::move(*it));
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Joined outside the lock: both threads have ended, so this does not wait.
  std::vector<std::string> ids;
  for (auto& r : done) {
    r->Stop();
    ids.push_back(r->spec().id);
  }
  done.clear();
  // A deleted stream's series go with it (its runner, which held them, is gone), so that
  // streams created and deleted over months do not pile up series in /metrics.
  for (const auto& id : ids) metrics_.RemoveSeries("stream", id);
}

Status CameraService::Run(const std::stop_token& stop) {
  while (!stop.stop_requested()) {
    PollOnce(options_.poll_timeout);
    ReapRetired();
    if (video_) video_->Tick();
  }
  StopAll();
  if (requests_ != nullptr) (void)requests_->Close();
  return results_.Close();
}

std::size_t CameraService::PollOnce(std::chrono::milliseconds timeout) {
  std::size_t taken = 0;
  if (video_ != nullptr) {
    // Requests first, without waiting: each is claimed (or refused) and acknowledged at once.
    const auto requests = requests_->Poll(options_.max_batch, std::chrono::milliseconds(0),
                                          std::chrono::milliseconds(0));
    for (const bus::InboundMessage& in : requests) {
      video_->Take(in.message);
      requests_->Ack(in.token);
    }
    taken += requests.size();
  }
  std::vector<bus::InboundMessage> batch =
      results_.Poll(options_.max_batch, timeout, std::chrono::milliseconds(0));
  const std::int64_t received_ms = options_.runner.now_ms ? options_.runner.now_ms() : UnixMillis();
  for (const bus::InboundMessage& in : batch) {
    Route(in, received_ms);
    results_.Ack(in.token);
  }
  return taken + batch.size();
}

void CameraService::Route(const bus::InboundMessage& in, std::int64_t received_ms) {
  if (in.message.topic == protocol::kWorkersTopic) {
    // A worker's announcement: its model's input size (how large video frames need to
    // travel), and the frames it says the broker deleted unread (they are sent again, or
    // their stream or job hears why).
    auto hb = protocol::WorkerHeartbeatFromJson(bus::ValueText(in.message));
    if (!hb) return;
    model_inputs_.Note(*hb, received_ms);
    for (const auto& loss : hb->losses) {
      if (const std::size_t hit = router_.OnDeletedUnread(loss); hit > 0) {
        spdlog::error(
            "camera: frames deleted by the broker before a worker read them topic={} "
            "partition={} from_offset={} to_offset={} frames_hit={} worker={}",
            loss.topic, loss.partition, loss.from, loss.to, hit, hb->worker_id);
      }
    }
    return;
  }
  if (router_.Route(in, received_ms)) return;
  if (video_ && video_->HandleControl(in.message)) return;
  if (!protocol::IsImageMessage(in.message)) {
    const std::string_view text(reinterpret_cast<const char*>(in.message.value.data()),
                                in.message.value.size());
    if (auto result = protocol::FrameResultFromJson(text); !result) {
      results_malformed_.Increment();
      spdlog::warn("camera: result ignored topic={} offset={} error=\"{}\"", in.token.topic,
                   in.token.offset, result.error().ToString());
      return;
    }
  }
  results_ignored_.Increment();  // another camera's, a stream gone, or a late answer
}

namespace {

// What the stream routes add to a Status: its code, the HTTP status and the API's code.
struct ApiErrorParts {
  StatusCode code;
  int http_status;
  std::string api_code;
};

// The finer API error of a source that did not open when probed.
ApiErrorParts ProbeError(const Status& s, const capture::SourceLocation& location) {
  if (s.code() == StatusCode::kPermissionDenied) {
    return {StatusCode::kPermissionDenied, 403, "permission_denied"};
  }
  switch (location.kind) {
    case capture::SourceKind::kDevice:
      if (s.code() == StatusCode::kNotFound) return {StatusCode::kNotFound, 400, "no_such_device"};
      return {StatusCode::kUnavailable, 502, "source_unreachable"};
    case capture::SourceKind::kFile:
      if (s.code() == StatusCode::kNotFound) return {StatusCode::kNotFound, 400, "no_such_file"};
      if (s.code() == StatusCode::kUnsupported) {
        return {StatusCode::kUnsupported, 415, "not_a_video"};
      }
      break;
    case capture::SourceKind::kRtsp:
    case capture::SourceKind::kHttp:
      if (s.code() == StatusCode::kInvalidArgument) break;
      return {StatusCode::kUnavailable, 502, "source_unreachable"};
  }
  return {s.code(), http::HttpStatusFor(s.code()), std::string(StatusCodeName(s.code()))};
}

}  // namespace

Result<std::string> CameraService::AddStream(std::string_view body) { return Add(body, nullptr); }

Result<std::string> CameraService::Add(std::string_view body, ApiError* error) {
  auto fail = [&](const ApiError& e) -> Status {
    if (error != nullptr) *error = e;
    return e.status;
  };
  auto request = ParseStreamRequest(body, options_.default_model);
  if (!request) return fail(ApiError::Of(request.error()));
  StreamSpec& spec = request->spec;
  if (check_) {
    if (Status s = check_(spec.model); !s.ok()) return fail(ApiError::Of(s));
  }
  {
    std::lock_guard lock(mu_);
    if (runners_.size() >= options_.max_streams) {
      return fail(ApiError::Of(ResourceExhaustedError("this camera already runs " +
                                                      std::to_string(runners_.size()) +
                                                      " streams (--max-streams)")));
    }
  }
  const auto location = capture::ParseSource(spec.source);
  if (!location) return fail(ApiError::Of(location.error()));
  // The operator's policy, with or without the probe (the factory checks it again at every
  // open; a host name is checked when it is resolved).
  if (auto allowed = options_.runner.source_policy->Check(*location); !allowed) {
    spdlog::info("camera: stream refused source={} error=\"{}\"", location->redacted,
                 capture::RedactUrl(allowed.error().ToString()));
    return fail(ApiError::Of(allowed.error()));
  }
  if (request->probe) {
    capture::SourceOptions so;
    so.open_timeout = options_.probe_timeout;
    so.read_timeout = options_.probe_timeout;
    so.policy = options_.runner.source_policy;
    auto source = factory_(spec, so);
    Status opened = source ? (*source)->Open() : source.error();
    if (source) (*source)->Close();
    if (!opened.ok()) {
      spdlog::info("camera: stream rejected source={} error=\"{}\"", location->redacted,
                   capture::RedactUrl(opened.ToString()));
      const ApiErrorParts parts = ProbeError(opened, *location);
      return fail(ApiError::Fine(parts.code, parts.http_status, parts.api_code,
                                 PublicSourceError(opened, spec.source).message()));
    }
  }
  spec.id = NewStreamId();
  spec.created_ms = options_.runner.now_ms ? options_.runner.now_ms() : UnixMillis();
  if (Status s = store_->Put(spec); !s.ok()) return fail(ApiError::Of(s));
  std::lock_guard lock(mu_);
  StartRunnerLocked(spec);
  spdlog::info("camera: stream added stream={} name=\"{}\" source={} model={} mode={} fps={}",
               spec.id, spec.name, location->redacted, spec.model, StreamModeName(spec.mode),
               spec.fps ? std::to_string(*spec.fps) : "source");
  return StreamToJsonLocked(*runners_.at(spec.id));
}

Status CameraService::RemoveStream(const std::string& id) {
  std::unique_ptr<StreamRunner> runner;
  {
    std::lock_guard lock(mu_);
    auto it = runners_.find(id);
    if (it == runners_.end()) return NotFoundError("unknown stream '" + id + "'");
    router_.Remove(it->second->run());
    runner = std::move(it->second);
    runners_.erase(it);
    order_.erase(std::remove(order_.begin(), order_.end(), id), order_.end());
    streams_gauge_.Set(static_cast<double>(runners_.size()));
  }
  Status deleted = store_->Delete(id);
  // Stopping may wait for a blocking read: the runner finishes in the background and Run()
  // (or StopAll) joins it.
  runner->RequestStop();
  {
    std::lock_guard lock(mu_);
    retired_.push_back(std::move(runner));
  }
  spdlog::info("camera: stream removed stream={}", id);
  if (!deleted.ok() && deleted.code() != StatusCode::kNotFound) return deleted;
  return Status::Ok();
}

std::string CameraService::StreamToJsonLocked(const StreamRunner& runner) const {
  const StreamSpec& spec = runner.spec();
  const StreamSnapshot snap = runner.Snapshot();
  const StreamStats& st = snap.stats;
  const std::string self = std::string(kStreamsPath) + "/" + spec.id;
  json j = SpecToPublicJson(spec);
  j["state"] = StreamStateName(snap.state);
  json stats = {
      {"frames_captured", st.frames_captured},
      {"frames_published", st.frames_published},
      {"frames_done", st.frames_done},
      {"dropped_frames", st.dropped()},
      {"dropped",
       {{"backpressure", st.dropped_backpressure},
        {"deadline", st.dropped_deadline},
        {"error", st.dropped_error}}},
      {"in_flight", st.in_flight},
      {"input_fps", Round2(st.input_fps)},
      {"output_fps", Round2(st.output_fps)},
      {"reconnects", st.reconnects},
      {"last_gap_ms", st.last_gap_ms ? json(*st.last_gap_ms) : json(nullptr)},
      {"last_error", nullptr},
      {"latency_ms",
       {{"p50", OptionalNumber(st.latency_p50_ms)}, {"p95", OptionalNumber(st.latency_p95_ms)}}},
      {"last_result_ms", st.last_result_ms ? json(*st.last_result_ms) : json(nullptr)}};
  if (st.last_error) {
    stats["last_error"] = {{"code", StatusCodeName(st.last_error->code())},
                           {"message", capture::RedactUrl(st.last_error->message())},
                           {"at_ms", st.last_error_ms}};
  }
  j["stats"] = std::move(stats);
  j["links"] = {{"self", self},
                {"live", self + "/live"},
                {"events", self + "/events"},
                {"frame", self + "/frame"}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string CameraService::ListStreamsJson() const {
  std::lock_guard lock(mu_);
  std::string out = R"({"streams":[)";
  bool first = true;
  for (const std::string& id : order_) {
    auto it = runners_.find(id);
    if (it == runners_.end()) continue;
    if (!first) out += ',';
    first = false;
    out += StreamToJsonLocked(*it->second);
  }
  out += "]}";
  return out;
}

std::optional<std::string> CameraService::StreamJson(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = runners_.find(id);
  if (it == runners_.end()) return std::nullopt;
  return StreamToJsonLocked(*it->second);
}

std::optional<StreamSnapshot> CameraService::Snapshot(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = runners_.find(id);
  if (it == runners_.end()) return std::nullopt;
  return it->second->Snapshot();
}

std::vector<std::string> CameraService::StreamIds() const {
  std::lock_guard lock(mu_);
  return order_;
}

Status CameraService::RegisterRoutes(http::HttpServer& server) {
  // Listing streams is for viewers and above; creating and deleting them is an admin's (a
  // stream names a source the camera service opens). A new stream is JSON only.
  const http::RouteOptions read{.access = http::Access::kRead};
  const http::RouteOptions admin{.access = http::Access::kAdmin};
  const http::RouteOptions create{.access = http::Access::kAdmin,
                                  .content_types = {"application/json"}};
  RETURN_IF_ERROR(server.Route(
      "POST", kStreamsPath,
      [this](const http::HttpRequest& req) {
        ApiError error;
        auto created = Add(req.body, &error);
        if (!created) return ErrorResponse(error.http_status, error.code, error.status.message());
        http::HttpResponse r = http::HttpResponse::Json(std::move(*created), 201);
        const json j = json::parse(r.body, nullptr, false);
        if (j.is_object()) r.headers.emplace("Location", j["links"]["self"].get<std::string>());
        return r;
      },
      create));
  RETURN_IF_ERROR(server.Route(
      "GET", kStreamsPath,
      [this](const http::HttpRequest&) { return http::HttpResponse::Json(ListStreamsJson()); },
      read));
  const std::string one = std::string(kStreamsPath) + "/:id";
  RETURN_IF_ERROR(server.Route(
      "GET", one,
      [this](const http::HttpRequest& req) {
        const std::string& id = req.path_params.at("id");
        auto body = StreamJson(id);
        if (!body) return ErrorResponse(404, "unknown_stream", "unknown stream '" + id + "'");
        return http::HttpResponse::Json(std::move(*body));
      },
      read));
  RETURN_IF_ERROR(server.Route(
      "DELETE", one,
      [this](const http::HttpRequest& req) {
        const std::string& id = req.path_params.at("id");
        Status s = RemoveStream(id);
        if (s.code() == StatusCode::kNotFound) {
          return ErrorResponse(404, "unknown_stream", "unknown stream '" + id + "'");
        }
        if (!s.ok()) return ErrorResponse(s);
        http::HttpResponse r;
        r.status = 204;
        r.content_type = "";
        return r;
      },
      admin));
  return Status::Ok();
}

}  // namespace kadr::camera
