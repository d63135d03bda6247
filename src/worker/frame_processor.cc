#include "worker/frame_processor.h"

#include <algorithm>
#include <optional>
#include <string>

namespace kadr::worker {

bool SameDetectOptions(const protocol::DetectOptions& a, const protocol::DetectOptions& b) {
  return a.confidence == b.confidence && a.iou == b.iou && a.classes == b.classes;
}

Result<DecodedFrame> FrameProcessor::Decode(std::span<const std::uint8_t> bytes,
                                            const inference::ModelInfo& model,
                                            SteadyClock::time_point started) const {
  Stopwatch sw;
  DecodedFrame f;
  f.started = started;
  f.result.model = model.name;
  if (!model.needs_pixels) {
    auto probe = imaging::ProbeImage(bytes, options_.limits);
    if (!probe) return probe.error();
    f.result.image_width = probe->width;
    f.result.image_height = probe->height;
  } else {
    auto image = imaging::DecodeImage(bytes, options_.limits);
    if (!image) return image.error();
    f.image = std::move(*image);
    f.result.image_width = f.image.cols;
    f.result.image_height = f.image.rows;
  }
  f.result.timings_ms["decode"] = sw.Lap();
  return f;
}

Status FrameProcessor::Detect(std::span<DecodedFrame* const> frames,
                              const protocol::DetectOptions& options,
                              inference::Detector& detector) const {
  const inference::ModelInfo& info = detector.info();
  if (!info.needs_pixels || frames.empty()) return Status::Ok();
  if (frames.size() > static_cast<std::size_t>(std::max(1, info.max_batch))) {
    return InvalidArgumentError("batch of " + std::to_string(frames.size()) +
                                " images is over the model's max_batch " +
                                std::to_string(info.max_batch));
  }
  std::vector<cv::Mat> images;
  images.reserve(frames.size());
  for (const DecodedFrame* f : frames) images.push_back(f->image);
  inference::DetectTimings dt;
  auto detected = detector.Detect(images, options, &dt);
  if (!detected) return detected.error();
  if (detected->size() != frames.size()) {
    return InternalError("detector returned " + std::to_string(detected->size()) + " results for " +
                         std::to_string(frames.size()) + " images");
  }
  const double share = 1.0 / static_cast<double>(frames.size());
  for (std::size_t k = 0; k < frames.size(); ++k) {
    auto& r = frames[k]->result;
    r.timings_ms["preprocess"] = dt.preprocess_ms * share;
    r.timings_ms["inference"] = dt.inference_ms * share;
    r.timings_ms["postprocess"] = dt.postprocess_ms * share;
    r.detections = std::move((*detected)[k]);
  }
  return Status::Ok();
}

Result<ProcessedFrame> FrameProcessor::Finish(DecodedFrame frame, bool draw) const {
  ProcessedFrame out;
  out.result = std::move(frame.result);
  if (options_.draw && draw && !frame.image.empty()) {
    Stopwatch sw;
    imaging::Annotate(frame.image, out.result.detections, options_.annotate);
    out.result.timings_ms["draw"] = sw.Lap();
    auto jpeg = imaging::EncodeJpeg(frame.image, options_.jpeg);
    if (!jpeg) return jpeg.error();
    out.annotated_jpeg = std::move(*jpeg);
    out.result.timings_ms["encode"] = sw.Lap();
  }
  out.result.timings_ms["total"] = MillisSince(frame.started);
  return out;
}

Result<ProcessedFrame> FrameProcessor::Process(
    std::span<const std::uint8_t> image_bytes, inference::Detector& detector,
    const protocol::DetectOptions& detect_options) const {
  const FrameInput input{image_bytes, detect_options, true};
  return std::move(ProcessBatch(std::span<const FrameInput>(&input, 1), detector).front());
}

std::vector<Result<ProcessedFrame>> FrameProcessor::ProcessBatch(
    std::span<const FrameInput> inputs, inference::Detector& detector) const {
  const std::size_t n = inputs.size();
  const auto started = SteadyClock::now();  // "total" of each image counts from here
  const inference::ModelInfo& info = detector.info();

  std::vector<Result<DecodedFrame>> frames;
  frames.reserve(n);
  for (const FrameInput& input : inputs) frames.push_back(Decode(input.bytes, info, started));

  // Runs of decoded images with equal options, cut at the model's batch size.
  const std::size_t max_batch = static_cast<std::size_t>(std::max(1, info.max_batch));
  for (std::size_t start = 0; start < n;) {
    if (!frames[start]) {
      ++start;
      continue;
    }
    std::vector<std::size_t> members = {start};
    std::vector<DecodedFrame*> run = {&*frames[start]};
    std::size_t next = start + 1;
    while (next < n && run.size() < max_batch && frames[next] &&
           SameDetectOptions(inputs[next].options, inputs[start].options)) {
      members.push_back(next);
      run.push_back(&*frames[next]);
      ++next;
    }
    const Status s = Detect(run, inputs[start].options, detector);
    if (!s.ok()) {
      for (std::size_t i : members) frames[i] = s;
    }
    start = next;
  }

  std::vector<Result<ProcessedFrame>> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (!frames[i]) {
      out.emplace_back(frames[i].error());
      continue;
    }
    out.push_back(Finish(std::move(*frames[i]), inputs[i].draw));
  }
  return out;
}

}  // namespace kadr::worker
