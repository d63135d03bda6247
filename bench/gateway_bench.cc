// gateway_bench: what `kadr up` costs on top of the model, measured in one run on one machine.
//
//   1. raw     the model in this process: ModelRegistry (models from $KADR_TEST_DATA/models,
//              or --models-dir) -> Detector::Detect on one decoded image per call, cycling over
//              the images (decoded once up front), for --seconds (or --iterations calls).
//              Reports images/s and the p50/p99 of one call.
//   2. kadr    `kadr up --http-port 0 --models <model> --models-dir ... --data-dir <tmp>` as a
//              child process; the bench reads the URL from its stdout line
//              "kadr: web UI and API on http://127.0.0.1:PORT/", waits for GET /readyz == 200,
//              warms up, then --concurrency client threads (cpp-httplib, keep-alive) POST the
//              same images' bytes to /api/v1/detect?model=<model> for --seconds. Reports req/s,
//              p50/p99 of the whole request as the client sees it, errors by HTTP status, and
//              the mean of each key of the responses' timings_ms (gateway, queue, inference,
//              total, ...), so that the difference to raw can be attributed.
//   3. kadr    the same with one client (--latency-seconds; 0 skips it): at concurrency > 1
//      C=1     each request also waits for the others in the worker's queue, so the latency
//              kadr adds to one image is only visible with one request in flight.
// Then the child gets SIGTERM and the bench waits for it to exit.
//
// The summary compares kadr to raw: throughput ratio (issue 12's target at C=2: >= 0.9) and
// the p50 kadr adds (issue 13's target, for gateway + worker on Apache Kafka: <= 5 ms), plus CPU
// time per image in each process. Everything runs on the same machine, the HTTP clients included,
// so run it on an otherwise idle machine; the load average is printed at the start and the end.
//
// A plain program (not Google Benchmark): it drives a whole service. Without KADR_TEST_DATA
// (and no --models-dir) it says so and exits 0. Results and how to read them belong in
// docs/performance.md.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <spdlog/spdlog.h>

#include "bench_process.h"
#include "bench_stats.h"
#include "common/clock.h"
#include "imaging/decode.h"
#include "inference/detector.h"
#include "inference/model_registry.h"

