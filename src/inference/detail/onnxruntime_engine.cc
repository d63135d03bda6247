#include "inference/detail/onnxruntime_engine.h"

#include <dlfcn.h>
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <filesystem>
#include <mutex>

#include <spdlog/spdlog.h>

#include "common/cpu.h"
#include "inference/detail/error_text.h"
#include "inference/detail/onnx_graph.h"

namespace kadr::inference::detail {
namespace {

void LogFromOrt(void* /*param*/, OrtLoggingLevel severity, const char* category,
                const char* /*logid*/, const char* code_location, const char* message) {
  const auto level = severity >= ORT_LOGGING_LEVEL_ERROR     ? spdlog::level::err
                     : severity == ORT_LOGGING_LEVEL_WARNING ? spdlog::level::warn
                                                             : spdlog::level::debug;
  spdlog::log(level, "onnxruntime {} {}: {}", category, code_location, message);
}

// The process's one environment; created on first use, never destroyed (ONNX Runtime's own
// advice: its global thread state must outlive every session, including static ones).
Ort::Env& Environment() {
  static Ort::Env* env = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "kadr", LogFromOrt, nullptr);
  return *env;
}

class OnnxRuntimeEngine final : public Engine {
 public:
  OnnxRuntimeEngine(Ort::Session session, std::string name, std::vector<std::string> notes)
      : session_(std::move(session)),
        name_(std::move(name)),
        notes_(std::move(notes)),
        memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)) {}

  Status Init() {
    try {
      Ort::AllocatorWithDefaultOptions allocator;
      if (session_.GetInputCount() != 1) {
        return UnsupportedError("expected one image input of shape N x 3 x H x W, found " +
                                std::to_string(session_.GetInputCount()) + " inputs");
      }
      input_names_.emplace_back(session_.GetInputNameAllocated(0, allocator).get());
      const Ort::TypeInfo type = session_.GetInputTypeInfo(0);
      if (type.GetONNXType() != ONNX_TYPE_TENSOR) {
        return UnsupportedError("input '" + input_names_[0] + "' is not a tensor");
      }
      const auto tensor = type.GetTensorTypeAndShapeInfo();
      if (tensor.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        return UnsupportedError("input '" + input_names_[0] +
                                "' is not float32 (kadr feeds float32 images; fp16 inputs are "
                                "not supported, fp16 weights inside the graph are)");
      }
      const std::vector<std::int64_t> dims = tensor.GetShape();
      if (dims.size() != 4) {
        return UnsupportedError("input '" + input_names_[0] + "' has rank " +
                                std::to_string(dims.size()) + "; expected N x 3 x H x W");
      }
      for (size_t i = 0; i < 4; ++i) input_shape_[i] = dims[i] > 0 ? dims[i] : -1;
      for (size_t i = 0; i < session_.GetOutputCount(); ++i) {
        output_names_.emplace_back(session_.GetOutputNameAllocated(i, allocator).get());
      }
      for (const auto& n : input_names_) input_ptrs_.push_back(n.c_str());
      for (const auto& n : output_names_) output_ptrs_.push_back(n.c_str());

      const Ort::ModelMetadata meta = session_.GetModelMetadata();
      for (const auto& key : meta.GetCustomMetadataMapKeysAllocated(allocator)) {
        const auto value = meta.LookupCustomMetadataMapAllocated(key.get(), allocator);
        if (value) metadata_[key.get()] = value.get();
      }
    } catch (const Ort::Exception& e) {
      return UnsupportedError("ONNX Runtime: " + FirstLine(e.what()));
    }
    return Status::Ok();
  }

  const std::string& name() const override { return name_; }
  const std::array<std::int64_t, 4>& input_shape() const override { return input_shape_; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  const std::vector<std::string>& notes() const override { return notes_; }

  std::span<float> InputBuffer(int batch, int height, int width) override {
    run_shape_ = {batch, 3, height, width};
    input_.resize(static_cast<size_t>(batch) * 3 * static_cast<size_t>(height) *
                  static_cast<size_t>(width));
    return input_;
  }

  Result<std::vector<TensorView>> Run() override {
    std::vector<TensorView> views;
    try {
      Ort::Value input = Ort::Value::CreateTensor<float>(memory_, input_.data(), input_.size(),
                                                         run_shape_.data(), run_shape_.size());
      outputs_ = session_.Run(run_options_, input_ptrs_.data(), &input, 1, output_ptrs_.data(),
                              output_ptrs_.size());
      views.reserve(outputs_.size());
      for (size_t i = 0; i < outputs_.size(); ++i) {
        const auto info = outputs_[i].GetTensorTypeAndShapeInfo();
        if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
          return UnsupportedError("output '" + output_names_[i] + "' is not float32");
        }
        views.push_back({outputs_[i].GetTensorData<float>(), info.GetShape()});
      }
    } catch (const Ort::Exception& e) {
      return InternalError("ONNX Runtime Run() failed: " + FirstLine(e.what()));
    }
    return views;
  }

 private:
  Ort::Session session_;
  std::string name_;
  std::vector<std::string> notes_;
  Ort::MemoryInfo memory_;
  Ort::RunOptions run_options_;
  std::vector<std::string> input_names_;
  std::vector<std::string> output_names_;
  std::vector<const char*> input_ptrs_;
  std::vector<const char*> output_ptrs_;
  std::array<std::int64_t, 4> input_shape_{-1, -1, -1, -1};
  std::map<std::string, std::string> metadata_;
  std::array<std::int64_t, 4> run_shape_{0, 0, 0, 0};
  std::vector<float> input_;
  std::vector<Ort::Value> outputs_;
};

}  // namespace

