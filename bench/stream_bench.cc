// stream_bench: the numbers of the camera and video-job paths (issue 5), in one run on one
// machine. A plain program that drives `kadr up` as a child process (bench_process.h).
//
//   1. raw     the model in this process on the frames of the live source: decode of the
//              source video (OpenCV/FFmpeg) + Detector::Detect per frame, for --seconds. Its
//              rate R is what one worker can sustain on this machine.
//   2. live    `kadr up --models <model>`; a stream (POST /api/v1/streams, mode live, looping
//              file) from a copy of --live-video re-timed with ffmpeg to at least 2.5 R frames
//              per second (a file in live mode is paced at its own rate, like a camera), with
//              the target fps set to 1 x R, then 2 x R. After --warmup-seconds the bench reads
//              GET /api/v1/streams/{id} once a second for --seconds and prints the stream's
//              glass-to-glass latency p50/p95 (capture -> result back at the camera service, over
//              its last results), input and output fps and drops by reason, and the spread of
//              the p95 over the samples: bounded latency means it does not grow at 2 x.
//   3. video   a plain loop (decode + Detect per frame of --video, in this process) against a
//              video job on the same file (POST /api/v1/jobs, polled until done; once with
//              the annotated MP4, once results only with draw=0) and a lossless
//              stream of it (POST /api/v1/streams, mode lossless, until finished): frames/s,
//              and each as a ratio of the plain loop. The same again on a copy of --video
//              scaled to --scaled-video (default 1920x1080, made with ffmpeg).
//
// Without KADR_TEST_DATA (and no --models-dir) it says so and exits 0. Results and how to read
// them belong in docs/performance.md.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/videoio.hpp>
#include <spdlog/spdlog.h>

#include "bench_process.h"
#include "bench_stats.h"
#include "inference/detector.h"
#include "inference/model_registry.h"

