#include "inference/detail/onnx_detector.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <mutex>

#include <opencv2/core.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "inference/detail/letterbox.h"
#include "inference/detail/onnx_graph.h"
#include "inference/detail/onnxruntime_engine.h"
#include "inference/detail/opencv_dnn_engine.h"
#include "inference/detail/postprocess.h"

namespace kadr::inference {
namespace {

constexpr int kSegProtos = 32;
constexpr int kNanoDetRegMax = 7;
constexpr int kMaxDetections = 300;

// How to turn the network's raw outputs into candidates; fixed at load from the real
// output shapes of the warm-up pass.
struct OutputLayout {
  ModelFamily family = ModelFamily::kAuto;
  int num_classes = 0;
  // yolov8 / yolov8-seg: index of the [1, channels, anchors] output; v5 / yolox: [1, rows, cols].
  int main_output = 0;
  int proto_output = -1;  // yolov8-seg: [1, 32, ph, pw]
  // nanodet: (scores, boxes) output indices per level, strides ascending.
  std::vector<std::pair<int, int>> nanodet_levels;
  std::vector<int> nanodet_strides;
};

struct Preprocessing {
  PixelTransform pixels;
  PadAnchor anchor = PadAnchor::kCenter;
  float pad_value = 114;
};

std::string ShapeString(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out += 'x';
    out += std::to_string(s[i]);
  }
  return out + "]";
}

// Grid cells for strides 8, 16, 32 at this input size (YOLOX / YOLOv8 anchor counts).
int GridCells(int w, int h) {
  int cells = 0;
  for (int s : {8, 16, 32}) cells += (w / s) * (h / s);
  return cells;
}

Result<OutputLayout> DetectLayout(ModelFamily requested, const std::vector<TensorView>& outs,
                                  int input_w, int input_h) {
  OutputLayout layout;
  std::vector<std::vector<std::int64_t>> shapes;
  shapes.reserve(outs.size());
  for (const auto& o : outs) shapes.push_back(o.shape);
  auto describe = [&] {
    std::string s;
    for (const auto& sh : shapes) s += (s.empty() ? "" : ", ") + ShapeString(sh);
    return s;
  };

  ModelFamily family = requested;
  if (family == ModelFamily::kAuto) {
    if (shapes.size() == 1 && shapes[0].size() == 3) {
      const std::int64_t a = shapes[0][1];
      const std::int64_t b = shapes[0][2];
      if (a < b && a > 4) {
        family = ModelFamily::kYoloV8;
      } else if (a > b && b > 5) {
        family = a == GridCells(input_w, input_h) ? ModelFamily::kYolox : ModelFamily::kYoloV5;
      }
    } else if (shapes.size() == 2) {
      family = ModelFamily::kYoloV8Seg;
    } else if (shapes.size() == 6) {
      family = ModelFamily::kNanoDet;
    }
    if (family == ModelFamily::kAuto) {
      return UnsupportedError(
          "unrecognised output layout " + describe() +
          "; supported families: " + SupportedOnnxFamilies() +
          " (set \"family\" in the model's sidecar JSON if it is one of these)");
    }
  }
  layout.family = family;
  auto mismatch = [&](const std::string& expected) {
    return UnsupportedError("outputs " + describe() + " do not match family '" +
                            std::string(FamilyName(family)) + "' (expected " + expected + ")");
  };

  switch (family) {
    case ModelFamily::kYoloV8: {
      if (shapes.size() != 1 || shapes[0].size() != 3 || shapes[0][1] <= 4 ||
          shapes[0][1] >= shapes[0][2]) {
        return mismatch("one output 1 x (4+classes) x anchors");
      }
      layout.num_classes = static_cast<int>(shapes[0][1] - 4);
      break;
    }
    case ModelFamily::kYoloV8Seg: {
      if (shapes.size() != 2)
        return mismatch("two outputs: 1 x (4+classes+32) x anchors, 1 x 32 x H x W");
      const int det = shapes[0].size() == 3 ? 0 : 1;
      const int proto = 1 - det;
      if (shapes[det].size() != 3 || shapes[proto].size() != 4 || shapes[proto][1] != kSegProtos ||
          shapes[det][1] <= 4 + kSegProtos) {
        return mismatch("two outputs: 1 x (4+classes+32) x anchors, 1 x 32 x H x W");
      }
      layout.main_output = det;
      layout.proto_output = proto;
      layout.num_classes = static_cast<int>(shapes[det][1] - 4 - kSegProtos);
      break;
    }
    case ModelFamily::kYoloV5:
    case ModelFamily::kYolox: {
      if (shapes.size() != 1 || shapes[0].size() != 3 || shapes[0][2] <= 5) {
        return mismatch("one output 1 x rows x (5+classes)");
      }
      if (family == ModelFamily::kYolox && shapes[0][1] != GridCells(input_w, input_h)) {
        return mismatch("1 x " + std::to_string(GridCells(input_w, input_h)) +
                        " x (5+classes) raw grids for strides 8/16/32");
      }
      layout.num_classes = static_cast<int>(shapes[0][2] - 5);
      break;
    }
    case ModelFamily::kNanoDet: {
      const std::string expected =
          "6 outputs: per stride 8/16/32, scores 1 x cells x classes and boxes 1 x cells x 32";
      if (shapes.size() != 6) return mismatch(expected);
      const int box_dim = 4 * (kNanoDetRegMax + 1);
      for (int stride : {8, 16, 32}) {
        const int cells = ((input_w + stride - 1) / stride) * ((input_h + stride - 1) / stride);
        std::vector<int> level;
        for (int i = 0; i < 6; ++i) {
          if (shapes[i].size() == 3 && shapes[i][1] == cells) level.push_back(i);
        }
        if (level.size() != 2) return mismatch(expected);
        // When classes == 32 the two look alike; ONNX order (scores first) breaks the tie.
        int scores = level[0];
        int boxes = level[1];
        if (shapes[scores][2] == box_dim && shapes[boxes][2] != box_dim) std::swap(scores, boxes);
        if (scores < 0 || boxes < 0 || shapes[boxes][2] != box_dim) return mismatch(expected);
        if (layout.num_classes == 0) layout.num_classes = static_cast<int>(shapes[scores][2]);
        if (shapes[scores][2] != layout.num_classes) return mismatch(expected);
        layout.nanodet_levels.emplace_back(scores, boxes);
        layout.nanodet_strides.push_back(stride);
      }
      break;
    }
    default:
      return UnsupportedError("family '" + std::string(FamilyName(family)) +
                              "' is not an ONNX family");
  }
  if (layout.num_classes <= 0) return mismatch("at least one class");
  return layout;
}

Preprocessing DefaultsFor(ModelFamily family) {
  Preprocessing p;
  switch (family) {
    case ModelFamily::kYolox:
      p.pixels.swap_rb = false;
      p.anchor = PadAnchor::kTopLeft;
      p.pad_value = 114;
      break;
    case ModelFamily::kNanoDet:
      p.pixels.swap_rb = false;
      p.pixels.mean = {103.53f, 116.28f, 123.675f};
      p.pixels.inv_std = {1 / 57.375f, 1 / 57.12f, 1 / 58.395f};
      p.anchor = PadAnchor::kCenter;
      p.pad_value = 0;
      break;
    default:  // Ultralytics and YOLOv5: RGB, 0..1, centred, grey 114
      p.pixels.swap_rb = true;
      p.pixels.inv_std = {1 / 255.f, 1 / 255.f, 1 / 255.f};
      p.anchor = PadAnchor::kCenter;
      p.pad_value = 114;
      break;
  }
  return p;
}

float DefaultConfidence(ModelFamily family) {
  switch (family) {
    case ModelFamily::kYolox:
      return 0.3f;
    case ModelFamily::kNanoDet:
      return 0.35f;
    default:
      return 0.25f;
  }
}

class OnnxDetectorImpl final : public Detector {
 public:
  OnnxDetectorImpl(std::unique_ptr<Engine> engine, ModelInfo info, Preprocessing pre,
                   int fixed_batch)
      : engine_(std::move(engine)), info_(std::move(info)), pre_(pre), fixed_batch_(fixed_batch) {}

