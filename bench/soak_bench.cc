// kadr_soak_bench: `kadr up` under steady load for a long time, watching what grows.
//
//   `kadr up --http-port 0 --models <model> --data-dir <tmp>` as a child process, then
//   --concurrency clients POST /api/v1/detect with a real photo back to back for --minutes.
//   Every --every seconds it prints the requests answered (and how), kadr's resident memory
//   (VmRSS of the process, /proc) and the size of its data folder (the job store, its images
//   and videos). At the end: the slope of both after --warmup-minutes (least squares, per
//   minute and as % of the value at warm-up's end), so that a cache that fills and stops is
//   told from growth that goes on.
//
// A plain program (not Google Benchmark). Without KADR_TEST_DATA (and no --models-dir) it
// says so and exits 0. Figures and how to read them: docs/performance.md "Soak".
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench_process.h"

namespace kadr::bench {
namespace {

struct Config {
  std::string model = "yolox_nano";
  std::string image = "bus.jpg";  // bare names: $KADR_TEST_DATA/media
  std::string models_dir;         // empty: $KADR_TEST_DATA/models
  std::string kadr;               // the binary; empty: next to this bench
  std::string extra_up_args;
  int concurrency = 2;
  double minutes = 10;
  double warmup_minutes = 2;
  double every_seconds = 30;
};

// VmRSS of `pid`, MiB; -1 when unreadable.
double RssMiB(pid_t pid) {
  const std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  const auto at = status.find("VmRSS:");
  if (at == std::string::npos) return -1;
  return std::atof(status.c_str() + at + 6) / 1024.0;  // kB
}

// Bytes under `dir`, MiB.
double FolderMiB(const fs::path& dir) {
  std::error_code ec;
  std::uintmax_t total = 0;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) total += it->file_size(size_ec);
  }
  return static_cast<double>(total) / (1024.0 * 1024.0);
}

struct Sample {
  double minute = 0;
  double rss = 0;
  double disk = 0;
};

// Least-squares slope of `value` over minutes, for the samples from `from_minute` on.
double Slope(const std::vector<Sample>& samples, double from_minute, double Sample::*value) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const Sample& s : samples) {
    if (s.minute < from_minute) continue;
    n += 1;
    sx += s.minute;
    sy += s.*value;
    sxx += s.minute * s.minute;
    sxy += s.minute * (s.*value);
  }
  const double d = n * sxx - sx * sx;
  return n < 2 || d == 0 ? 0 : (n * sxy - sx * sy) / d;
}