Result<std::unique_ptr<Engine>> CreateOnnxRuntimeEngine(std::string bytes,
                                                        const EngineOptions& options) {
  std::vector<std::string> notes;
  const Result<int> dropped_or = DropInitializerInputs(bytes);
  if (!dropped_or) return UnsupportedError(dropped_or.error().message());
  const int dropped = *dropped_or;
  if (dropped > 0) {
    notes.push_back(std::to_string(dropped) +
                    " weights listed as graph inputs (an old exporter's habit) treated as "
                    "constants, so ONNX Runtime can fold them");
  }
  const int threads = options.threads > 0 ? options.threads : cpu::UsableCores();
  try {
    Ort::SessionOptions so;
    so.SetIntraOpNumThreads(threads);
    so.SetInterOpNumThreads(1);
    so.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    // Idle pool threads sleep instead of spinning: the worker's decode, draw and encode, the
    // gateway and other models' sessions share these cores (docs/performance.md).
    so.AddConfigEntry("session.intra_op.allow_spinning", "0");
    if (options.cuda) {
      try {
        const OrtApi& api = Ort::GetApi();
        OrtCUDAProviderOptionsV2* cuda = nullptr;
        Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
        std::unique_ptr<OrtCUDAProviderOptionsV2, void (*)(OrtCUDAProviderOptionsV2*)> owned(
            cuda, [](OrtCUDAProviderOptionsV2* p) { Ort::GetApi().ReleaseCUDAProviderOptions(p); });
        so.AppendExecutionProvider_CUDA_V2(*owned);
      } catch (const Ort::Exception& e) {
        return UnavailableError("ONNX Runtime's CUDA execution provider: " + FirstLine(e.what()));
      }
    }
    Ort::Session session(Environment(), bytes.data(), bytes.size(), so);
    auto engine = std::make_unique<OnnxRuntimeEngine>(
        std::move(session), options.cuda ? "onnxruntime/cuda" : "onnxruntime/cpu",
        std::move(notes));
    RETURN_IF_ERROR(engine->Init());
    return std::unique_ptr<Engine>(std::move(engine));
  } catch (const Ort::Exception& e) {
    return UnsupportedError("ONNX Runtime cannot load it: " + FirstLine(e.what()));
  }
}

std::string OnnxRuntimeVersion() { return Ort::GetVersionString(); }

bool OnnxRuntimeHasCudaProvider() {
  const auto providers = OnnxRuntimeProviders();
  if (std::find(providers.begin(), providers.end(), "CUDAExecutionProvider") == providers.end()) {
    return false;
  }
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&OrtGetApiBase), &info) == 0 || info.dli_fname == nullptr) {
    return false;
  }
  std::error_code ec;
  const auto dir = std::filesystem::path(info.dli_fname).parent_path();
  return std::filesystem::exists(dir / "libonnxruntime_providers_cuda.so", ec);
}

std::vector<std::string> OnnxRuntimeProviders() {
  try {
    return Ort::GetAvailableProviders();
  } catch (const Ort::Exception&) {
    return {};
  }
}

}  // namespace kadr::inference::detail
