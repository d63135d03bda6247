#include "viewer/live_view_service.h"

#include <algorithm>
#include <charconv>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "imaging/decode.h"
#include "protocol/frame.h"

namespace kadr::viewer {
namespace {

namespace header = protocol::header;

// Ids are shown in error messages; a hostile one is cut short.
constexpr std::size_t kMaxEchoedIdLength = 80;
constexpr char kLiveCacheControl[] = "no-cache, no-store, must-revalidate";
constexpr char kLiveMetric[] = "kadr_viewer_live_messages_total";
constexpr char kLiveHelp[] =
    "Live-stream frames and results the viewer took into its live hub, by outcome.";
// How long EventSource waits before reconnecting after the connection drops.
constexpr char kSseRetry[] = "retry: 2000\n\n";

Counter& LiveCounter(MetricsRegistry& metrics, const char* kind, const char* outcome) {
  return metrics.GetCounter(kLiveMetric, kLiveHelp, {{"kind", kind}, {"outcome", outcome}});
}

std::string Echo(const std::string& id) {
  return id.size() <= kMaxEchoedIdLength ? id : id.substr(0, kMaxEchoedIdLength) + "...";
}

}  // namespace

std::vector<std::string> LiveViewTopics() {
  // A pattern rather than kLiveResultsTopic and kLiveAnnotatedTopic: they are created with
  // the first live stream, and a pattern waits for them quietly.
  return {"^kadr\\.live\\.(results|annotated)$"};
}

LiveViewService::LiveViewService(LiveViewOptions options, bus::FrameSubscriber& subscriber,
                                 MetricsRegistry& metrics)
    : options_(std::move(options)),
      subscriber_(subscriber),
      live_frames_(LiveCounter(metrics, "frame", "accepted")),
      live_results_(LiveCounter(metrics, "result", "accepted")),
      live_frames_malformed_(LiveCounter(metrics, "frame", "malformed")),
      live_results_malformed_(LiveCounter(metrics, "result", "malformed")),
      ignored_(metrics.GetCounter("kadr_viewer_ignored_messages_total",
                                  "Messages the live view acknowledged and ignored (not of a "
                                  "live stream).")),
      live_clients_gauge_(
          metrics.GetGauge("kadr_viewer_live_clients", "Open live connections (MJPEG and SSE).")),
      live_rejected_(metrics.GetCounter(
          "kadr_viewer_live_rejected_total",
          "Live connections refused with 503 because max_live_clients were open.")),
      live_(options_.live) {}

LiveViewStats LiveViewService::stats() const {
  LiveViewStats s;
  s.live_frames = live_frames_.value();
  s.live_results = live_results_.value();
  s.live_malformed = live_frames_malformed_.value() + live_results_malformed_.value();
  s.ignored = ignored_.value();
  s.live_clients = live_clients_.load();
  s.live_rejected = live_rejected_.value();
  return s;
}

Status LiveViewService::PutLive(const bus::InboundMessage& in, bool image) {
  const bus::Message& m = in.message;
  std::string stream = protocol::StreamIdOf(m);
  std::optional<std::int64_t> sequence;
  if (auto text = m.headers.Get(header::kSequence)) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
    if (ec == std::errc() && end == text->data() + text->size()) sequence = v;
  }
  if (image) {
    // Served as-is in image/jpeg parts: anything else would need a re-encode per frame.
    if (imaging::SniffFormat(m.value) != imaging::ImageFormat::kJpeg) {
      return InvalidArgumentError("live annotated image is not a JPEG");
    }
    return live_.Put(LiveKind::kFrame, stream, sequence.value_or(0),
                     std::string(bus::ValueText(m)));
  }
  const std::string_view text = bus::ValueText(m);
  auto parsed = protocol::FrameResultFromJson(text);
  if (!parsed) return InvalidArgumentError(parsed.error().message());
  if (stream.empty()) stream = parsed->stream_id;
  return live_.Put(LiveKind::kResult, stream, sequence.value_or(parsed->sequence),
                   std::string(text));
}

