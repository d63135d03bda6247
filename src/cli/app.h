// The `kadr` command line: one binary, one subcommand per role. Each subcommand is a thin
// composition root that wires adapters (OpenCV, files, later Kafka and HTTP) into services.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "inference/model_registry.h"

namespace kadr::cli {

// Options every subcommand shares. Precedence: flags, then KADR_* environment variables, then
// the config file's "settings" (detail/config_settings.h), then the defaults.
struct GlobalOptions {
  std::filesystem::path config_file;               // --config, KADR_CONFIG
  std::vector<std::filesystem::path> models_dirs;  // --models-dir, KADR_MODELS_DIR (':'-separated)
  int threads = 0;                                 // --threads, KADR_THREADS; 0 = all cores
  std::string log_level = "info";                  // --log-level, KADR_LOG_LEVEL
  inference::Device device = inference::Device::kAuto;                 // --device, KADR_DEVICE
  inference::EngineKind engine = inference::EngineKind::kOnnxRuntime;  // --engine, KADR_ENGINE
};

inference::RegistryOptions ToRegistryOptions(const GlobalOptions& options);

// Builds the registry and loads `model`; on failure prints "error: ..." to stderr.
Result<std::shared_ptr<inference::Detector>> LoadModel(const GlobalOptions& options,
                                                       const std::string& model);

// Parses argv, runs the chosen subcommand, returns the process exit code:
// 0 success, 1 some inputs failed, 2 usage or configuration error.
int Run(int argc, char** argv);

}  // namespace kadr::cli
