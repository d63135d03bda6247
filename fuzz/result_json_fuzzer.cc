// Results and worker announcements (protocol/result.h, protocol/frame.h): the JSON every
// gateway, recorder, viewer and camera service reads from kadr.results, the reply topics,
// kadr.live.results and kadr.workers, which any producer on the cluster may write.
//
// Input: the message's JSON text, read as a result, a frame result and an announcement.
// What a reader then does with an accepted result is fuzzed too: a video job scales it to its
// frame's size (protocol::ScaleToSize) and draws it (imaging::Annotate, engine/video_file.cc),
// here onto a small frame whose size the input's length picks.
// Properties: an accepted result has masks of width*height bytes within the documented
// budget (50 MP each, 4x the image and 100 MP in all); it encodes to JSON that decodes again
// to the same detections; an accepted announcement encodes and decodes again, and liveness
// arithmetic on it is defined at the ends of its ranges.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include <opencv2/core.hpp>

#include "check.h"
#include "imaging/annotate.h"
#include "protocol/frame.h"
#include "protocol/result.h"

namespace {

namespace protocol = kadr::protocol;

// `budget`: the limits ResultFromJson promises (a scaled result's masks grow with the scale).
void CheckMasks(const protocol::DetectionResult& r, bool budget) {
  std::int64_t total = 0;
  for (const auto& d : r.detections) {
    if (!d.mask) continue;
    const std::int64_t pixels = static_cast<std::int64_t>(d.mask->width) * d.mask->height;
    KADR_FUZZ_CHECK(d.mask->width >= 0 && d.mask->height >= 0, "mask with a negative size");
    KADR_FUZZ_CHECK(!budget || pixels <= 50'000'000, "mask over 50 MP");
    KADR_FUZZ_CHECK(static_cast<std::int64_t>(d.mask->data.size()) == pixels,
                    "mask data is not width*height bytes");
    total += pixels;
  }
  if (!budget) return;
  KADR_FUZZ_CHECK(total <= 100'000'000, "masks over 100 MP in all");
  const std::int64_t area = static_cast<std::int64_t>(r.image_width) * r.image_height;
  // (Past 25 MP the 100 MP bound above is the tighter one; 4 * area could overflow there.)
  KADR_FUZZ_CHECK(area == 0 || area > 25'000'000 || total <= 4 * area, "masks over 4x the image");
}

void CheckRoundTrip(const protocol::DetectionResult& r) {
  auto again = protocol::ResultFromJson(protocol::ToJson(r));
  KADR_FUZZ_CHECK(again.has_value(), "an accepted result does not decode after encoding");
  KADR_FUZZ_CHECK(again->detections.size() == r.detections.size() &&
                      again->image_width == r.image_width &&
                      again->image_height == r.image_height && again->model == r.model,
                  "a result changes through encode + decode");
  for (std::size_t i = 0; i < r.detections.size(); ++i) {
    KADR_FUZZ_CHECK(again->detections[i].mask == r.detections[i].mask &&
                        again->detections[i].class_id == r.detections[i].class_id &&
                        again->detections[i].track_id == r.detections[i].track_id,
                    "a detection changes through encode + decode");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto result = protocol::ResultFromJson(text)) {
    CheckMasks(*result, /*budget=*/true);
    CheckRoundTrip(*result);
    // The frame a video job draws on: small, so one input stays cheap.
    static constexpr std::array<std::pair<int, int>, 4> kFrames{
        {{64, 48}, {1, 1}, {33, 200}, {320, 240}}};
    const auto [w, h] = kFrames[size % kFrames.size()];
    protocol::ScaleToSize(*result, w, h);
    CheckMasks(*result, /*budget=*/false);
    cv::Mat frame(h, w, CV_8UC3, cv::Scalar(0, 0, 0));
    kadr::imaging::Annotate(frame, result->detections);
  }

  if (auto frame = protocol::FrameResultFromJson(text)) {
    auto again = protocol::FrameResultFromJson(protocol::FrameResultToJson(*frame));
    KADR_FUZZ_CHECK(again.has_value(), "an accepted frame result does not decode after encoding");
    KADR_FUZZ_CHECK(again->frame_id == frame->frame_id && again->status == frame->status,
                    "a frame result changes through encode + decode");
  }

  if (auto hb = protocol::WorkerHeartbeatFromJson(text)) {
    KADR_FUZZ_CHECK(hb->losses.size() <= protocol::kMaxLossesPerHeartbeat, "too many losses");
    auto again = protocol::WorkerHeartbeatFromJson(protocol::WorkerHeartbeatToJson(*hb));
    KADR_FUZZ_CHECK(again.has_value(), "an accepted announcement does not decode after encoding");
    KADR_FUZZ_CHECK(again->worker_id == hb->worker_id && again->ts_ms == hb->ts_ms &&
                        again->labels == hb->labels,
                    "an announcement changes through encode + decode");
    (void)protocol::IsAlive(*hb, 0);
    (void)protocol::IsAlive(*hb, protocol::kMaxHeartbeatTsMs);
    (void)protocol::IsAlive(*hb, hb->ts_ms);
  }
  return 0;
}