  const ModelInfo& info() const override { return info_; }

  // Fixes what the warm-up pass revealed: final model info, preprocessing and decoder.
  void Configure(ModelInfo info, Preprocessing pre, OutputLayout layout) {
    std::lock_guard lock(mu_);
    info_ = std::move(info);
    pre_ = pre;
    layout_ = std::move(layout);
  }

  // Runs the network on one blank input and returns its raw outputs (valid until the next run).
  Result<std::vector<TensorView>> RawForward() {
    cv::Mat blank(info_.input_height, info_.input_width, CV_8UC3, cv::Scalar::all(114));
    std::lock_guard lock(mu_);
    std::vector<Letterbox> boxes;
    Prepare(std::span<const cv::Mat>(&blank, 1), boxes);
    return Run();
  }

  Result<std::vector<std::vector<protocol::Detection>>> Detect(
      std::span<const cv::Mat> images, const protocol::DetectOptions& options,
      DetectTimings* timings) override {
    RETURN_IF_ERROR(ValidateOptions(options, info_));
    RETURN_IF_ERROR(ValidateImages(images));
    const float conf = options.confidence.value_or(info_.default_confidence);
    const float iou = options.iou.value_or(info_.default_iou);
    DecodeParams params;
    params.confidence = conf;
    params.classes = options.classes;

    std::vector<std::vector<protocol::Detection>> results;
    results.reserve(images.size());
    DetectTimings total;
    std::lock_guard lock(mu_);
    const size_t batch = static_cast<size_t>(std::max(1, info_.max_batch));
    for (size_t start = 0; start < images.size(); start += batch) {
      const auto chunk = images.subspan(start, std::min(batch, images.size() - start));
      Stopwatch sw;
      std::vector<Letterbox> boxes;
      Prepare(chunk, boxes);
      total.preprocess_ms += sw.Lap();
      ASSIGN_OR_RETURN(std::vector<TensorView> outs, Run());
      total.inference_ms += sw.Lap();
      for (size_t i = 0; i < chunk.size(); ++i) {
        results.push_back(Decode(outs, static_cast<int>(i), boxes[i], params, iou));
      }
      total.postprocess_ms += sw.Lap();
    }
    if (timings != nullptr) *timings = total;
    return results;
  }