namespace kadr::bench {
namespace {

using Json = nlohmann::json;

// The keys of timings_ms that the summary lists, in pipeline order (others are listed after).
constexpr const char* kTimingKeys[] = {"gateway",     "queue", "decode", "preprocess", "inference",
                                       "postprocess", "draw",  "encode", "total"};

struct Config {
  std::string model = "yolox_nano";
  double seconds = 20;          // per measured phase
  long iterations = 0;          // raw: stop after this many calls as well (0: time only)
  int concurrency = 2;          // kadr phase: client threads, one request in flight each
  double latency_seconds = -1;  // kadr C=1 phase; < 0: min(seconds, 10); 0: skip
  double warmup_seconds = 3;    // kadr: requests before measuring, at --concurrency
  std::vector<std::string> images;
  std::string kadr;        // path of the kadr binary; empty: next to this one
  std::string models_dir;  // empty: $KADR_TEST_DATA/models
  std::string extra_up_args;
  // Non-empty: instead of `kadr up`, a `kadr worker` and a `kadr gateway` process on these
  // Kafka brokers (e.g. scripts/kafka.sh's), with the topics made by `kadr topics` first.
  std::string separate_brokers;
  std::string extra_global_args;
  int threads = 0;  // OpenCV threads, raw and kadr (--threads); 0: OpenCV's default
  bool raw_only = false;
  bool no_draw = false;  // kadr: draw=0 (no annotated image)
  bool keep_data_dir = false;
  int start_timeout_s = 90;  // URL line and then /readyz, each
};

struct Image {
  std::string name;
  std::string bytes;  // the file as is: what the clients send
  std::string content_type;
  cv::Mat decoded;  // what the raw phase feeds the detector
};

// ---------------------------------------------------------------------------------------------
// Small helpers

// ---------------------------------------------------------------------------------------------
// Inputs

std::optional<std::vector<Image>> LoadImages(const Config& cfg, const char* test_data) {
  std::vector<Image> images;
  for (const std::string& name : cfg.images) {
    fs::path path = name;
    if (!fs::exists(path) && path.parent_path().empty() && test_data != nullptr) {
      path = fs::path(test_data) / "media" / name;
    }
    Image image;
    image.name = path.filename().string();
    image.bytes = ReadFile(path);
    if (image.bytes.empty()) {
      std::fprintf(stderr, "error: cannot read image %s\n", path.c_str());
      return std::nullopt;
    }
    const auto bytes = imaging::AsBytes(image.bytes);
    const imaging::ImageFormat format = imaging::SniffFormat(bytes);
    image.content_type = format == imaging::ImageFormat::kUnknown
                             ? "application/octet-stream"
                             : "image/" + std::string(imaging::FormatName(format));
    auto decoded = imaging::DecodeImage(bytes);
    if (!decoded) {
      std::fprintf(stderr, "error: %s: %s\n", path.c_str(), decoded.error().ToString().c_str());
      return std::nullopt;
    }
    image.decoded = std::move(*decoded);
    std::printf("image %-24s %4dx%-4d %8zu bytes  %s\n", image.name.c_str(), image.decoded.cols,
                image.decoded.rows, image.bytes.size(), image.content_type.c_str());
    images.push_back(std::move(image));
  }
  return images;
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the model in this process

struct RawResult {
  long calls = 0;
  double wall_s = 0;
  double cpu_s = 0;
  std::vector<double> ms;                                          // per Detect() call
  double preprocess_ms = 0, inference_ms = 0, postprocess_ms = 0;  // means
};

std::optional<RawResult> RunRaw(const Config& cfg, const std::vector<Image>& images) {
  inference::RegistryOptions options;
  options.models_dirs = {cfg.models_dir};
  auto registry = inference::ModelRegistry::Create(options);
  if (!registry) {
    std::fprintf(stderr, "error: registry: %s\n", registry.error().ToString().c_str());
    return std::nullopt;
  }
  auto detector = (*registry)->Get(cfg.model);  // loads and warms up the model
  if (!detector) {
    std::fprintf(stderr, "error: model %s: %s\n", cfg.model.c_str(),
                 detector.error().ToString().c_str());
    return std::nullopt;
  }
  const protocol::DetectOptions detect_options;  // the model's own thresholds, as kadr uses
  for (const Image& image : images) {            // one untimed call per image
    auto r = (*detector)->Detect(std::span(&image.decoded, 1), detect_options);
    if (!r) {
      std::fprintf(stderr, "error: detect %s: %s\n", image.name.c_str(),
                   r.error().ToString().c_str());
      return std::nullopt;
    }
  }

  RawResult out;
  double pre = 0, inf = 0, post = 0;
  const double cpu0 = SelfCpuSeconds();
  const auto start = SteadyClock::now();
  const auto deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                    std::chrono::duration<double>(cfg.seconds));
  while (SteadyClock::now() < deadline && (cfg.iterations <= 0 || out.calls < cfg.iterations)) {
    const Image& image = images[static_cast<std::size_t>(out.calls) % images.size()];
    inference::DetectTimings timings;
    Stopwatch sw;
    auto r = (*detector)->Detect(std::span(&image.decoded, 1), detect_options, &timings);
    out.ms.push_back(sw.Lap());
    if (!r) {
      std::fprintf(stderr, "error: detect: %s\n", r.error().ToString().c_str());
      return std::nullopt;
    }
    pre += timings.preprocess_ms;
    inf += timings.inference_ms;
    post += timings.postprocess_ms;
    ++out.calls;
  }
  out.wall_s = Seconds(SteadyClock::now() - start);
  out.cpu_s = SelfCpuSeconds() - cpu0;
  const double n = static_cast<double>(std::max(1L, out.calls));
  out.preprocess_ms = pre / n;
  out.inference_ms = inf / n;
  out.postprocess_ms = post / n;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Phase 2: kadr up as a child process

// `kadr up` with its stdout read by a thread (for the URL line) and its stderr in a log file.
// Not thread-safe except where noted; the destructor stops the child.

struct LoadResult {
  int concurrency = 0;
  double wall_s = 0;
  long requests = 0;
  std::vector<double> ok_ms;                 // client-side latency of 200 responses
  std::map<std::string, long> errors;        // "HTTP 503", "transport Read", ...
  std::map<std::string, double> timing_sum;  // timings_ms key -> sum over 200 responses
  std::map<std::string, long> timing_count;
  std::vector<double> client_minus_total_ms;  // client latency - timings_ms.total, per 200
  long bad_json = 0;
  double server_cpu_s = -1;  // the kadr process(es)
  double client_cpu_s = 0;   // this process (HTTP clients)
};

// `concurrency` threads each send one request at a time until `seconds` have passed; the
// requests still in flight at the deadline are waited for and counted.
LoadResult RunLoad(const std::string& url, const std::string& path,
                   const std::vector<Image>& images, int concurrency, double seconds,
                   const std::vector<pid_t>& server_pids) {
  struct PerThread {
    std::vector<double> ok_ms;
    std::vector<std::string> ok_bodies;  // parsed after the run, not while measuring
    std::map<std::string, long> errors;
    long requests = 0;
  };
  std::vector<PerThread> per(static_cast<std::size_t>(concurrency));
  const auto server_cpu = [&] {  // all kadr processes; -1 when one is unknown
    double sum = 0;
    for (const pid_t pid : server_pids) {
      const double s = ProcessCpuSeconds(pid);
      if (s < 0) return -1.0;
      sum += s;
    }
    return sum;
  };
  const double server_cpu0 = server_cpu();
  const double client_cpu0 = SelfCpuSeconds();
  const auto start = SteadyClock::now();
  const auto deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                    std::chrono::duration<double>(seconds));
  {
    std::vector<std::jthread> threads;
    threads.reserve(per.size());
    for (int t = 0; t < concurrency; ++t) {
      threads.emplace_back([&, t] {
        PerThread& mine = per[static_cast<std::size_t>(t)];
        auto client = MakeClient(url);
        const httplib::Headers headers = {{"Accept", "application/json"}};
        for (std::size_t i = static_cast<std::size_t>(t); SteadyClock::now() < deadline; ++i) {
          const Image& image = images[i % images.size()];
          Stopwatch sw;
          auto res = client->Post(path, headers, image.bytes, image.content_type);
          const double ms = sw.Lap();
          ++mine.requests;
          if (!res) {
            ++mine.errors["transport " + httplib::to_string(res.error())];
            // Do not spin on a dead server.
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            client = MakeClient(url);
          } else if (res->status != 200) {
            ++mine.errors["HTTP " + std::to_string(res->status)];
          } else {
            mine.ok_ms.push_back(ms);
            mine.ok_bodies.push_back(std::move(res->body));
          }
        }
      });
    }
  }
  LoadResult out;
  out.concurrency = concurrency;
  out.wall_s = Seconds(SteadyClock::now() - start);
  out.client_cpu_s = SelfCpuSeconds() - client_cpu0;
  const double server_cpu1 = server_cpu();
  if (server_cpu0 >= 0 && server_cpu1 >= 0) out.server_cpu_s = server_cpu1 - server_cpu0;

  for (PerThread& p : per) {
    out.requests += p.requests;
    for (const auto& [k, n] : p.errors) out.errors[k] += n;
    for (std::size_t i = 0; i < p.ok_ms.size(); ++i) {
      out.ok_ms.push_back(p.ok_ms[i]);
      Json body = Json::parse(p.ok_bodies[i], nullptr, /*allow_exceptions=*/false);
      if (!body.is_object() || !body.contains("timings_ms") || !body["timings_ms"].is_object()) {
        ++out.bad_json;
        continue;
      }
      for (const auto& [key, value] : body["timings_ms"].items()) {
        if (!value.is_number()) continue;
        out.timing_sum[key] += value.get<double>();
        ++out.timing_count[key];
        if (key == "total") out.client_minus_total_ms.push_back(p.ok_ms[i] - value.get<double>());
      }
    }
  }
  return out;
}

double TimingMean(const LoadResult& r, const std::string& key) {
  const auto it = r.timing_sum.find(key);
  if (it == r.timing_sum.end()) return -1;
  return it->second / static_cast<double>(r.timing_count.at(key));
}

void PrintLoad(const char* title, const LoadResult& r) {
  const double ok = static_cast<double>(r.ok_ms.size());
  std::printf("%s: %ld requests in %.1f s, %zu ok: %.2f req/s, p50 %.2f ms, p99 %.2f ms\n", title,
              r.requests, r.wall_s, r.ok_ms.size(), ok / r.wall_s, Percentile(r.ok_ms, 50),
              Percentile(r.ok_ms, 99));
  for (const auto& [what, n] : r.errors) std::printf("  error %-28s %ld\n", what.c_str(), n);
  if (r.bad_json > 0) std::printf("  200 without timings_ms: %ld\n", r.bad_json);
  std::printf("  timings_ms (mean over 200s):");
  for (const char* key : kTimingKeys) {
    const double m = TimingMean(r, key);
    if (m >= 0) std::printf(" %s %.2f", key, m);
  }
  for (const auto& entry : r.timing_sum) {
    const std::string& key = entry.first;
    if (std::find_if(std::begin(kTimingKeys), std::end(kTimingKeys),
                     [&](const char* k) { return key == k; }) == std::end(kTimingKeys)) {
      std::printf(" %s %.2f", key.c_str(), TimingMean(r, key));
    }
  }
  std::printf(
      "\n  client latency - timings_ms.total (HTTP transfer, client): mean %.2f, p50 %.2f, p99 "
      "%.2f ms\n",
      Mean(r.client_minus_total_ms), Percentile(r.client_minus_total_ms, 50),
      Percentile(r.client_minus_total_ms, 99));
  const double total = TimingMean(r, "total");
  const double inference = TimingMean(r, "inference");
  if (total >= 0 && inference >= 0) {
    std::printf("  total - inference (kadr's stages + transport): %.2f ms mean\n",
                total - inference);
  }
  if (ok > 0) {
    std::printf("  CPU per ok request: kadr %.1f ms, bench clients %.1f ms\n",
                r.server_cpu_s >= 0 ? r.server_cpu_s * 1000 / ok : -1.0,
                r.client_cpu_s * 1000 / ok);
  }
}

struct KadrResult {
  LoadResult load;
  std::optional<LoadResult> latency;  // C=1
};

std::optional<KadrResult> RunKadr(const Config& cfg, const std::vector<Image>& images) {
  const fs::path kadr_bin = FindKadr(cfg.kadr);
  if (!fs::exists(kadr_bin)) {
    std::fprintf(stderr,
                 "error: kadr binary not found at %s (build the kadr target or pass --kadr)\n",
                 kadr_bin.c_str());
    return std::nullopt;
  }
  char tmpl[] = "/tmp/kadr_gateway_bench.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    return std::nullopt;
  }
  const fs::path tmp = tmpl;
  const fs::path data_dir = tmp / "data";
  fs::create_directories(data_dir);