void LiveViewService::Handle(const bus::InboundMessage& in) {
  const auto frame_kind = in.message.headers.Get(header::kKind);
  if (!frame_kind || *frame_kind != protocol::kind::kLive) {
    ignored_.Increment();
    subscriber_.Ack(in.token);
    return;
  }
  const bool image = protocol::IsImageMessage(in.message);
  if (Status s = PutLive(in, image); s.ok()) {
    (image ? live_frames_ : live_results_).Increment();
  } else {
    (image ? live_frames_malformed_ : live_results_malformed_).Increment();
    spdlog::warn("dropped malformed live {} at={} key={} error=\"{}\"", image ? "image" : "result",
                 bus::Describe(in.token), in.message.key, s.message());
  }
  subscriber_.Ack(in.token);
}

std::size_t LiveViewService::PollOnce(std::chrono::milliseconds timeout) {
  const auto batch = subscriber_.Poll(options_.max_batch, timeout, std::chrono::milliseconds(0));
  for (const auto& in : batch) Handle(in);
  return batch.size();
}

Status LiveViewService::Run(const std::stop_token& stop) {
  spdlog::info("live view started");
  while (!stop.stop_requested()) (void)PollOnce(options_.poll_timeout);
  Status closed = subscriber_.Close();
  const LiveViewStats s = stats();
  spdlog::info("live view stopped frames={} results={} malformed={}", s.live_frames, s.live_results,
               s.live_malformed);
  return closed;
}

// ---- live view -------------------------------------------------------------------------------

namespace {

// Holds one of max_live_clients (and one of its client's) for as long as the response that
// owns it lives.
class LiveSlot {
 public:
  LiveSlot(std::atomic<std::size_t>& count, Gauge& gauge, std::function<void()> release)
      : count_(count), gauge_(gauge), release_(std::move(release)) {
    gauge_.Add(1);
  }
  ~LiveSlot() {
    count_.fetch_sub(1);
    gauge_.Sub(1);
    release_();
  }
  LiveSlot(const LiveSlot&) = delete;
  LiveSlot& operator=(const LiveSlot&) = delete;

 private:
  std::atomic<std::size_t>& count_;
  Gauge& gauge_;
  std::function<void()> release_;
};

// One SSE event; every line of `data` gets its own "data:" field (JSON from other producers
// may be pretty-printed).
std::string SseEvent(std::int64_t sequence, std::string_view data) {
  std::string out = "id: " + std::to_string(sequence) + "\nevent: result\n";
  std::size_t pos = 0;
  while (pos <= data.size()) {
    std::size_t end = data.find('\n', pos);
    if (end == std::string_view::npos) end = data.size();
    std::string_view line = data.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out += "data: ";
    out += line;
    out += '\n';
    pos = end + 1;
  }
  out += '\n';
  return out;
}

}  // namespace

void LiveViewService::WriteMjpeg(const std::string& stream, http::StreamWriter& out) {
  const std::stop_token stop = out.StopToken();
  const std::string delimiter = std::string("--") + kMjpegBoundary + "\r\n";
  std::uint64_t seen = 0;
  std::optional<LiveItem> last;
  bool first = true;
  auto last_write = std::chrono::steady_clock::now();
  while (out.Alive()) {
    auto item = live_.Next(LiveKind::kFrame, stream, seen, options_.live_check_interval, stop);
    if (stop.stop_requested()) return;
    if (item) {
      seen = item->generation;
      last = std::move(item);
    } else if (!last || std::chrono::steady_clock::now() - last_write < options_.live_keepalive) {
      continue;
    }
    // Each part is followed by the next delimiter at once, so that a browser shows the frame
    // as soon as it arrives instead of when the next one does.
    std::string part = first ? delimiter : std::string();
    part += "Content-Type: image/jpeg\r\nContent-Length: " + std::to_string(last->data->size()) +
            "\r\nkadr-seq: " + std::to_string(last->sequence) + "\r\n\r\n";
    part += *last->data;
    part += "\r\n" + delimiter;
    if (!out.Write(part)) return;
    first = false;
    last_write = std::chrono::steady_clock::now();
  }
}

void LiveViewService::WriteEvents(const std::string& stream, http::StreamWriter& out) {
  const std::stop_token stop = out.StopToken();
  if (!out.Write(kSseRetry)) return;
  std::uint64_t seen = 0;
  auto last_write = std::chrono::steady_clock::now();
  while (out.Alive()) {
    auto item = live_.Next(LiveKind::kResult, stream, seen, options_.live_check_interval, stop);
    if (stop.stop_requested()) return;
    std::string event;
    if (item) {
      seen = item->generation;
      event = SseEvent(item->sequence, *item->data);
    } else if (std::chrono::steady_clock::now() - last_write >= options_.live_keepalive) {
      event = ": keep-alive\n\n";
    } else {
      continue;
    }
    if (!out.Write(event)) return;
    last_write = std::chrono::steady_clock::now();
  }
}

