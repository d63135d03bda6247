// `kadr detect`: run one model over image and video files, write annotated JPEGs and MP4s,
// print detections. Each file is a run of the frame engine (engine/frame_run.h) with the model
// in this process (worker::LocalDispatcher): videos are read by the one video reader, tracked,
// drawn and written by the one video writer (engine/video_file.h) with a progress bar on
// stderr, and their JSON lines are those of a video job's result.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/detail/commands.h"
#include "engine/frame_run.h"
#include "engine/video_file.h"
#include "video/video.h"
#include "worker/frame_processor.h"
#include "worker/local_dispatcher.h"

namespace kadr::cli {
namespace {

struct DetectArgs {
  std::string model;
  std::optional<float> confidence;
  std::optional<float> iou;
  std::string classes;  // comma-separated names or ids
  std::vector<std::string> images;
  std::filesystem::path out_dir = "out";
  std::string output;  // a single video's annotated MP4 (default: out_dir/<stem>.<model>.mp4)
  bool json = false;
  bool no_progress = false;
  bool no_draw = false;
};

// "person,car" or "0,2" -> class ids, checked against the model's labels.
Result<std::vector<int>> ParseClasses(const std::string& text, const inference::ModelInfo& info) {
  std::vector<int> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    int id = -1;
    for (size_t i = 0; i < info.labels.size(); ++i) {
      if (info.labels[i] == item) id = static_cast<int>(i);
    }
    if (id < 0 && item.find_first_not_of("0123456789") == std::string::npos) id = std::stoi(item);
    if (id < 0 || id >= static_cast<int>(info.labels.size())) {
      return InvalidArgumentError("'" + item + "' is not a class of model '" + info.name + "'");
    }
    ids.push_back(id);
  }
  return ids;
}

Result<std::vector<std::uint8_t>> ReadFile(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return NotFoundError("no such file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return NotFoundError("cannot stat file");
  // Bound the read by the decoder's limit so a huge file is refused before it is loaded.
  if (size > imaging::DecodeLimits{}.max_bytes) {
    return TooLargeError(fmt::format("file is {} bytes, over the limit of {} bytes", size,
                                     imaging::DecodeLimits{}.max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in),
                                  std::istreambuf_iterator<char>()};
  if (bytes.size() != size) return InvalidArgumentError("short read");
  return bytes;
}

std::string Summary(const protocol::DetectionResult& r) {
  std::string s;
  for (size_t i = 0; i < r.detections.size() && i < 8; ++i) {
    s += fmt::format("{}{} {:.2f}", i ? ", " : "", r.detections[i].label, r.detections[i].score);
  }
  if (r.detections.size() > 8) s += fmt::format(", ... ({} more)", r.detections.size() - 8);
  return s;
}

// The container of a video file, from its first bytes; nullopt for anything else.
std::optional<std::string_view> SniffVideoFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::uint8_t head[16] = {};
  in.read(reinterpret_cast<char*>(head), sizeof(head));
  const auto n = static_cast<std::size_t>(std::max<std::streamsize>(0, in.gcount()));
  return video::SniffVideo(std::span<const std::uint8_t>(head, n));
}

// Frames done / total, fps and ETA on stderr: redrawn in place on a terminal, otherwise one
// line about every 10%.
class ProgressBar {
 public:
  ProgressBar(std::string name, std::int64_t total, bool enabled)
      : name_(std::move(name)), total_(total), enabled_(enabled), tty_(::isatty(2) == 1) {}

  void Update(std::int64_t done) {
    if (!enabled_) return;
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    const double fps = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
    if (tty_) {
      if (done != total_ && Clock::now() - last_ < std::chrono::milliseconds(100)) return;
      last_ = Clock::now();
      fmt::print(stderr, "\r{}", Line(done, fps));
      std::fflush(stderr);
      return;
    }
    const int decile = total_ > 0 ? static_cast<int>(done * 10 / total_) : 0;
    if (decile > last_decile_) {
      last_decile_ = decile;
      fmt::print(stderr, "{}\n", Line(done, fps));
    }
  }

  void Finish(std::int64_t done) {
    if (!enabled_) return;
    if (!tty_ && last_decile_ >= 10 && done == total_) return;  // its line is out already
    total_ = done;  // the real count, whatever the container said
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    const std::string line = Line(done, seconds > 0 ? static_cast<double>(done) / seconds : 0.0);
    fmt::print(stderr, "{}{}\n", tty_ ? "\r" : "", line);
  }

 private:
  using Clock = std::chrono::steady_clock;

  std::string Line(std::int64_t done, double fps) const {
    constexpr int kWidth = 30;
    const double ratio =
        total_ > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total_)) : 0.0;
    const int filled = static_cast<int>(ratio * kWidth);
    std::string eta = "--";
    if (fps > 0 && total_ >= done) {
      eta = fmt::format("{}s", std::llround(static_cast<double>(total_ - done) / fps));
    }
    return fmt::format("{} [{}{}] {}/{} frames {:5.1f} fps ETA {}   ", name_,
                       std::string(filled, '#'), std::string(kWidth - filled, '.'), done, total_,
                       fps, eta);
  }

