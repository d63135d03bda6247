// ModelRegistry: the models a kadr process can serve, by name.
//
// Models come from (1) a JSON config file listing them, (2) discovery of *.onnx files in the
// models folders, each with an optional sidecar `<stem>.json` for family, labels and
// thresholds, and (3) the built-ins (people-hog, faces-haar). A config entry overrides a
// discovered model of the same name. Labels, where neither config, sidecar nor the ONNX
// metadata give them, come from `<stem>.names`, else from the folder's only `*.names` file.
//
// ONNX models run on the registry's default engine (RegistryOptions::engine: ONNX Runtime
// unless told otherwise) or the one their spec names ("engine" in the config or sidecar). A model
// the chosen engine cannot run fails with the cause and says whether the other engine can.
//
// Models load lazily on first Get() (or all at once with LoadAll()), are warmed up, and
// stay loaded; a failed load is remembered with its error so `kadr models` can show it.
// Thread-safe.
#pragma once

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "inference/detector.h"
#include "inference/device.h"

namespace kadr::inference {

struct RegistryOptions {
  std::filesystem::path config_file;               // optional JSON config; empty: none
  std::vector<std::filesystem::path> models_dirs;  // scanned for *.onnx (missing dirs ignored)
  bool builtins = true;                            // register people-hog and faces-haar
  std::filesystem::path haar_dir = "/usr/share/opencv4/haarcascades";
  Device device = Device::kAuto;  // ONNX models: resolved once by Create(), which logs it
  // The engine for ONNX models whose spec names none (--engine, KADR_ENGINE).
  EngineKind engine = EngineKind::kOnnxRuntime;
  int threads = 0;  // ONNX Runtime intra-op threads per model (--threads); 0: one per core
  // Images per forward pass for models with a dynamic batch dimension. 4: on CPUs, larger batches
  // gained nothing more for YOLOX-Nano and lost for YOLOv8n (kadr_engine_bench,
  // docs/performance.md).
  int max_batch = 4;
};

enum class LoadState { kNotLoaded, kReady, kFailed };
std::string_view LoadStateName(LoadState state);  // "not_loaded", "ready", "failed"

struct ModelStatus {
  ModelSpec spec;
  LoadState state = LoadState::kNotLoaded;
  Status error;                   // set when state == kFailed
  std::optional<ModelInfo> info;  // set when state == kReady
};

// Parses one model entry (config file or sidecar) into `spec`; relative paths resolve
// against `base_dir`. Unknown keys are an error so typos do not go unnoticed.
Status ParseModelSpecJson(std::string_view json, const std::filesystem::path& base_dir,
                          ModelSpec& spec);

class ModelRegistry {
 public:
  // Errors: kInvalidArgument for a malformed config file or sidecar, kNotFound for a
  // config file that does not exist.
  static Result<std::unique_ptr<ModelRegistry>> Create(const RegistryOptions& options);

  // Sorted model names.
  std::vector<std::string> Names() const;
  std::vector<ModelStatus> List() const;

  // The loaded detector. Errors: kNotFound (unknown name; the message lists the available
  // models), or the load error (kUnsupported, kNotFound file, ...).
  Result<std::shared_ptr<Detector>> Get(std::string_view name);

  // Loads every model (for listings and eager start-up).
  void LoadAll();

  // Where the default engine runs the ONNX models (the built-ins always run on the CPU).
  const DeviceChoice& device() const { return devices_[static_cast<size_t>(options_.engine)]; }

 private:
  struct Entry {
    ModelSpec spec;
    std::mutex load_mu;  // serialises the load of this one model
    LoadState state = LoadState::kNotLoaded;
    Status error;
    std::shared_ptr<Detector> detector;
  };

  ModelRegistry() = default;
  void Add(ModelSpec spec);

  // Loads an ONNX model on `engine`, on CUDA when that engine resolved to it, else (or when
  // CUDA fails) on the CPU.
  Result<std::unique_ptr<Detector>> LoadOnnx(const ModelSpec& spec, EngineKind engine);

  RegistryOptions options_;
  std::array<DeviceChoice, 2> devices_;  // by EngineKind

  mutable std::mutex mu_;  // guards entries_ map and each Entry's state/error/detector
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> entries_;
};

}  // namespace kadr::inference