  // Global flags go before the command, its own flags after it.
  std::vector<std::string> global = {kadr_bin.string()};
  if (cfg.threads > 0) global.insert(global.end(), {"--threads", std::to_string(cfg.threads)});
  for (std::string& a : SplitWords(cfg.extra_global_args)) global.push_back(std::move(a));
  global.insert(global.end(), {"--models-dir", cfg.models_dir});
  std::vector<std::string> argv = global;
  KadrProcess worker;  // --separate-on only
  if (cfg.separate_brokers.empty()) {
    argv.insert(argv.end(),
                {"up", "--http-port", "0", "--models", cfg.model, "--data-dir", data_dir.string()});
  } else {
    std::string topics;
    for (const std::string& a : global) topics += a + " ";
    topics += "--log-level warn topics --models " + cfg.model + " --brokers " +
              cfg.separate_brokers + " >/dev/null";
    if (std::system(topics.c_str()) != 0) {
      std::fprintf(stderr, "error: `kadr topics` on %s failed\n", cfg.separate_brokers.c_str());
      return std::nullopt;
    }
    std::vector<std::string> wargv = global;
    wargv.insert(wargv.end(), {"worker", "-m", cfg.model, "--brokers", cfg.separate_brokers});
    if (!worker.Start(wargv, tmp / "worker.log")) return std::nullopt;
    argv.insert(argv.end(), {"gateway", "--http-port", "0", "--models", cfg.model, "--brokers",
                             cfg.separate_brokers});
  }
  for (std::string& a : SplitWords(cfg.extra_up_args)) argv.push_back(std::move(a));