  std::string name_;
  std::int64_t total_;
  bool enabled_;
  bool tty_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_{};
  int last_decile_ = 0;
};

// Keeps the one frame a one-frame run releases.
class LastFrame final : public engine::Sink {
 public:
  Status Release(engine::Released frame) override {
    frame_ = std::move(frame);
    return Status::Ok();
  }
  std::optional<engine::Released>& frame() { return frame_; }

 private:
  std::optional<engine::Released> frame_;
};

// The engine's options for a run of `kadr detect`: lossless, in order, one frame at a time.
engine::RunOptions LocalRun(bool draw) {
  engine::RunOptions ro;
  ro.id = "detect";
  ro.mode = engine::Mode::kLossless;
  ro.window = 1;
  ro.ordered = true;
  ro.fail_on_send_error = true;
  ro.want_image = draw;
  ro.image_topic = worker::kLocalImageTopic;
  ro.keep_frames = true;  // a frame that fails is written un-annotated
  return ro;
}

// One video: decode -> detect -> track -> draw -> MP4, one JSON line per frame with --json.
// Returns the error that stopped it.
Status DetectVideo(const DetectArgs& args, const std::string& file,
                   const worker::FrameProcessor& processor, inference::Detector& detector,
                   const protocol::DetectOptions& options, bool single_video) {
  const std::filesystem::path path(file);
  const inference::ModelInfo& info = detector.info();
  ASSIGN_OR_RETURN(auto source, engine::VideoFileSource::Open(file));
  std::string out_path;
  if (!args.no_draw) {
    out_path = single_video && !args.output.empty()
                   ? args.output
                   : (args.out_dir / (path.stem().string() + "." + info.name + ".mp4")).string();
  }
  ProgressBar progress(path.filename().string(), source->stated_frames(), !args.no_progress);
  engine::VideoFileSinkOptions so;
  so.mp4_path = out_path;
  so.fps = source->fps();
  so.width = source->width();
  so.height = source->height();
  std::ostringstream lines;
  if (args.json) {
    so.lines = &lines;
    so.file = file;
  }
  so.on_frame = [&](std::int64_t written, bool) {
    // Each frame's line as soon as it is written, so a long video streams its results.
    if (args.json) {
      fmt::print("{}", lines.str());
      lines.str({});
      std::fflush(stdout);
    }
    progress.Update(written);
  };
  ASSIGN_OR_RETURN(auto sink, engine::VideoFileSink::Open(std::move(so)));
  worker::LocalDispatcher dispatcher(processor, detector, options, /*track=*/true, !args.no_draw);
  engine::FrameRun run(LocalRun(!args.no_draw), dispatcher, *sink);
  const auto started = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(run.Run(*source, std::stop_token()));
  const std::int64_t frames = sink->written();
  progress.Finish(frames);
  RETURN_IF_ERROR(sink->Close());
  if (args.json) fmt::print("{}", lines.str());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (args.json) {
    nlohmann::json j = {{"file", file},
                        {"annotated", out_path},
                        {"frames", frames},
                        {"fps", source->fps()},
                        {"detections", sink->detections()},
                        {"tracks", sink->max_track_id()}};
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print(
        "{}: {}x{}, {} frames at {:.2f} fps, {} detections, {} tracks ({:.1f} s, {:.1f} "
        "frames/s)\n",
        file, source->width(), source->height(), frames, source->fps(), sink->detections(),
        sink->max_track_id(), seconds, seconds > 0 ? static_cast<double>(frames) / seconds : 0.0);
    if (!out_path.empty()) fmt::print("  annotated video: {}\n", out_path);
  }
  std::fflush(stdout);
  return Status::Ok();
}