namespace kadr::bench {
namespace {

using Json = nlohmann::json;

struct Config {
  std::string model = "yolox_nano";
  double seconds = 20;        // per measured live phase, and the raw loops
  double warmup_seconds = 8;  // per live phase, before sampling
  std::string live_video;     // empty: $KADR_TEST_DATA/media/vtest.avi
  std::string video;          // empty: $KADR_TEST_DATA/media/cars.mp4
  std::vector<double> multiples = {1.0, 2.0};
  std::string kadr;        // path of the kadr binary; empty: next to this one
  std::string models_dir;  // empty: $KADR_TEST_DATA/models
  std::string extra_up_args;
  int threads = 0;  // OpenCV threads, raw and kadr (--threads); 0: OpenCV's default
  bool skip_live = false;
  bool skip_video = false;
  std::string scaled_video = "1920x1080";  // WxH of the second video run; empty: none
  int start_timeout_s = 90;
};

// Decode + Detect per frame of `path`, looping, for `seconds`; frames per second. The first
// frame is run once untimed (warm-up).
std::optional<double> RawRate(inference::Detector& detector, const std::string& path,
                              double seconds, bool loop) {
  cv::VideoCapture cap(path, cv::CAP_FFMPEG);
  if (!cap.isOpened()) {
    std::fprintf(stderr, "error: cannot open %s\n", path.c_str());
    return std::nullopt;
  }
  const protocol::DetectOptions options;
  cv::Mat frame;
  if (!cap.read(frame)) return std::nullopt;
  if (!detector.Detect(std::span(&frame, 1), options)) return std::nullopt;
  long frames = 0;
  const auto start = SteadyClock::now();
  while (seconds <= 0 || Seconds(SteadyClock::now() - start) < seconds) {
    if (!cap.read(frame)) {
      if (!loop) break;
      cap.open(path, cv::CAP_FFMPEG);
      continue;
    }
    auto r = detector.Detect(std::span(&frame, 1), options);
    if (!r) {
      std::fprintf(stderr, "error: detect: %s\n", r.error().ToString().c_str());
      return std::nullopt;
    }
    ++frames;
  }
  return static_cast<double>(frames) / Seconds(SteadyClock::now() - start);
}

// The frame rate of a video file as FFmpeg reports it; 0 when unknown.
double VideoFps(const std::string& path) {
  cv::VideoCapture cap(path, cv::CAP_FFMPEG);
  return cap.isOpened() ? cap.get(cv::CAP_PROP_FPS) : 0;
}

// A copy of `in` played `factor` times faster (same frames, frame rate x factor), MJPEG in AVI
// so that decoding it is cheap and every frame is a key frame. False when ffmpeg fails.
bool Retime(const std::string& in, const fs::path& out, double factor, double fps) {
  char cmd[2048];
  std::snprintf(cmd, sizeof cmd,
                "ffmpeg -loglevel error -y -i '%s' -an -vf 'setpts=PTS/%.4f' -r %.3f "
                "-c:v mjpeg -q:v 3 '%s'",
                in.c_str(), factor, fps * factor, out.c_str());
  return std::system(cmd) == 0 && fs::exists(out);
}

// A copy of `in` scaled to `size` ("WxH"), H.264 like the original. False when ffmpeg fails.
bool Scale(const std::string& in, const fs::path& out, const std::string& size) {
  const auto x = size.find('x');
  if (x == std::string::npos) return false;
  char cmd[2048];
  std::snprintf(cmd, sizeof cmd,
                "ffmpeg -loglevel error -y -i '%s' -an -vf 'scale=%s:%s' -c:v libx264 "
                "-preset veryfast -crf 18 -pix_fmt yuv420p '%s'",
                in.c_str(), size.substr(0, x).c_str(), size.substr(x + 1).c_str(), out.c_str());
  return std::system(cmd) == 0 && fs::exists(out);
}

struct Sample {
  double p50 = NAN, p95 = NAN, input_fps = 0, output_fps = 0;
  long dropped = 0, done = 0;
  Json dropped_by;
  std::string state;
};

std::optional<Sample> ReadStream(httplib::Client& client, const std::string& id) {
  auto res = client.Get("/api/v1/streams/" + id);
  if (!res || res->status != 200) return std::nullopt;
  const Json j = Json::parse(res->body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  Sample s;
  s.state = j.value("state", "");
  const Json& st = j.value("stats", Json::object());
  auto num = [](const Json& v) { return v.is_number() ? v.get<double>() : NAN; };
  if (st.contains("latency_ms")) {
    s.p50 = num(st["latency_ms"].value("p50", Json()));
    s.p95 = num(st["latency_ms"].value("p95", Json()));
  }
  s.input_fps = st.value("input_fps", 0.0);
  s.output_fps = st.value("output_fps", 0.0);
  s.dropped = st.value("dropped_frames", 0L);
  s.done = st.value("frames_done", 0L);
  s.dropped_by = st.value("dropped", Json::object());
  return s;
}

void RunLive(const Config& cfg, httplib::Client& client, const fs::path& source, double rate) {
  for (double m : cfg.multiples) {
    const double fps = std::max(0.5, m * rate);
    const Json body = {{"source", source.string()},
                       {"model", cfg.model},
                       {"fps", fps},
                       {"mode", "live"},
                       {"loop", true}};
    auto res = client.Post("/api/v1/streams", body.dump(), "application/json");
    if (!res || res->status != 201) {
      std::fprintf(stderr, "error: POST /api/v1/streams: %s\n",
                   res ? (std::to_string(res->status) + " " + res->body).c_str() : "no answer");
      return;
    }
    const std::string id = Json::parse(res->body).value("id", "");
    std::printf("\nlive %.1fx: target %.1f fps (worker sustains %.1f), stream %s; warm-up %.0f s\n",
                m, fps, rate, id.c_str(), cfg.warmup_seconds);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg.warmup_seconds));
    std::optional<Sample> first;
    std::vector<double> p95s, p50s;
    std::optional<Sample> last;
    const auto start = SteadyClock::now();
    while (Seconds(SteadyClock::now() - start) < cfg.seconds) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      auto s = ReadStream(client, id);
      if (!s) continue;
      if (!first) first = s;
      if (!std::isnan(s->p95)) p95s.push_back(s->p95);
      if (!std::isnan(s->p50)) p50s.push_back(s->p50);
      last = s;
    }
    if (last && first) {
      const double secs = Seconds(SteadyClock::now() - start);
      std::printf("  state %s; input %.1f fps, output %.1f fps; results in window %.1f/s\n",
                  last->state.c_str(), last->input_fps, last->output_fps,
                  static_cast<double>(last->done - first->done) / secs);
      std::printf(
          "  glass-to-glass p50 %.0f ms, p95 %.0f ms (last sample); p95 over %zu samples "
          "min %.0f / max %.0f ms; p50 first %.0f -> last %.0f ms\n",
          last->p50, last->p95, p95s.size(),
          p95s.empty() ? NAN : *std::min_element(p95s.begin(), p95s.end()),
          p95s.empty() ? NAN : *std::max_element(p95s.begin(), p95s.end()),
          p50s.empty() ? NAN : p50s.front(), p50s.empty() ? NAN : p50s.back());
      std::printf("  dropped during the window %ld (total %ld: %s)\n",
                  last->dropped - first->dropped, last->dropped, last->dropped_by.dump().c_str());
    } else {
      std::fprintf(stderr, "error: no stream stats read\n");
    }
    client.Delete("/api/v1/streams/" + id);
  }
}

