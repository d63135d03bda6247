#include "inference/detail/builtin_detectors.h"

#include <cmath>
#include <mutex>

#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include "common/clock.h"
#include "inference/detail/postprocess.h"

namespace kadr::inference {
namespace {

// HOG and Haar scan every scale of the image; past this size they get slow without
// finding more, so large images are scanned downscaled and boxes scaled back.
constexpr int kMaxScanSide = 800;

float Squash(double margin) { return static_cast<float>(1.0 / (1.0 + std::exp(-2.0 * margin))); }

class ClassicDetector : public Detector {
 public:
  explicit ClassicDetector(ModelInfo info) : info_(std::move(info)) {}
  const ModelInfo& info() const override { return info_; }

  Result<std::vector<std::vector<protocol::Detection>>> Detect(
      std::span<const cv::Mat> images, const protocol::DetectOptions& options,
      DetectTimings* timings) override {
    RETURN_IF_ERROR(ValidateOptions(options, info_));
    RETURN_IF_ERROR(ValidateImages(images));
    const float conf = options.confidence.value_or(info_.default_confidence);
    const float iou = options.iou.value_or(info_.default_iou);
    std::vector<std::vector<protocol::Detection>> out;
    DetectTimings total;
    std::lock_guard lock(mu_);
    for (const cv::Mat& img : images) {
      Stopwatch sw;
      const double scale =
          std::min(1.0, static_cast<double>(kMaxScanSide) / std::max(img.cols, img.rows));
      cv::Mat small;
      if (scale < 1.0) {
        cv::resize(img, small, {}, scale, scale, cv::INTER_LINEAR);
      } else {
        small = img;
      }
      total.preprocess_ms += sw.Lap();
      std::vector<cv::Rect> rects;
      std::vector<double> margins;
      Scan(small, rects, margins);
      total.inference_ms += sw.Lap();

      std::vector<Candidate> candidates;
      for (size_t i = 0; i < rects.size(); ++i) {
        const float score = Squash(margins[i]);
        const cv::Rect r = rects[i] & cv::Rect(0, 0, small.cols, small.rows);
        if (score < conf || r.area() <= 0) continue;
        candidates.push_back(
            {{static_cast<float>(r.x / scale), static_cast<float>(r.y / scale),
              static_cast<float>(r.width / scale), static_cast<float>(r.height / scale)},
             0,
             score,
             static_cast<int>(i)});
      }
      // Both detectors already group overlapping windows; NMS removes what is left.
      std::vector<protocol::Detection> kept;
      for (const Candidate& c : NonMaxSuppression(std::move(candidates), iou)) {
        protocol::Detection d;
        d.class_id = 0;
        d.label = info_.labels[0];
        d.score = c.score;
        d.box = c.box;
        kept.push_back(std::move(d));
      }
      out.push_back(std::move(kept));
      total.postprocess_ms += sw.Lap();
    }
    if (timings != nullptr) *timings = total;
    return out;
  }

 protected:
  virtual void Scan(const cv::Mat& bgr, std::vector<cv::Rect>& rects,
                    std::vector<double>& margins) = 0;

 private:
  std::mutex mu_;
  ModelInfo info_;
};

class HogPeopleDetector final : public ClassicDetector {
 public:
  explicit HogPeopleDetector(ModelInfo info) : ClassicDetector(std::move(info)) {
    hog_.setSVMDetector(cv::HOGDescriptor::getDefaultPeopleDetector());
  }

 protected:
  void Scan(const cv::Mat& bgr, std::vector<cv::Rect>& rects,
            std::vector<double>& margins) override {
    hog_.detectMultiScale(bgr, rects, margins, /*hitThreshold=*/0, cv::Size(8, 8), cv::Size(),
                          /*scale=*/1.05, /*groupThreshold=*/2);
  }

 private:
  cv::HOGDescriptor hog_;
};

class HaarFaceDetector final : public ClassicDetector {
 public:
  // cv::CascadeClassifier is a reference-counted handle: the copy shares the loaded cascade.
  HaarFaceDetector(ModelInfo info, const cv::CascadeClassifier& cascade)
      : ClassicDetector(std::move(info)), cascade_(cascade) {}

