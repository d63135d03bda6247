// `kadr detect`: run one model over image files, write annotated JPEGs, print detections.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "worker/frame_processor.h"

namespace kadr::cli {
namespace {

struct DetectArgs {
  std::string model;
  std::optional<float> confidence;
  std::optional<float> iou;
  std::string classes;  // comma-separated names or ids
  std::vector<std::string> images;
  std::filesystem::path out_dir = "out";
  bool json = false;
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

  int failures = 0;
  for (const auto& image : args.images) {
    const std::filesystem::path path(image);
    auto processed = [&]() -> Result<worker::ProcessedFrame> {
      ASSIGN_OR_RETURN(auto bytes, ReadFile(path));
      return processor.Process(bytes, **detector, options);
    }();
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
      out.write(reinterpret_cast<const char*>(processed->annotated_jpeg.data()),
                static_cast<std::streamsize>(processed->annotated_jpeg.size()));
      if (!out) {
        ++failures;
        fmt::print(stderr, "{}: error: cannot write {}\n", image, out_path.string());
        continue;
      }
      annotated = out_path.string();
    }
    const auto& r = processed->result;
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
  CLI::App* sub = app.add_subcommand("detect", "run a model on image files and annotate them");
  sub->add_option("--model,-m", args->model, "model name (see `kadr models`)")->required();
  sub->add_option("--conf", args->confidence, "confidence threshold, 0..1 (model default if unset)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--iou", args->iou, "NMS IoU threshold, 0..1 (model default if unset)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--classes", args->classes,
                  "keep only these classes: names or ids, comma-separated");
  sub->add_option("--out,-o", args->out_dir, "folder for annotated images")->capture_default_str();
  sub->add_flag("--json", args->json, "print one JSON object per image on stdout");
  sub->add_flag("--no-draw", args->no_draw, "detections only: no annotated images");
  sub->add_option("images", args->images, "image files (JPEG, PNG, BMP, WebP, TIFF)")->required();
  return {sub, [args, &global] { return RunDetect(*args, global); }};
}

}  // namespace kadr::cli