int Run(const Config& cfg) {
  const char* data = std::getenv("KADR_TEST_DATA");
  if ((data == nullptr || *data == '\0') && cfg.models_dir.empty()) {
    std::printf("KADR_TEST_DATA is not set and no --models-dir: nothing to measure\n");
    return 0;
  }
  const std::string models_dir =
      cfg.models_dir.empty() ? (fs::path(data) / "models").string() : cfg.models_dir;
  fs::path image_path = cfg.image;
  if (!image_path.has_parent_path() && data != nullptr) {
    image_path = fs::path(data) / "media" / cfg.image;
  }
  const std::string photo = ReadFile(image_path);
  if (photo.empty()) {
    std::fprintf(stderr, "error: cannot read %s\n", image_path.c_str());
    return 1;
  }

  const fs::path tmp = fs::temp_directory_path() / ("kadr_soak_" + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const fs::path data_dir = tmp / "data";
  std::vector<std::string> argv = {FindKadr(cfg.kadr).string(),
                                   "--models-dir",
                                   models_dir,
                                   "up",
                                   "--http-port",
                                   "0",
                                   "--models",
                                   cfg.model,
                                   "--data-dir",
                                   data_dir.string()};
  for (std::string& a : SplitWords(cfg.extra_up_args)) argv.push_back(std::move(a));
  std::string command;
  for (const std::string& a : argv) command += (command.empty() ? "" : " ") + a;
  std::printf("starting: %s\n", command.c_str());
  KadrProcess kadr;
  if (!kadr.Start(argv, tmp / "kadr.log")) return 1;
  const std::string url = kadr.WaitForUrl(std::chrono::seconds(120));
  if (url.empty() || !WaitReady(kadr, url, std::chrono::seconds(120))) {
    std::fprintf(stderr, "error: kadr did not start; %s\n%s", kadr.Stop().c_str(),
                 kadr.LogTail().c_str());
    return 1;
  }

  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, too_many{0}, failed{0};
  std::vector<std::thread> clients;
  const std::string path = "/api/v1/detect?model=" + cfg.model;
  for (int c = 0; c < cfg.concurrency; ++c) {
    clients.emplace_back([&] {
      auto client = MakeClient(url);
      while (!stop) {
        auto res = client->Post(path, photo, "image/jpeg");
        if (res && res->status == 200) {
          ++ok;
        } else if (res && res->status == 429) {
          ++too_many;
        } else {
          ++failed;
        }
      }
    });
  }

  std::printf("%d clients, %s (%zu bytes), %.0f min; a line every %.0f s\n", cfg.concurrency,
              image_path.filename().c_str(), photo.size(), cfg.minutes, cfg.every_seconds);
  std::printf("%8s %9s %6s %7s %9s %10s\n", "minute", "answered", "429", "failed", "RSS MiB",
              "data MiB");
  std::vector<Sample> samples;
  const auto start = SteadyClock::now();
  const auto end = start + std::chrono::duration<double>(cfg.minutes * 60);
  auto next = start;
  while (true) {
    const auto now = SteadyClock::now();
    if (now >= next) {
      Sample s{Seconds(now - start) / 60, RssMiB(kadr.pid()), FolderMiB(data_dir)};
      samples.push_back(s);
      std::printf("%8.2f %9ld %6ld %7ld %9.1f %10.1f\n", s.minute, ok.load(), too_many.load(),
                  failed.load(), s.rss, s.disk);
      std::fflush(stdout);
      next += std::chrono::duration_cast<SteadyClock::duration>(
          std::chrono::duration<double>(cfg.every_seconds));
    }
    if (now >= end || !kadr.Alive()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  stop = true;
  for (auto& t : clients) t.join();

  auto at_warmup = [&](double Sample::*value) {
    for (const Sample& s : samples) {
      if (s.minute >= cfg.warmup_minutes) return s.*value;
    }
    return samples.empty() ? 0.0 : samples.back().*value;
  };
  const double rss_slope = Slope(samples, cfg.warmup_minutes, &Sample::rss);
  const double disk_slope = Slope(samples, cfg.warmup_minutes, &Sample::disk);
  const double span = cfg.minutes - cfg.warmup_minutes;
  const double rss0 = at_warmup(&Sample::rss);
  std::printf("\nafter %.1f min of warm-up, over %.1f min:\n", cfg.warmup_minutes, span);
  std::printf("  RSS  slope %+.2f MiB/min (%+.1f %% of %.1f MiB over the %.1f min)\n", rss_slope,
              rss0 > 0 ? 100.0 * rss_slope * span / rss0 : 0.0, rss0, span);
  std::printf("  data slope %+.2f MiB/min (%.1f MiB at warm-up's end)\n", disk_slope,
              at_warmup(&Sample::disk));
  std::printf("  requests: %ld answered, %ld 429, %ld failed; %.1f per s\n", ok.load(),
              too_many.load(), failed.load(),
              static_cast<double>(ok.load()) / Seconds(SteadyClock::now() - start));
  const bool alive = kadr.Alive();
  std::printf("kadr: %s\n", kadr.Stop().c_str());
  fs::remove_all(tmp);
  return alive && failed.load() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kadr::bench

int main(int argc, char** argv) {
  kadr::bench::Config cfg;
  CLI::App app{"kadr up under steady load: RSS and data-folder size over time, and their slopes"};
  app.add_option("--model", cfg.model, "model to load")->capture_default_str();
  app.add_option("--image", cfg.image, "photo to send (bare names: $KADR_TEST_DATA/media)")
      ->capture_default_str();
  app.add_option("--models-dir", cfg.models_dir, "models folder (default: $KADR_TEST_DATA/models)");
  app.add_option("--kadr", cfg.kadr, "the kadr binary (default: next to this bench)");
  app.add_option("--up-args", cfg.extra_up_args, "more arguments for kadr up");
  app.add_option("--concurrency", cfg.concurrency, "clients")->capture_default_str();
  app.add_option("--minutes", cfg.minutes, "how long to load")->capture_default_str();
  app.add_option("--warmup-minutes", cfg.warmup_minutes, "left out of the slopes")
      ->capture_default_str();
  app.add_option("--every", cfg.every_seconds, "seconds between lines")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return kadr::bench::Run(cfg);
}
