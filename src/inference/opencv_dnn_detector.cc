#include "inference/opencv_dnn_detector.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <mutex>

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "inference/detail/onnx_graph.h"
#include "inference/letterbox.h"
#include "inference/postprocess.h"

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
  bool swap_rb = false;
  std::array<float, 3> mean{0, 0, 0};
  std::array<float, 3> inv_std{1, 1, 1};
  PadAnchor anchor = PadAnchor::kCenter;
  float pad_value = 114;
};

std::vector<int> Shape(const cv::Mat& m) { return std::vector<int>(m.size.p, m.size.p + m.dims); }

std::string ShapeString(const std::vector<int>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out += 'x';
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::string FirstLine(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// Grid cells for strides 8, 16, 32 at this input size (YOLOX / YOLOv8 anchor counts).
int GridCells(int w, int h) {
  int cells = 0;
  for (int s : {8, 16, 32}) cells += (w / s) * (h / s);
  return cells;
}

Result<OutputLayout> DetectLayout(ModelFamily requested, const std::vector<cv::Mat>& outs,
                                  int input_w, int input_h) {
  OutputLayout layout;
  std::vector<std::vector<int>> shapes;
  shapes.reserve(outs.size());
  for (const auto& o : outs) shapes.push_back(Shape(o));
  auto describe = [&] {
    std::string s;
    for (const auto& sh : shapes) s += (s.empty() ? "" : ", ") + ShapeString(sh);
    return s;
  };

  ModelFamily family = requested;
  if (family == ModelFamily::kAuto) {
    if (shapes.size() == 1 && shapes[0].size() == 3) {
      const int a = shapes[0][1];
      const int b = shapes[0][2];
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
      layout.num_classes = shapes[0][1] - 4;
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
      layout.num_classes = shapes[det][1] - 4 - kSegProtos;
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
      layout.num_classes = shapes[0][2] - 5;
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
        if (layout.num_classes == 0) layout.num_classes = shapes[scores][2];
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
      p.swap_rb = false;
      p.anchor = PadAnchor::kTopLeft;
      p.pad_value = 114;
      break;
    case ModelFamily::kNanoDet:
      p.swap_rb = false;
      p.mean = {103.53f, 116.28f, 123.675f};
      p.inv_std = {1 / 57.375f, 1 / 57.12f, 1 / 58.395f};
      p.anchor = PadAnchor::kCenter;
      p.pad_value = 0;
      break;
    default:  // Ultralytics and YOLOv5: RGB, 0..1, centred, grey 114
      p.swap_rb = true;
      p.inv_std = {1 / 255.f, 1 / 255.f, 1 / 255.f};
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

// Letterboxed BGR uint8 -> planar float NCHW at `dst`, in one pass.
void PackPlanar(const cv::Mat& bgr, const Preprocessing& p, float* dst) {
  const int hw = bgr.rows * bgr.cols;
  float* planes[3] = {dst, dst + hw, dst + 2 * hw};
  // Network channel c reads source channel src_c[c].
  const int src_c[3] = {p.swap_rb ? 2 : 0, 1, p.swap_rb ? 0 : 2};
  int i = 0;
  for (int y = 0; y < bgr.rows; ++y) {
    const std::uint8_t* row = bgr.ptr<std::uint8_t>(y);
    for (int x = 0; x < bgr.cols; ++x, ++i) {
      const std::uint8_t* px = row + 3 * x;
      for (int c = 0; c < 3; ++c) {
        planes[c][i] = (static_cast<float>(px[src_c[c]]) - p.mean[c]) * p.inv_std[c];
      }
    }
  }
}

class OpenCvDnnDetectorImpl final : public Detector {
 public:
  // cv::dnn::Net is a reference-counted handle; the detector becomes its only user.
  OpenCvDnnDetectorImpl(const cv::dnn::Net& net, ModelInfo info, Preprocessing pre)
      : net_(net), info_(std::move(info)), pre_(pre) {
    output_names_ = net_.getUnconnectedOutLayersNames();
  }

  const ModelInfo& info() const override { return info_; }

  // Fixes what the warm-up pass revealed: final model info, preprocessing and decoder.
  void Configure(ModelInfo info, Preprocessing pre, OutputLayout layout) {
    std::lock_guard lock(mu_);
    info_ = std::move(info);
    pre_ = pre;
    layout_ = std::move(layout);
  }

  // Runs the network on one blank input and returns its raw outputs.
  Result<std::vector<cv::Mat>> RawForward() {
    cv::Mat blank(info_.input_height, info_.input_width, CV_8UC3, cv::Scalar::all(114));
    std::vector<cv::Mat> outs;
    std::lock_guard lock(mu_);
    RETURN_IF_ERROR(ForwardLocked(std::span<const cv::Mat>(&blank, 1), outs));
    return outs;
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
      PrepareBlob(chunk, boxes);
      total.preprocess_ms += sw.Lap();
      std::vector<cv::Mat> outs;
      RETURN_IF_ERROR(RunNet(outs));
      total.inference_ms += sw.Lap();
      for (size_t i = 0; i < chunk.size(); ++i) {
        results.push_back(Decode(outs, static_cast<int>(i), static_cast<int>(chunk.size()),
                                 boxes[i], params, iou));
      }
      total.postprocess_ms += sw.Lap();
    }
    if (timings != nullptr) *timings = total;
    return results;
  }

 private:
  Status ForwardLocked(std::span<const cv::Mat> images, std::vector<cv::Mat>& outs) {
    std::vector<Letterbox> boxes;
    PrepareBlob(images, boxes);
    return RunNet(outs);
  }

  void PrepareBlob(std::span<const cv::Mat> images, std::vector<Letterbox>& boxes) {
    const int n = static_cast<int>(images.size());
    const int shape[4] = {n, 3, info_.input_height, info_.input_width};
    blob_.create(4, shape, CV_32F);
    const size_t plane = static_cast<size_t>(3) * info_.input_width * info_.input_height;
    for (int i = 0; i < n; ++i) {
      const cv::Mat& img = images[static_cast<size_t>(i)];
      Letterbox lb =
          ComputeLetterbox(img.cols, img.rows, info_.input_width, info_.input_height, pre_.anchor);
      ApplyLetterbox(img, lb, cv::Scalar::all(pre_.pad_value), letterboxed_);
      PackPlanar(letterboxed_, pre_, blob_.ptr<float>() + plane * static_cast<size_t>(i));
      boxes.push_back(lb);
    }
  }

  Status RunNet(std::vector<cv::Mat>& outs) {
    try {
      net_.setInput(blob_);
      net_.forward(outs, output_names_);
    } catch (const cv::Exception& e) {
      return InternalError("model '" + info_.name + "': forward() failed: " + FirstLine(e.what()));
    }
    return Status::Ok();
  }

  // Pointer to image `i`'s slice of a batched output.
  static const float* Slice(const cv::Mat& out, int i, int n) {
    return out.ptr<float>() + out.total() / static_cast<size_t>(n) * static_cast<size_t>(i);
  }

  std::vector<protocol::Detection> Decode(const std::vector<cv::Mat>& outs, int i, int n,
                                          const Letterbox& lb, const DecodeParams& params,
                                          float iou) const {
    std::vector<Candidate> cands;
    const int iw = info_.input_width;
    const int ih = info_.input_height;
    const int nc = layout_.num_classes;
    switch (layout_.family) {
      case ModelFamily::kYoloV8:
      case ModelFamily::kYoloV8Seg: {
        const cv::Mat& o = outs[static_cast<size_t>(layout_.main_output)];
        cands = DecodeYoloV8(Slice(o, i, n), o.size[1], o.size[2], nc, params);
        break;
      }
      case ModelFamily::kYoloV5: {
        const cv::Mat& o = outs[0];
        cands = DecodeYoloV5(Slice(o, i, n), o.size[1], nc, params);
        break;
      }
      case ModelFamily::kYolox: {
        const cv::Mat& o = outs[0];
        cands = DecodeYolox(Slice(o, i, n), o.size[1], nc, iw, ih, params);
        break;
      }
      case ModelFamily::kNanoDet: {
        std::vector<NanoDetLevel> levels;
        for (size_t l = 0; l < layout_.nanodet_levels.size(); ++l) {
          const auto [s, b] = layout_.nanodet_levels[l];
          levels.push_back({Slice(outs[static_cast<size_t>(s)], i, n),
                            Slice(outs[static_cast<size_t>(b)], i, n), layout_.nanodet_strides[l]});
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
        const cv::Mat& o = outs[static_cast<size_t>(layout_.main_output)];
        const cv::Mat& protos = outs[static_cast<size_t>(layout_.proto_output)];
        const float* base = Slice(o, i, n);
        const int anchors = o.size[2];
        for (int k = 0; k < kSegProtos; ++k) {
          coeffs[static_cast<size_t>(k)] =
              base[static_cast<size_t>(4 + nc + k) * anchors + c.index];
        }
        d.mask = DecodeSegMask(coeffs, Slice(protos, i, n), kSegProtos, protos.size[2],
                               protos.size[3], lb, d.box);
      }
      dets.push_back(std::move(d));
    }
    return dets;
  }

  std::mutex mu_;
  cv::dnn::Net net_;
  ModelInfo info_;
  Preprocessing pre_;
  OutputLayout layout_;
  std::vector<std::string> output_names_;
  // Scratch reused across calls (guarded by mu_): avoids per-frame allocations.
  cv::Mat blob_;
  cv::Mat letterboxed_;
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

Result<std::unique_ptr<Detector>> Create(const ModelSpec& spec, const OpenCvDnnOptions& options) {
  ASSIGN_OR_RETURN(std::string bytes, ReadModelFile(spec));
  auto normalized = detail::NormalizeOnnx(bytes);
  if (!normalized) {
    return UnsupportedError(normalized.error().message() +
                            "; kadr runs ONNX models of the families " + SupportedOnnxFamilies());
  }
  const detail::OnnxGraphInfo& g = normalized->info;
  if (!g.quantized_ops.empty()) {
    std::string ops;
    for (const auto& op : g.quantized_ops) ops += (ops.empty() ? "" : ", ") + op;
    return UnsupportedError("quantised model (uses " + ops +
                            "), which OpenCV DNN 4.6 cannot run; export it in fp32 or fp16 "
                            "instead. Supported: fp32/fp16 ONNX of the families " +
                            SupportedOnnxFamilies());
  }
  if (g.inputs.size() != 1 || g.inputs[0].dims.size() != 4) {
    return UnsupportedError("expected one image input of shape N x 3 x H x W, found " +
                            std::to_string(g.inputs.size()) + " input(s)");
  }
  const auto& in_dims = g.inputs[0].dims;
  if (in_dims[1] != 3) {
    return UnsupportedError("input '" + g.inputs[0].name + "' has " + std::to_string(in_dims[1]) +
                            " channels; kadr feeds 3-channel images");
  }
  ModelInfo info;
  info.name = spec.name;
  info.backend = options.cuda ? "opencv-dnn/cuda" : "opencv-dnn/cpu";
  info.input_height = spec.input_height.value_or(static_cast<int>(in_dims[2]));
  info.input_width = spec.input_width.value_or(static_cast<int>(in_dims[3]));
  if (info.input_width <= 0 || info.input_height <= 0) {
    return InvalidArgumentError(
        "input size is dynamic; set input_width and input_height in the "
        "model's sidecar JSON");
  }
  info.max_batch = in_dims[0] > 0 ? static_cast<int>(in_dims[0]) : 8;
  info.notes = normalized->rewrites;
  for (auto& note : info.notes) note.insert(0, "graph rewrite for OpenCV 4.6: ");

  cv::dnn::Net net;
  try {
    net = cv::dnn::readNetFromONNX(normalized->bytes.data(), normalized->bytes.size());
    net.setPreferableBackend(options.cuda ? cv::dnn::DNN_BACKEND_CUDA
                                          : cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(options.cuda ? cv::dnn::DNN_TARGET_CUDA : cv::dnn::DNN_TARGET_CPU);
  } catch (const cv::Exception& e) {
    return UnsupportedError("OpenCV DNN cannot load it: " + FirstLine(e.what()) +
                            ". Supported: fp32/fp16 ONNX of the families " +
                            SupportedOnnxFamilies());
  }
  if (net.empty()) return UnsupportedError("OpenCV DNN loaded an empty network");

  // The family's defaults are needed for the warm-up input; if the family is auto we use
  // neutral preprocessing for that pass and fix it once the layout is known.
  auto detector = std::make_unique<OpenCvDnnDetectorImpl>(net, info, DefaultsFor(spec.family));
  ASSIGN_OR_RETURN(std::vector<cv::Mat> outs, detector->RawForward());
  for (const auto& o : outs) {
    if (o.depth() != CV_32F) return UnsupportedError("outputs must be float32");
  }
  ASSIGN_OR_RETURN(OutputLayout layout,
                   DetectLayout(spec.family, outs, info.input_width, info.input_height));

  info.family = layout.family;
  info.has_masks = layout.family == ModelFamily::kYoloV8Seg;
  info.default_confidence = spec.confidence.value_or(DefaultConfidence(layout.family));
  info.default_iou = spec.iou.value_or(0.45f);
  info.labels = spec.labels;
  if (info.labels.empty() && g.metadata.count("names")) {
    info.labels = detail::ParseUltralyticsNames(g.metadata.at("names"));
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
  if (spec.swap_rb) pre.swap_rb = *spec.swap_rb;
  if (spec.mean) pre.mean = *spec.mean;
  if (spec.std) {
    for (int c = 0; c < 3; ++c) {
      if ((*spec.std)[static_cast<size_t>(c)] <= 0)
        return InvalidArgumentError("std values must be > 0");
      pre.inv_std[static_cast<size_t>(c)] = 1.f / (*spec.std)[static_cast<size_t>(c)];
    }
  }
  if (spec.pad_top_left) pre.anchor = *spec.pad_top_left ? PadAnchor::kTopLeft : PadAnchor::kCenter;
  if (spec.pad_value) pre.pad_value = *spec.pad_value;

  detector->Configure(std::move(info), pre, std::move(layout));
  auto& ready = detector;
  if (options.warm_up) {
    // A second pass with the final preprocessing: the first one OpenCV runs allocates and
    // fuses layers, so the first real request would otherwise pay for it.
    const ModelInfo& final_info = ready->info();
    cv::Mat probe(final_info.input_height, final_info.input_width, CV_8UC3, cv::Scalar::all(114));
    auto warm = ready->Detect(std::span<const cv::Mat>(&probe, 1), {}, nullptr);
    if (!warm) return warm.error();
  }
  return std::unique_ptr<Detector>(std::move(ready));
}

}  // namespace

Result<std::unique_ptr<Detector>> CreateOpenCvDnnDetector(const ModelSpec& spec,
                                                          const OpenCvDnnOptions& options) {
  auto detector = Create(spec, options);
  if (!detector) {
    return detector.error().WithContext("model '" + spec.name + "' (" + spec.path.string() + ")");
  }
  spdlog::debug("loaded model name={} family={} input={}x{}", spec.name,
                FamilyName((*detector)->info().family), (*detector)->info().input_width,
                (*detector)->info().input_height);
  return detector;
}

}  // namespace kadr::inference