 private:
  // Letterboxes the images straight into the engine's input buffer; a fixed-batch model gets
  // its whole batch, the slots past the images filled with padding.
  void Prepare(std::span<const cv::Mat> images, std::vector<Letterbox>& boxes) {
    const int n = static_cast<int>(images.size());
    const int run_batch = fixed_batch_ > 0 ? fixed_batch_ : n;
    const int w = info_.input_width;
    const int h = info_.input_height;
    std::span<float> input = engine_->InputBuffer(run_batch, h, w);
    const size_t plane = static_cast<size_t>(3) * static_cast<size_t>(w) * static_cast<size_t>(h);
    static const cv::Mat kNone;
    for (int i = 0; i < run_batch; ++i) {
      const cv::Mat& img = i < n ? images[static_cast<size_t>(i)] : kNone;
      const Letterbox lb = ComputeLetterbox(img.cols, img.rows, w, h, pre_.anchor);
      LetterboxToTensor(img, lb, pre_.pad_value, pre_.pixels, resized_,
                        input.data() + plane * static_cast<size_t>(i));
      if (i < n) boxes.push_back(lb);
    }
    run_batch_ = run_batch;
  }

  // Runs the engine on the input Prepare() wrote.
  Result<std::vector<TensorView>> Run() {
    auto outs = engine_->Run();
    if (!outs) {
      return outs.error().WithContext("model '" + info_.name + "' (" + engine_->name() + ")");
    }
    for (const TensorView& o : *outs) {
      if (o.shape.empty() || o.shape[0] != run_batch_) {
        return UnsupportedError("model '" + info_.name + "': output " + ShapeString(o.shape) +
                                " does not have the input's batch of " +
                                std::to_string(run_batch_) + " first");
      }
    }
    return outs;
  }

  // Pointer to image `i`'s slice of a batched output.
  static const float* Slice(const TensorView& out, int i) {
    return out.data + out.size() / static_cast<size_t>(out.shape[0]) * static_cast<size_t>(i);
  }
  static int Dim(const TensorView& out, size_t d) { return static_cast<int>(out.shape[d]); }