 protected:
  void Scan(const cv::Mat& bgr, std::vector<cv::Rect>& rects,
            std::vector<double>& margins) override {
    cv::cvtColor(bgr, gray_, cv::COLOR_BGR2GRAY);
    cv::equalizeHist(gray_, gray_);
    std::vector<int> levels;
    cascade_.detectMultiScale(gray_, rects, levels, margins, 1.1, 4, 0, cv::Size(24, 24),
                              cv::Size(), /*outputRejectLevels=*/true);
    // Level weights are around 0..10 for real faces; centre them so weight 2 maps to 0.5.
    for (double& m : margins) m = (m - 2.0) / 2.0;
  }

 private:
  cv::CascadeClassifier cascade_;
  cv::Mat gray_;
};

class NullDetector final : public Detector {
 public:
  explicit NullDetector(ModelInfo info) : info_(std::move(info)) {}
  const ModelInfo& info() const override { return info_; }
  Result<std::vector<std::vector<protocol::Detection>>> Detect(
      std::span<const cv::Mat> images, const protocol::DetectOptions& options,
      DetectTimings* timings) override {
    RETURN_IF_ERROR(ValidateOptions(options, info_));
    if (timings != nullptr) *timings = {};
    return std::vector<std::vector<protocol::Detection>>(images.size());
  }

 private:
  ModelInfo info_;
};

ModelInfo BuiltinInfo(const ModelSpec& spec, std::string backend, std::string label) {
  ModelInfo info;
  info.name = spec.name;
  info.family = spec.family;
  info.backend = std::move(backend);
  info.labels = {std::move(label)};
  info.default_confidence = spec.confidence.value_or(0.5f);
  info.default_iou = spec.iou.value_or(0.45f);
  return info;
}

}  // namespace

ModelSpec HogPeopleSpec() {
  ModelSpec s;
  s.name = kHogPeopleModel;
  s.family = ModelFamily::kHogPeople;
  s.labels = {"person"};
  s.source = "built-in (OpenCV HOG people detector)";
  return s;
}

ModelSpec HaarFaceSpec(const std::filesystem::path& cascade_dir) {
  ModelSpec s;
  s.name = kHaarFaceModel;
  s.family = ModelFamily::kHaarFace;
  s.path = cascade_dir / "haarcascade_frontalface_default.xml";
  s.labels = {"face"};
  s.source = "built-in (OpenCV Haar cascade, Debian opencv-data)";
  return s;
}

ModelSpec NullSpec() {
  ModelSpec s;
  s.name = kNullModel;
  s.family = ModelFamily::kNull;
  s.labels = {"nothing"};
  s.source = "built-in (no model: finds nothing, reads no pixels)";
  return s;
}

Result<std::unique_ptr<Detector>> CreateBuiltinDetector(const ModelSpec& spec) {
  switch (spec.family) {
    case ModelFamily::kNull: {
      ModelInfo info = BuiltinInfo(spec, "none", "nothing");
      info.needs_pixels = false;
      return std::unique_ptr<Detector>(std::make_unique<NullDetector>(std::move(info)));
    }
    case ModelFamily::kHogPeople:
      return std::unique_ptr<Detector>(
          std::make_unique<HogPeopleDetector>(BuiltinInfo(spec, "opencv-hog", "person")));
    case ModelFamily::kHaarFace: {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(spec.path, ec)) {
        return NotFoundError("model '" + spec.name + "': Haar cascade " + spec.path.string() +
                             " not found (install Debian's opencv-data package)");
      }
      cv::CascadeClassifier cascade;
      try {
        if (!cascade.load(spec.path.string())) {
          return UnsupportedError("model '" + spec.name + "': cannot load cascade " +
                                  spec.path.string());
        }
      } catch (const cv::Exception& e) {
        return UnsupportedError("model '" + spec.name + "': cannot load cascade: " + e.what());
      }
      return std::unique_ptr<Detector>(
          std::make_unique<HaarFaceDetector>(BuiltinInfo(spec, "opencv-haar", "face"), cascade));
    }
    default:
      return InvalidArgumentError("model '" + spec.name + "' is not a built-in family");
  }
}

}  // namespace kadr::inference
