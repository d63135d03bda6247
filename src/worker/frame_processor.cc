#include "worker/frame_processor.h"

#include <optional>

#include "common/clock.h"

namespace kadr::worker {
namespace {

bool SameOptions(const protocol::DetectOptions& a, const protocol::DetectOptions& b) {
  return a.confidence == b.confidence && a.iou == b.iou && a.classes == b.classes;
}

}  // namespace

Result<ProcessedFrame> FrameProcessor::Process(
    std::span<const std::uint8_t> image_bytes, inference::Detector& detector,
    const protocol::DetectOptions& detect_options) const {
  const FrameInput input{image_bytes, detect_options, true};
  return std::move(ProcessBatch(std::span<const FrameInput>(&input, 1), detector).front());
}

std::vector<Result<ProcessedFrame>> FrameProcessor::ProcessBatch(
    std::span<const FrameInput> inputs, inference::Detector& detector) const {
  const size_t n = inputs.size();
  std::vector<std::optional<Status>> errors(n);
  std::vector<ProcessedFrame> frames(n);
  std::vector<cv::Mat> images(n);
  const auto started = SteadyClock::now();  // "total" of each image counts from here
  const inference::ModelInfo& info = detector.info();

  for (size_t i = 0; i < n; ++i) {
    Stopwatch sw;
    auto& r = frames[i].result;
    r.model = info.name;
    if (!info.needs_pixels) {
      auto probe = imaging::ProbeImage(inputs[i].bytes, options_.limits);
      if (!probe) {
        errors[i] = probe.error();
        continue;
      }
      r.image_width = probe->width;
      r.image_height = probe->height;
      r.timings_ms["decode"] = sw.Lap();
      continue;
    }
    auto image = imaging::DecodeImage(inputs[i].bytes, options_.limits);
    if (!image) {
      errors[i] = image.error();
      continue;
    }
    images[i] = std::move(*image);
    r.image_width = images[i].cols;
    r.image_height = images[i].rows;
    r.timings_ms["decode"] = sw.Lap();
  }

  // Runs of decoded images with equal options, cut at the model's batch size.
  const size_t max_batch = static_cast<size_t>(std::max(1, info.max_batch));
  for (size_t start = 0; start < n;) {
    if (errors[start] || !info.needs_pixels) {
      ++start;
      continue;
    }
    std::vector<size_t> members = {start};
    std::vector<cv::Mat> batch = {images[start]};
    size_t next = start + 1;
    while (next < n && batch.size() < max_batch && !errors[next] &&
           SameOptions(inputs[next].options, inputs[start].options)) {
      members.push_back(next);
      batch.push_back(images[next]);
      ++next;
    }
    inference::DetectTimings dt;
    auto detected = detector.Detect(batch, inputs[start].options, &dt);
    const double share = 1.0 / static_cast<double>(members.size());
    for (size_t k = 0; k < members.size(); ++k) {
      const size_t i = members[k];
      if (!detected) {
        errors[i] = detected.error();
        continue;
      }
      auto& r = frames[i].result;
      r.timings_ms["preprocess"] = dt.preprocess_ms * share;
      r.timings_ms["inference"] = dt.inference_ms * share;
      r.timings_ms["postprocess"] = dt.postprocess_ms * share;
      r.detections = std::move((*detected)[k]);
    }
    start = next;
  }

  std::vector<Result<ProcessedFrame>> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (errors[i]) {
      out.emplace_back(*errors[i]);
      continue;
    }
    ProcessedFrame& f = frames[i];
    if (options_.draw && inputs[i].draw && info.needs_pixels) {
      Stopwatch sw;
      imaging::Annotate(images[i], f.result.detections, options_.annotate);
      f.result.timings_ms["draw"] = sw.Lap();
      auto jpeg = imaging::EncodeJpeg(images[i], options_.jpeg);
      if (!jpeg) {
        out.emplace_back(jpeg.error());
        continue;
      }
      f.annotated_jpeg = std::move(*jpeg);
      f.result.timings_ms["encode"] = sw.Lap();
    }
    f.result.timings_ms["total"] = MillisSince(started);
    out.emplace_back(std::move(f));
  }
  return out;
}

}  // namespace kadr::worker