  std::vector<protocol::Detection> Decode(const std::vector<TensorView>& outs, int i,
                                          const Letterbox& lb, const DecodeParams& params,
                                          float iou) const {
    std::vector<Candidate> cands;
    const int iw = info_.input_width;
    const int ih = info_.input_height;
    const int nc = layout_.num_classes;
    switch (layout_.family) {
      case ModelFamily::kYoloV8:
      case ModelFamily::kYoloV8Seg: {
        const TensorView& o = outs[static_cast<size_t>(layout_.main_output)];
        cands = DecodeYoloV8(Slice(o, i), Dim(o, 1), Dim(o, 2), nc, params);
        break;
      }
      case ModelFamily::kYoloV5: {
        const TensorView& o = outs[0];
        cands = DecodeYoloV5(Slice(o, i), Dim(o, 1), nc, params);
        break;
      }
      case ModelFamily::kYolox: {
        const TensorView& o = outs[0];
        cands = DecodeYolox(Slice(o, i), Dim(o, 1), nc, iw, ih, params);
        break;
      }
      case ModelFamily::kNanoDet: {
        std::vector<NanoDetLevel> levels;
        for (size_t l = 0; l < layout_.nanodet_levels.size(); ++l) {
          const auto [s, b] = layout_.nanodet_levels[l];
          levels.push_back({Slice(outs[static_cast<size_t>(s)], i),
                            Slice(outs[static_cast<size_t>(b)], i), layout_.nanodet_strides[l]});
        }
        cands = DecodeNanoDet(levels, nc, kNanoDetRegMax, iw, ih, params);
        break;
      }
      default:
        break;
    }
    cands = NonMaxSuppression(std::move(cands), iou, kMaxDetections);

    std::vector<protocol::Detection> dets;
    dets.reserve(cands.size());
    std::vector<float> coeffs(kSegProtos);
    for (const auto& c : cands) {
      protocol::Detection d;
      d.class_id = c.class_id;
      d.label = LabelFor(info_, c.class_id);
      d.score = c.score;
      d.box = ToSource(c.box, lb);
      if (d.box.area() <= 0) continue;
      if (layout_.family == ModelFamily::kYoloV8Seg) {
        const TensorView& o = outs[static_cast<size_t>(layout_.main_output)];
        const TensorView& protos = outs[static_cast<size_t>(layout_.proto_output)];
        const float* base = Slice(o, i);
        const int anchors = Dim(o, 2);
        for (int k = 0; k < kSegProtos; ++k) {
          coeffs[static_cast<size_t>(k)] =
              base[static_cast<size_t>(4 + nc + k) * static_cast<size_t>(anchors) +
                   static_cast<size_t>(c.index)];
        }
        d.mask = DecodeSegMask(coeffs, Slice(protos, i), kSegProtos, Dim(protos, 2), Dim(protos, 3),
                               lb, d.box);
      }
      dets.push_back(std::move(d));
    }
    return dets;
  }

  std::mutex mu_;
  std::unique_ptr<Engine> engine_;
  ModelInfo info_;
  Preprocessing pre_;
  OutputLayout layout_;
  const int fixed_batch_;  // > 0: the model's own batch size; 0: dynamic
  int run_batch_ = 0;      // images in the engine's current input
  // Scratch reused across calls (guarded by mu_): avoids per-frame allocations.
  cv::Mat resized_;
};

Result<std::string> ReadModelFile(const ModelSpec& spec) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(spec.path, ec)) {
    return NotFoundError("model file " + spec.path.string() + " does not exist");
  }
  std::ifstream in(spec.path, std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (!in.good() && !in.eof()) return NotFoundError("cannot read model file " + spec.path.string());
  return bytes;
}