// A video job on `video`, upload to done: frames per second (0 on failure). `draw`: the
// annotated MP4 too; otherwise results only (draw=0: no MP4 is written).
double RunVideoJob(const Config& cfg, httplib::Client& client, const std::string& video,
                   double plain_fps, bool draw) {
  const std::string bytes = ReadFile(video);
  const auto start = SteadyClock::now();
  auto res =
      client.Post("/api/v1/jobs?model=" + cfg.model + (draw ? "" : "&draw=0"), bytes, "video/mp4");
  if (!res || res->status != 202) {
    std::fprintf(
        stderr, "error: POST /api/v1/jobs: %s\n",
        res ? (std::to_string(res->status) + " " + res->body.substr(0, 300)).c_str() : "no answer");
    return 0;
  }
  const std::string id = Json::parse(res->body).value("id", "");
  Json job;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto r = client.Get("/api/v1/jobs/" + id);
    if (!r || r->status != 200) continue;
    job = Json::parse(r->body, nullptr, false);
    const std::string state = job.value("state", "");
    if (state != "queued" && state != "running") break;
  }
  const double secs = Seconds(SteadyClock::now() - start);
  const long frames = job.value("progress", Json::object()).value("frames_done", 0L);
  const double fps = static_cast<double>(frames) / secs;
  std::printf(
      "video job%s %s on %s: state %s, %ld frames in %.2f s = %.1f frames/s (upload to done); "
      "/ plain = %.2f\n",
      draw ? " (annotated MP4)" : " (results only, draw=0)", id.c_str(),
      fs::path(video).filename().c_str(), job.value("state", "?").c_str(), frames, secs, fps,
      fps / plain_fps);
  return fps;
}

// A lossless stream of `video` (every frame, as fast as the window allows), created to
// finished: frames per second (0 on failure).
double RunLosslessStream(const Config& cfg, httplib::Client& client, const std::string& video,
                         double plain_fps) {
  const Json body = {{"source", video}, {"model", cfg.model}, {"mode", "lossless"}, {"window", 4}};
  const auto start = SteadyClock::now();
  auto res = client.Post("/api/v1/streams", body.dump(), "application/json");
  if (!res || res->status != 201) {
    std::fprintf(stderr, "error: POST /api/v1/streams: %s\n",
                 res ? (std::to_string(res->status) + " " + res->body).c_str() : "no answer");
    return 0;
  }
  const std::string id = Json::parse(res->body).value("id", "");
  std::optional<Sample> s;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s = ReadStream(client, id);
    if (s && s->state != "connecting" && s->state != "running" && s->state != "reconnecting") {
      break;
    }
  }
  const double secs = Seconds(SteadyClock::now() - start);
  const double fps = static_cast<double>(s->done) / secs;
  std::printf(
      "lossless stream %s of %s: state %s, %ld frames in %.2f s = %.1f frames/s (dropped %ld); "
      "/ plain = %.2f\n",
      id.c_str(), fs::path(video).filename().c_str(), s->state.c_str(), s->done, secs, fps,
      s->dropped, fps / plain_fps);
  client.Delete("/api/v1/streams/" + id);
  return fps;
}