  std::string command;
  for (const std::string& a : argv) command += (command.empty() ? "" : " ") + a;
  const fs::path log = tmp / "kadr.log";
  std::printf("\nstarting: %s\n  (stderr -> %s)\n", command.c_str(), log.c_str());
  std::fflush(stdout);

  std::optional<KadrResult> result;
  KadrProcess kadr;
  auto fail = [&](const char* what) {
    std::fprintf(stderr, "error: %s; kadr %s; last lines of its log:\n%s", what,
                 kadr.Stop().c_str(), kadr.LogTail().c_str());
  };
  if (!kadr.Start(argv, log)) return std::nullopt;
  std::vector<pid_t> pids = {kadr.pid()};
  if (!cfg.separate_brokers.empty()) pids.push_back(worker.pid());
  const auto started = SteadyClock::now();
  const std::string url = kadr.WaitForUrl(std::chrono::seconds(cfg.start_timeout_s));
  if (url.empty()) {
    fail("no URL line on kadr's stdout");
  } else {
    std::printf("serving on %s after %.1f s\n", url.c_str(), Seconds(SteadyClock::now() - started));
    if (!WaitReady(kadr, url, std::chrono::seconds(cfg.start_timeout_s))) {
      fail("kadr did not become ready");
    } else {
      std::string path = "/api/v1/detect?model=" + cfg.model;
      if (cfg.no_draw) path += "&draw=0";
      if (cfg.warmup_seconds > 0) {
        const LoadResult warm =
            RunLoad(url, path, images, cfg.concurrency, cfg.warmup_seconds, pids);
        std::printf("warm-up: %ld requests, %zu ok\n", warm.requests, warm.ok_ms.size());
      }
      result.emplace();
      std::printf("measuring POST %s, concurrency %d, %.0f s ...\n", path.c_str(), cfg.concurrency,
                  cfg.seconds);
      std::fflush(stdout);
      result->load = RunLoad(url, path, images, cfg.concurrency, cfg.seconds, pids);
      const double latency_s =
          cfg.latency_seconds < 0 ? std::min(cfg.seconds, 10.0) : cfg.latency_seconds;
      if (latency_s > 0 && cfg.concurrency != 1) {
        std::printf("measuring concurrency 1, %.0f s ...\n", latency_s);
        std::fflush(stdout);
        result->latency = RunLoad(url, path, images, 1, latency_s, pids);
      }
      if (!kadr.Alive()) {
        std::fprintf(stderr, "warning: kadr exited during the run; log:\n%s",
                     kadr.LogTail().c_str());
      }
      std::printf("kadr %s\n", kadr.Stop().c_str());
    }
  }
  if (cfg.keep_data_dir) {
    std::printf("kept %s\n", tmp.c_str());
  } else {
    std::error_code ec;
    fs::remove_all(tmp, ec);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Summary

void PrintSummary(const Config& cfg, const RawResult& raw, const KadrResult* kadr) {
  const double raw_rate = static_cast<double>(raw.calls) / raw.wall_s;
  const double raw_p50 = Percentile(raw.ms, 50);
  std::printf("\n== summary: %s, %zu images, %.0f s per phase ==\n", cfg.model.c_str(),
              cfg.images.size(), cfg.seconds);
  const std::string load_title = "kadr C=" + std::to_string(cfg.concurrency);
  std::printf("%-34s %14s %14s %14s\n", "", "raw", load_title.c_str(), "kadr C=1");
  auto row = [](const char* name, const std::string& a, const std::string& b,
                const std::string& c) {
    std::printf("%-34s %14s %14s %14s\n", name, a.c_str(), b.c_str(), c.c_str());
  };
  auto fmt = [](double v, const char* unit) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f%s", v, unit);
    return std::string(buf);
  };
  const LoadResult* load = kadr != nullptr ? &kadr->load : nullptr;
  const LoadResult* lat = kadr != nullptr && kadr->latency ? &*kadr->latency : nullptr;
  auto rate = [](const LoadResult* r) {
    return r == nullptr ? -1.0 : static_cast<double>(r->ok_ms.size()) / r->wall_s;
  };
  auto cell = [&](const LoadResult* r, double v, const char* unit) {
    return r == nullptr ? std::string("-") : fmt(v, unit);
  };
  row("throughput (img/s, req/s)", fmt(raw_rate, ""), cell(load, rate(load), ""),
      cell(lat, rate(lat), ""));
  row("p50 latency (ms)", fmt(raw_p50, ""), cell(load, load ? Percentile(load->ok_ms, 50) : 0, ""),
      cell(lat, lat ? Percentile(lat->ok_ms, 50) : 0, ""));
  row("p99 latency (ms)", fmt(Percentile(raw.ms, 99), ""),
      cell(load, load ? Percentile(load->ok_ms, 99) : 0, ""),
      cell(lat, lat ? Percentile(lat->ok_ms, 99) : 0, ""));
  row("forward / inference mean (ms)", fmt(raw.inference_ms, ""),
      cell(load, load ? TimingMean(*load, "inference") : 0, ""),
      cell(lat, lat ? TimingMean(*lat, "inference") : 0, ""));
  auto errors = [](const LoadResult* r) {
    if (r == nullptr) return std::string("-");
    long n = 0;
    for (const auto& [k, v] : r->errors) n += v;
    return std::to_string(n);
  };
  row("errors", "0", errors(load), errors(lat));
  const double raw_cpu = raw.cpu_s * 1000 / static_cast<double>(std::max(1L, raw.calls));
  auto cpu = [&](const LoadResult* r) {
    if (r == nullptr || r->ok_ms.empty() || r->server_cpu_s < 0) return std::string("-");
    return fmt((r->server_cpu_s + r->client_cpu_s) * 1000 / static_cast<double>(r->ok_ms.size()),
               "");
  };
  row("CPU ms per image (all processes)", fmt(raw_cpu, ""), cpu(load), cpu(lat));
  if (load == nullptr) return;

  const double ratio = rate(load) / raw_rate;
  std::printf("\nthroughput ratio kadr C=%d / raw: %.3f  (target >= 0.9: %s)\n", cfg.concurrency,
              ratio, ratio >= 0.9 ? "met" : "MISSED");
  const LoadResult* one = lat != nullptr ? lat : (cfg.concurrency == 1 ? load : nullptr);
  if (one != nullptr) {
    const double added = Percentile(one->ok_ms, 50) - raw_p50;
    std::printf("added p50, kadr C=1 - raw: %+.2f ms  (target <= 5 ms: %s)\n", added,
                added <= 5.0 ? "met" : "MISSED");
  }
  std::printf(
      "added p50, kadr C=%d - raw: %+.2f ms  (includes waiting behind the other %d "
      "request(s) in flight)\n",
      cfg.concurrency, Percentile(load->ok_ms, 50) - raw_p50, cfg.concurrency - 1);
}

int Main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"kadr gateway benchmark: the model in-process (raw) against `kadr up` over HTTP"};
  app.add_option("--model", cfg.model, "registry name of the model")->capture_default_str();
  app.add_option("--seconds", cfg.seconds, "duration of each measured phase")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--iterations", cfg.iterations, "raw: also stop after this many calls (0: no)")
      ->check(CLI::Range(0L, 100000000L))
      ->capture_default_str();
  app.add_option("--concurrency,-c", cfg.concurrency, "kadr: client threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--latency-seconds", cfg.latency_seconds,
                 "kadr: extra phase at concurrency 1 (default min(seconds, 10); 0: skip)");
  app.add_option("--warmup-seconds", cfg.warmup_seconds, "kadr: requests before measuring")
      ->check(CLI::Range(0.0, 600.0))
      ->capture_default_str();
  app.add_option("--images", cfg.images,
                 "image files; bare names are looked up in $KADR_TEST_DATA/media "
                 "(default: bus.jpg zidane.jpg dog.jpg)");
  app.add_option("--kadr", cfg.kadr,
                 "kadr binary (default: ../kadr or ../src/cli/kadr next to "
                 "this binary)");
  app.add_option("--models-dir", cfg.models_dir, "models folder (default: $KADR_TEST_DATA/models)");
  app.add_option("--separate-on", cfg.separate_brokers,
                 "Kafka brokers: run `kadr worker` + `kadr gateway` there instead of `kadr up`");
  app.add_option("--extra-up-args", cfg.extra_up_args,
                 "more arguments for `kadr up`, space-separated (e.g. \"--fetch-wait-ms 1\")");
  app.add_option("--extra-global-args", cfg.extra_global_args,
                 "more arguments for kadr before `up` (e.g. \"--log-level warn\")");
  app.add_option("--threads", cfg.threads,
                 "OpenCV threads for raw, and kadr --threads (0: default, all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_flag("--raw-only", cfg.raw_only, "measure the in-process model only");
  app.add_flag("--no-draw", cfg.no_draw, "kadr: send draw=0 (no annotated image)");
  app.add_flag("--keep-data-dir", cfg.keep_data_dir, "keep kadr's temporary data dir and log");
  app.add_option("--start-timeout", cfg.start_timeout_s,
                 "seconds to wait for kadr's URL line, and then for /readyz")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  const char* test_data = std::getenv("KADR_TEST_DATA");
  if (cfg.models_dir.empty()) {
    if (test_data == nullptr) {
      std::printf("KADR_TEST_DATA is not set (and no --models-dir): skipping gateway_bench\n");
      return 0;
    }
    cfg.models_dir = (fs::path(test_data) / "models").string();
  }
  if (cfg.images.empty()) cfg.images = {"bus.jpg", "zidane.jpg", "dog.jpg"};
  if (cfg.threads > 0) cv::setNumThreads(cfg.threads);
  // The kadr child is stopped through its destructor; a dropped connection must not kill us.
  signal(SIGPIPE, SIG_IGN);

  std::printf(
      "gateway_bench: model %s, %.0f s per phase, concurrency %d, %u CPUs, OpenCV "
      "threads %d\nload average at start: %s\n",
      cfg.model.c_str(), cfg.seconds, cfg.concurrency, std::thread::hardware_concurrency(),
      cv::getNumThreads(), LoadAverage().c_str());
  const auto images = LoadImages(cfg, test_data);
  if (!images) return 1;

  std::printf("\nraw: %s from %s, Detect() on one image per call ...\n", cfg.model.c_str(),
              cfg.models_dir.c_str());
  std::fflush(stdout);
  const auto raw = RunRaw(cfg, *images);  // the registry is gone before kadr starts
  if (!raw) return 1;
  std::printf(
      "raw: %ld calls in %.1f s: %.2f img/s, p50 %.2f ms, p99 %.2f ms; mean preprocess "
      "%.2f, forward %.2f, postprocess %.2f ms; CPU %.1f ms per image\n",
      raw->calls, raw->wall_s, static_cast<double>(raw->calls) / raw->wall_s,
      Percentile(raw->ms, 50), Percentile(raw->ms, 99), raw->preprocess_ms, raw->inference_ms,
      raw->postprocess_ms, raw->cpu_s * 1000 / static_cast<double>(std::max(1L, raw->calls)));

  std::optional<KadrResult> kadr;
  if (!cfg.raw_only) {
    kadr = RunKadr(cfg, *images);
    if (kadr) {
      std::printf("\n");
      PrintLoad(("kadr C=" + std::to_string(cfg.concurrency)).c_str(), kadr->load);
      if (kadr->latency) PrintLoad("kadr C=1", *kadr->latency);
    }
  }
  PrintSummary(cfg, *raw, kadr ? &*kadr : nullptr);
  std::printf("\nload average at end: %s\n", LoadAverage().c_str());
  if (cfg.raw_only) return 0;
  return kadr && !kadr->load.ok_ms.empty() ? 0 : 1;
}

}  // namespace
}  // namespace kadr::bench

int main(int argc, char** argv) { return kadr::bench::Main(argc, argv); }