// One image: its whole trip through the model in this process.
Result<engine::Released> DetectImage(const std::filesystem::path& path,
                                     const worker::FrameProcessor& processor,
                                     inference::Detector& detector,
                                     const protocol::DetectOptions& options, bool draw) {
  ASSIGN_OR_RETURN(auto bytes, ReadFile(path));
  engine::SourceFrame frame;
  frame.encoded = std::move(bytes);
  engine::FramesSource source({std::move(frame)});
  worker::LocalDispatcher dispatcher(processor, detector, options, /*track=*/false, draw);
  LastFrame sink;
  engine::FrameRun run(LocalRun(draw), dispatcher, sink);
  RETURN_IF_ERROR(run.Run(source, std::stop_token()));
  if (!sink.frame() || !sink.frame()->result) return InternalError("the image got no answer");
  const protocol::FrameResult& result = *sink.frame()->result;
  if (result.status != protocol::FrameStatus::kOk) return result.error;
  return std::move(*sink.frame());
}

int RunDetect(const DetectArgs& args, const GlobalOptions& global) {
  auto detector = LoadModel(global, args.model);
  if (!detector) return 2;
  const inference::ModelInfo& info = (*detector)->info();
  protocol::DetectOptions options;
  options.confidence = args.confidence;
  options.iou = args.iou;
  auto classes = ParseClasses(args.classes, info);
  if (!classes) {
    fmt::print(stderr, "error: {}\n", classes.error().ToString());
    return 2;
  }
  options.classes = std::move(*classes);
  if (Status s = inference::ValidateOptions(options, info); !s.ok()) {
    fmt::print(stderr, "error: {}\n", s.ToString());
    return 2;
  }

  worker::FrameProcessorOptions fp_options;
  fp_options.draw = !args.no_draw;
  worker::FrameProcessor processor(fp_options);
  std::error_code ec;
  if (fp_options.draw) {
    std::filesystem::create_directories(args.out_dir, ec);
    if (ec) {
      fmt::print(stderr, "error: cannot create output folder {}: {}\n", args.out_dir.string(),
                 ec.message());
      return 2;
    }
  }

  std::size_t videos = 0;
  for (const auto& file : args.images) videos += SniffVideoFile(file).has_value() ? 1 : 0;
  if (!args.output.empty() && videos != 1) {
    fmt::print(stderr, "error: --output names the annotated MP4 of exactly one video ({} given)\n",
               videos);
    return 2;
  }

  int failures = 0;
  for (const auto& image : args.images) {
    const std::filesystem::path path(image);
    if (SniffVideoFile(path)) {
      const Status s = DetectVideo(args, image, processor, **detector, options, videos == 1);
      if (!s.ok()) {
        ++failures;
        if (args.json) {
          nlohmann::json j = {
              {"file", image},
              {"error", {{"code", StatusCodeName(s.code())}, {"message", s.message()}}}};
          fmt::print("{}\n", j.dump());
        }
        fmt::print(stderr, "{}: error: {}\n", image, s.ToString());
      }
      continue;
    }
    auto processed = DetectImage(path, processor, **detector, options, fp_options.draw);
    if (!processed) {
      ++failures;
      if (args.json) {
        nlohmann::json j = {{"file", image},
                            {"error",
                             {{"code", StatusCodeName(processed.error().code())},
                              {"message", processed.error().message()}}}};
        fmt::print("{}\n", j.dump());
      }
      fmt::print(stderr, "{}: error: {}\n", image, processed.error().ToString());
      continue;
    }
    std::string annotated;
    if (fp_options.draw) {
      const auto out_path = args.out_dir / (path.stem().string() + "." + info.name + ".jpg");
      std::ofstream out(out_path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(processed->image.data()),
                static_cast<std::streamsize>(processed->image.size()));
      if (!out) {
        ++failures;
        fmt::print(stderr, "{}: error: cannot write {}\n", image, out_path.string());
        continue;
      }
      annotated = out_path.string();
    }
    const auto& r = processed->result->result;
    if (args.json) {
      nlohmann::json j = {{"file", image},
                          {"annotated", annotated},
                          {"result", nlohmann::json::parse(protocol::ToJson(r))}};
      fmt::print("{}\n", j.dump());
    } else {
      const auto& t = r.timings_ms;
      auto ms = [&](const char* k) { return t.count(k) ? t.at(k) : 0.0; };
      fmt::print("{}: {}x{}, {} detections{}{}\n", image, r.image_width, r.image_height,
                 r.detections.size(), r.detections.empty() ? "" : ": ", Summary(r));
      if (!annotated.empty()) fmt::print("  annotated image: {}\n", annotated);
      fmt::print(
          "  ms: decode {:.1f}, preprocess {:.1f}, inference {:.1f}, postprocess {:.1f}, "
          "draw {:.1f}, encode {:.1f}, total {:.1f}\n",
          ms("decode"), ms("preprocess"), ms("inference"), ms("postprocess"), ms("draw"),
          ms("encode"), ms("total"));
    }
    std::fflush(stdout);
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

Command AddDetectCommand(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<DetectArgs>();
  CLI::App* sub =
      app.add_subcommand("detect", "run a model on image or video files and annotate them");
  sub->add_option("--model,-m", args->model, "model name (see `kadr models`)")
      ->envname("KADR_MODEL")
      ->required();
  sub->add_option("--conf", args->confidence, "confidence threshold, 0..1 (model default if unset)")
      ->envname("KADR_CONF")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--iou", args->iou, "NMS IoU threshold, 0..1 (model default if unset)")
      ->envname("KADR_IOU")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--classes", args->classes,
                  "keep only these classes: names or ids, comma-separated")
      ->envname("KADR_CLASSES");
  sub->add_option("--out,-o", args->out_dir, "folder for annotated images and videos")
      ->envname("KADR_OUT")
      ->capture_default_str();
  sub->add_option("--output", args->output,
                  "annotated MP4 of a single video (default: <out>/<stem>.<model>.mp4)")
      ->envname("KADR_OUTPUT");
  sub->add_flag("--json", args->json,
                "print one JSON object per image, per video frame and per video on stdout")
      ->envname("KADR_JSON");
  sub->add_flag("--no-progress", args->no_progress, "no progress bar on stderr for videos")
      ->envname("KADR_NO_PROGRESS");
  sub->add_flag("--no-draw", args->no_draw, "detections only: no annotated images")
      ->envname("KADR_NO_DRAW");
  sub->add_option("images", args->images,
                  "image files (JPEG, PNG, BMP, WebP, TIFF) and video files (MP4, MOV, MKV, AVI)")
      ->required();
  return {sub, [args, &global] { return RunDetect(*args, global); }};
}

}  // namespace kadr::cli