Result<std::unique_ptr<Detector>> Create(const ModelSpec& spec,
                                         const OnnxDetectorOptions& options) {
  ASSIGN_OR_RETURN(std::string bytes, ReadModelFile(spec));
  const EngineKind kind = spec.engine.value_or(options.engine);
  EngineOptions eo{.cuda = options.cuda, .threads = options.threads};
  Result<std::unique_ptr<Engine>> created =
      kind == EngineKind::kOnnxRuntime ? detail::CreateOnnxRuntimeEngine(std::move(bytes), eo)
                                       : detail::CreateOpenCvDnnEngine(bytes, eo);
  if (!created) {
    return Status(created.error().code(), created.error().message() +
                                              ". kadr runs fp32/fp16 ONNX models of the families " +
                                              SupportedOnnxFamilies());
  }
  std::unique_ptr<Engine> engine = std::move(*created);
  const std::array<std::int64_t, 4> in_dims = engine->input_shape();
  if (in_dims[1] != 3 && in_dims[1] != -1) {
    return UnsupportedError("the image input has " + std::to_string(in_dims[1]) +
                            " channels; kadr feeds 3-channel images");
  }
  ModelInfo info;
  info.name = spec.name;
  info.backend = engine->name();
  info.input_height = spec.input_height.value_or(static_cast<int>(in_dims[2]));
  info.input_width = spec.input_width.value_or(static_cast<int>(in_dims[3]));
  if (info.input_width <= 0 || info.input_height <= 0) {
    return InvalidArgumentError(
        "input size is dynamic; set input_width and input_height in the "
        "model's sidecar JSON");
  }
  const int fixed_batch = in_dims[0] > 0 ? static_cast<int>(in_dims[0]) : 0;
  info.max_batch = fixed_batch > 0 ? fixed_batch : std::max(1, options.max_batch);
  info.notes = engine->notes();
  const std::map<std::string, std::string> metadata = engine->metadata();

  // The family's defaults are needed for the warm-up input; if the family is auto we use
  // neutral preprocessing for that pass and fix it once the layout is known.
  auto detector = std::make_unique<OnnxDetectorImpl>(std::move(engine), info,
                                                     DefaultsFor(spec.family), fixed_batch);
  ASSIGN_OR_RETURN(std::vector<TensorView> outs, detector->RawForward());
  ASSIGN_OR_RETURN(OutputLayout layout,
                   DetectLayout(spec.family, outs, info.input_width, info.input_height));

  info.family = layout.family;
  info.has_masks = layout.family == ModelFamily::kYoloV8Seg;
  info.default_confidence = spec.confidence.value_or(DefaultConfidence(layout.family));
  info.default_iou = spec.iou.value_or(0.45f);
  info.labels = spec.labels;
  if (info.labels.empty() && metadata.count("names")) {
    info.labels = detail::ParseUltralyticsNames(metadata.at("names"));
  }
  if (info.labels.empty() && layout.num_classes == static_cast<int>(CocoLabels().size())) {
    info.labels = CocoLabels();
    info.notes.emplace_back(
        "80 classes and no names (in its metadata, a sidecar or a .names file): using the COCO-80 "
        "names");
  }
  if (!info.labels.empty() && static_cast<int>(info.labels.size()) != layout.num_classes) {
    info.notes.push_back("label count " + std::to_string(info.labels.size()) +
                         " differs from the model's " + std::to_string(layout.num_classes) +
                         " classes; unnamed classes show as class_<id>");
  }
  info.labels.resize(static_cast<size_t>(layout.num_classes));
  for (int c = 0; c < layout.num_classes; ++c) {
    if (info.labels[static_cast<size_t>(c)].empty())
      info.labels[static_cast<size_t>(c)] = "class_" + std::to_string(c);
  }

  Preprocessing pre = DefaultsFor(layout.family);
  if (spec.swap_rb) pre.pixels.swap_rb = *spec.swap_rb;
  if (spec.mean) pre.pixels.mean = *spec.mean;
  if (spec.std) {
    for (int c = 0; c < 3; ++c) {
      if ((*spec.std)[static_cast<size_t>(c)] <= 0)
        return InvalidArgumentError("std values must be > 0");
      pre.pixels.inv_std[static_cast<size_t>(c)] = 1.f / (*spec.std)[static_cast<size_t>(c)];
    }
  }
  if (spec.pad_top_left) pre.anchor = *spec.pad_top_left ? PadAnchor::kTopLeft : PadAnchor::kCenter;
  if (spec.pad_value) pre.pad_value = *spec.pad_value;

  detector->Configure(std::move(info), pre, std::move(layout));
  if (options.warm_up) {
    // A second pass with the final preprocessing: the first run of an engine allocates (and
    // OpenCV fuses layers), so the first real request would otherwise pay for it.
    const ModelInfo& final_info = detector->info();
    cv::Mat probe(final_info.input_height, final_info.input_width, CV_8UC3, cv::Scalar::all(114));
    auto warm = detector->Detect(std::span<const cv::Mat>(&probe, 1), {}, nullptr);
    if (!warm) return warm.error();
  }
  return std::unique_ptr<Detector>(std::move(detector));
}

}  // namespace

Result<std::unique_ptr<Detector>> CreateOnnxDetector(const ModelSpec& spec,
                                                     const OnnxDetectorOptions& options) {
  auto detector = Create(spec, options);
  if (!detector) {
    return detector.error().WithContext("model '" + spec.name + "' (" + spec.path.string() + ")");
  }
  spdlog::debug("loaded model name={} family={} input={}x{} engine={}", spec.name,
                FamilyName((*detector)->info().family), (*detector)->info().input_width,
                (*detector)->info().input_height, (*detector)->info().backend);
  return detector;
}

}  // namespace kadr::inference