int Main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"stream_bench: live-stream latency and video-job throughput of `kadr up`"};
  app.add_option("--model", cfg.model, "registry name of the model")->capture_default_str();
  app.add_option("--seconds", cfg.seconds, "per measured phase")->capture_default_str();
  app.add_option("--warmup-seconds", cfg.warmup_seconds, "per live phase")->capture_default_str();
  app.add_option("--live-video", cfg.live_video, "source of the live stream (looped)");
  app.add_option("--video", cfg.video, "video of the video job");
  app.add_option("--multiples", cfg.multiples, "target fps as multiples of the raw rate");
  app.add_option("--kadr", cfg.kadr, "kadr binary (default: next to this bench)");
  app.add_option("--models-dir", cfg.models_dir, "default: $KADR_TEST_DATA/models");
  app.add_option("--extra-up-args", cfg.extra_up_args, "more `kadr up` flags");
  app.add_option("--threads", cfg.threads, "OpenCV threads (raw and kadr)");
  app.add_flag("--skip-live", cfg.skip_live);
  app.add_flag("--skip-video", cfg.skip_video);
  app.add_option("--scaled-video", cfg.scaled_video,
                 "WxH of a second video run on --video scaled (empty: none)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  const char* test_data = std::getenv("KADR_TEST_DATA");
  if (cfg.models_dir.empty() && test_data == nullptr) {
    std::printf("stream_bench: KADR_TEST_DATA is not set and no --models-dir: nothing to do\n");
    return 0;
  }
  const fs::path data = test_data ? test_data : "";
  if (cfg.models_dir.empty()) cfg.models_dir = (data / "models").string();
  if (cfg.live_video.empty()) cfg.live_video = (data / "media" / "vtest.avi").string();
  if (cfg.video.empty()) cfg.video = (data / "media" / "cars.mp4").string();
  if (cfg.threads > 0) cv::setNumThreads(cfg.threads);
  std::printf("stream_bench: model %s, %u CPUs, load %s\n", cfg.model.c_str(),
              std::thread::hardware_concurrency(), LoadAverage().c_str());

  inference::RegistryOptions options;
  options.models_dirs = {cfg.models_dir};
  auto registry = inference::ModelRegistry::Create(options);
  if (!registry) {
    std::fprintf(stderr, "error: registry: %s\n", registry.error().ToString().c_str());
    return 1;
  }
  auto detector = (*registry)->Get(cfg.model);
  if (!detector) {
    std::fprintf(stderr, "error: model: %s\n", detector.error().ToString().c_str());
    return 1;
  }

  char tmpl[] = "/tmp/kadr_stream_bench.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const fs::path tmp = tmpl;

  double live_rate = 0;
  fs::path live_source;
  if (!cfg.skip_live) {
    auto rate = RawRate(**detector, cfg.live_video, std::min(cfg.seconds, 10.0), true);
    if (!rate) return 1;
    live_rate = *rate;
    std::printf("raw decode + forward on %s: %.1f frames/s\n",
                fs::path(cfg.live_video).filename().c_str(), live_rate);
    const double src_fps = VideoFps(cfg.live_video);
    const double want =
        2.5 * live_rate * *std::max_element(cfg.multiples.begin(), cfg.multiples.end()) / 2.0;
    const double factor = src_fps > 0 ? std::max(1.0, std::ceil(want / src_fps)) : 1.0;
    live_source = tmp / "live.avi";
    if (!Retime(cfg.live_video, live_source, factor, src_fps)) {
      std::fprintf(stderr, "error: ffmpeg could not re-time %s\n", cfg.live_video.c_str());
      return 1;
    }
    std::printf("live source: %s at %.0f fps (%.0fx the original)\n", live_source.c_str(),
                src_fps * factor, factor);
  }
  // The videos of the video phase and the plain loop's rate on each.
  std::vector<std::pair<std::string, double>> videos;
  if (!cfg.skip_video) {
    videos.emplace_back(cfg.video, 0);
    if (!cfg.scaled_video.empty()) {
      const fs::path scaled = tmp / ("video_" + cfg.scaled_video + ".mp4");
      if (!Scale(cfg.video, scaled, cfg.scaled_video)) {
        std::fprintf(stderr, "error: ffmpeg could not scale %s\n", cfg.video.c_str());
        return 1;
      }
      videos.emplace_back(scaled.string(), 0);
    }
    for (auto& [video, plain] : videos) {
      auto rate = RawRate(**detector, video, 0, false);
      if (!rate) return 1;
      plain = *rate;
      std::printf("plain decode + forward loop on %s: %.1f frames/s\n",
                  fs::path(video).filename().c_str(), plain);
    }
  }
  detector->reset();
  registry->reset();

  const fs::path kadr_bin = FindKadr(cfg.kadr);
  std::vector<std::string> up = {kadr_bin.string()};
  if (cfg.threads > 0) up.insert(up.end(), {"--threads", std::to_string(cfg.threads)});
  up.insert(up.end(), {"up", "--http-port", "0", "--models", cfg.model, "--models-dir",
                       cfg.models_dir, "--data-dir", (tmp / "data").string(), "--source-dir",
                       tmp.string()});         // the live source is a file in tmp
  for (const auto& [video, plain] : videos) {  // the lossless streams read the videos
    up.insert(up.end(), {"--source-dir", fs::absolute(video).parent_path().string()});
  }
  for (std::string& a : SplitWords(cfg.extra_up_args)) up.push_back(std::move(a));
  KadrProcess kadr;
  if (!kadr.Start(up, tmp / "kadr.log")) return 1;
  const std::string url = kadr.WaitForUrl(std::chrono::seconds(cfg.start_timeout_s));
  if (url.empty() || !WaitReady(kadr, url, std::chrono::seconds(cfg.start_timeout_s))) {
    std::fprintf(stderr, "error: kadr did not start; log:\n%s", kadr.LogTail().c_str());
    return 1;
  }
  auto client = MakeClient(url);
  if (!cfg.skip_live) RunLive(cfg, *client, live_source, live_rate);
  for (const auto& [video, plain] : videos) {
    std::printf("\n");
    RunVideoJob(cfg, *client, video, plain, true);
    RunVideoJob(cfg, *client, video, plain, false);
    RunLosslessStream(cfg, *client, video, plain);
  }
  std::printf("\nkadr %s; load %s\n", kadr.Stop().c_str(), LoadAverage().c_str());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  return 0;
}

}  // namespace
}  // namespace kadr::bench

int main(int argc, char** argv) { return kadr::bench::Main(argc, argv); }
