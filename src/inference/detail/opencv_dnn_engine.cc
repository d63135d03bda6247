#include "inference/detail/opencv_dnn_engine.h"

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include "inference/detail/error_text.h"
#include "inference/detail/onnx_graph.h"

namespace kadr::inference::detail {
namespace {

class OpenCvDnnEngine final : public Engine {
 public:
  // cv::dnn::Net is a reference-counted handle; the engine becomes its only user.
  OpenCvDnnEngine(const cv::dnn::Net& net, std::string name, std::array<std::int64_t, 4> input,
                  std::map<std::string, std::string> metadata, std::vector<std::string> notes)
      : net_(net),
        name_(std::move(name)),
        input_shape_(input),
        metadata_(std::move(metadata)),
        notes_(std::move(notes)),
        output_names_(net_.getUnconnectedOutLayersNames()) {}

  const std::string& name() const override { return name_; }
  const std::array<std::int64_t, 4>& input_shape() const override { return input_shape_; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  const std::vector<std::string>& notes() const override { return notes_; }

  std::span<float> InputBuffer(int batch, int height, int width) override {
    const int shape[4] = {batch, 3, height, width};
    blob_.create(4, shape, CV_32F);  // no-op when the shape is unchanged
    return {blob_.ptr<float>(), blob_.total()};
  }

  Result<std::vector<TensorView>> Run() override {
    try {
      net_.setInput(blob_);
      net_.forward(outputs_, output_names_);
    } catch (const cv::Exception& e) {
      return InternalError("OpenCV DNN forward() failed: " + FirstLine(e.what()));
    }
    std::vector<TensorView> views;
    views.reserve(outputs_.size());
    for (size_t i = 0; i < outputs_.size(); ++i) {
      const cv::Mat& o = outputs_[i];
      if (o.depth() != CV_32F) {
        return UnsupportedError("output '" + output_names_[i] + "' is not float32");
      }
      views.push_back({o.ptr<float>(), std::vector<std::int64_t>(o.size.p, o.size.p + o.dims)});
    }
    return views;
  }

 private:
  cv::dnn::Net net_;
  std::string name_;
  std::array<std::int64_t, 4> input_shape_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::string> notes_;
  std::vector<std::string> output_names_;
  cv::Mat blob_;
  std::vector<cv::Mat> outputs_;
};

}  // namespace

Result<std::unique_ptr<Engine>> CreateOpenCvDnnEngine(const std::string& bytes,
                                                      const EngineOptions& options) {
  Result<NormalizedOnnx> normalized_or = NormalizeOnnx(bytes);
  if (!normalized_or) return UnsupportedError(normalized_or.error().message());
  NormalizedOnnx normalized = std::move(*normalized_or);
  const OnnxGraphInfo& g = normalized.info;
  if (!g.quantized_ops.empty()) {
    std::string ops;
    for (const auto& op : g.quantized_ops) ops += (ops.empty() ? "" : ", ") + op;
    return UnsupportedError("quantised model (uses " + ops +
                            "), which OpenCV DNN 4.6 cannot run; export it in fp32 or fp16");
  }
  if (g.inputs.size() != 1 || g.inputs[0].dims.size() != 4) {
    return UnsupportedError("expected one image input of shape N x 3 x H x W, found " +
                            std::to_string(g.inputs.size()) + " input(s)");
  }
  std::array<std::int64_t, 4> input{};
  for (size_t i = 0; i < 4; ++i) input[i] = g.inputs[0].dims[i];
  std::vector<std::string> notes = normalized.rewrites;
  for (auto& note : notes) note.insert(0, "graph rewrite for OpenCV 4.6: ");

  cv::dnn::Net net;
  try {
    net = cv::dnn::readNetFromONNX(normalized.bytes.data(), normalized.bytes.size());
    net.setPreferableBackend(options.cuda ? cv::dnn::DNN_BACKEND_CUDA
                                          : cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(options.cuda ? cv::dnn::DNN_TARGET_CUDA : cv::dnn::DNN_TARGET_CPU);
  } catch (const cv::Exception& e) {
    return UnsupportedError("OpenCV DNN cannot load it: " + FirstLine(e.what()));
  }
  if (net.empty()) return UnsupportedError("OpenCV DNN loaded an empty network");
  return std::unique_ptr<Engine>(
      std::make_unique<OpenCvDnnEngine>(net, options.cuda ? "opencv-dnn/cuda" : "opencv-dnn/cpu",
                                        input, g.metadata, std::move(notes)));
}

}  // namespace kadr::inference::detail
