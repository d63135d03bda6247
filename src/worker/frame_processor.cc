#include "worker/frame_processor.h"

#include "common/clock.h"

namespace kadr::worker {

Result<ProcessedFrame> FrameProcessor::Process(
    std::span<const std::uint8_t> image_bytes, inference::Detector& detector,
    const protocol::DetectOptions& detect_options) const {
  Stopwatch total;
  Stopwatch sw;
  ProcessedFrame out;
  auto& timings = out.result.timings_ms;
  ASSIGN_OR_RETURN(cv::Mat image, imaging::DecodeImage(image_bytes, options_.limits));
  timings["decode"] = sw.Lap();

  inference::DetectTimings dt;
  ASSIGN_OR_RETURN(auto batch,
                   detector.Detect(std::span<const cv::Mat>(&image, 1), detect_options, &dt));
  sw.Lap();
  timings["preprocess"] = dt.preprocess_ms;
  timings["inference"] = dt.inference_ms;
  timings["postprocess"] = dt.postprocess_ms;

  out.result.model = detector.info().name;
  out.result.image_width = image.cols;
  out.result.image_height = image.rows;
  out.result.detections = std::move(batch.front());

  if (options_.draw) {
    imaging::Annotate(image, out.result.detections, options_.annotate);
    timings["draw"] = sw.Lap();
    ASSIGN_OR_RETURN(out.annotated_jpeg, imaging::EncodeJpeg(image, options_.jpeg));
    timings["encode"] = sw.Lap();
  }
  timings["total"] = total.Lap();
  return out;
}

}  // namespace kadr::worker