http::HttpResponse LiveViewService::LiveStream(const http::HttpRequest& req, LiveKind kind) {
  const std::string& id = req.path_params.at("id");
  if (id.size() > options_.live.max_stream_id_bytes) {
    return http::HttpResponse::Error(InvalidArgumentError(
        "stream id longer than " + std::to_string(options_.live.max_stream_id_bytes) + " bytes"));
  }
  std::size_t open = live_clients_.load();
  do {
    if (open >= options_.max_live_clients) {
      live_rejected_.Increment();
      return http::HttpResponse::Error(UnavailableError(
          "too many live connections (" + std::to_string(options_.max_live_clients) +
          " open); close one or raise --max-live-clients"));
    }
  } while (!live_clients_.compare_exchange_weak(open, open + 1));
  // One client may not take them all (ADR 0009's rule for uploads, applied to live views).
  const std::string client = req.principal.empty() ? req.remote_addr : "token:" + req.principal;
  const std::size_t per_client = options_.max_live_clients_per_client != 0
                                     ? options_.max_live_clients_per_client
                                     : std::max<std::size_t>(1, options_.max_live_clients / 2);
  {
    std::lock_guard lock(per_client_mu_);
    std::size_t& mine = per_client_[client];
    if (mine >= per_client) {
      if (mine == 0) per_client_.erase(client);
      live_clients_.fetch_sub(1);
      live_rejected_.Increment();
      http::HttpResponse busy = http::HttpResponse::Error(
          ResourceExhaustedError("this client has " + std::to_string(per_client) +
                                 " live connections open, the most one client may; close one"));
      busy.headers.emplace("Retry-After", "5");
      return busy;
    }
    ++mine;
  }
  // Released with the response: when the stream ends, or at once for a HEAD request.
  auto slot = std::make_shared<LiveSlot>(live_clients_, live_clients_gauge_, [this, client] {
    std::lock_guard lock(per_client_mu_);
    const auto it = per_client_.find(client);
    if (it != per_client_.end() && --it->second == 0) per_client_.erase(it);
  });
  http::HttpResponse r;
  if (kind == LiveKind::kFrame) {
    r = http::HttpResponse::Stream(
        std::string("multipart/x-mixed-replace; boundary=") + kMjpegBoundary,
        [this, id, slot](http::StreamWriter& out) { WriteMjpeg(id, out); });
  } else {
    // Exactly "text/event-stream": httplib would gzip (and so hold back) other text/ types.
    r = http::HttpResponse::Stream(
        "text/event-stream", [this, id, slot](http::StreamWriter& out) { WriteEvents(id, out); });
  }
  r.headers.emplace("Cache-Control", kLiveCacheControl);
  r.headers.emplace("X-Accel-Buffering", "no");  // nginx: pass each part on at once
  return r;
}

http::HttpResponse LiveViewService::LiveFrame(const http::HttpRequest& req) {
  const std::string& id = req.path_params.at("id");
  auto frame = live_.Latest(LiveKind::kFrame, id);
  if (!frame) {
    return http::HttpResponse::Error(
        NotFoundError("no live frame for stream '" + Echo(id) + "' yet"));
  }
  http::HttpResponse r;
  r.content_type = "image/jpeg";
  r.body = *frame->data;
  r.headers.emplace("Cache-Control", kLiveCacheControl);
  r.headers.emplace("kadr-seq", std::to_string(frame->sequence));
  return r;
}

Status LiveViewService::RegisterRoutes(http::HttpServer& server) {
  const http::RouteOptions read{.access = http::Access::kRead};
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/streams/:id/live",
      [this](const http::HttpRequest& req) { return LiveStream(req, LiveKind::kFrame); }, read));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/streams/:id/events",
      [this](const http::HttpRequest& req) { return LiveStream(req, LiveKind::kResult); }, read));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/streams/:id/frame",
      [this](const http::HttpRequest& req) { return LiveFrame(req); }, read));
  return Status::Ok();
}

}  // namespace kadr::viewer
