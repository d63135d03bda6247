#include "cli/app.h"

#include <sys/stat.h>

#include <cstdlib>
#include <set>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/detail/commands.h"
#include "cli/detail/config_settings.h"

namespace kadr::cli {
namespace {

std::vector<std::filesystem::path> SplitPaths(const std::string& s) {
  std::vector<std::filesystem::path> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ':')) {
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

}  // namespace

inference::RegistryOptions ToRegistryOptions(const GlobalOptions& options) {
  inference::RegistryOptions r;
  r.config_file = options.config_file;
  r.models_dirs = options.models_dirs;
  r.device = options.device;
  r.engine = options.engine;
  r.threads = options.threads;
  return r;
}

Result<std::shared_ptr<inference::Detector>> LoadModel(const GlobalOptions& options,
                                                       const std::string& model) {
  auto registry = inference::ModelRegistry::Create(ToRegistryOptions(options));
  if (!registry) {
    fmt::print(stderr, "error: {}\n", registry.error().ToString());
    return registry.error();
  }
  auto detector = (*registry)->Get(model);
  if (!detector) fmt::print(stderr, "error: {}\n", detector.error().ToString());
  return detector;
}

int Run(int argc, char** argv) {
  CLI::App app{"kadr: computer-vision models as a service"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the subcommand: `kadr up --models-dir m`
  app.set_version_flag("--version", std::string("kadr ") + KADR_VERSION);

  GlobalOptions global;
  std::string models_dirs;
  app.add_option("--config", global.config_file,
                 "config file (JSON): {\"settings\": {...}, \"models\": [...]}")
      ->envname("KADR_CONFIG")
      ->check(CLI::ExistingFile);
  app.add_option("--models-dir", models_dirs,
                 "folders scanned for *.onnx models, ':'-separated (default: ./models)")
      ->envname("KADR_MODELS_DIR");
  app.add_option("--threads", global.threads,
                 "CPU threads per model for inference (ONNX Runtime's intra-op threads, OpenCV's "
                 "pool; 0 = all cores)")
      ->envname("KADR_THREADS")
      ->check(CLI::Range(0, 1024));
  app.add_option("--log-level", global.log_level, "trace, debug, info, warn, error")
      ->envname("KADR_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  std::string device = "auto";
  app.add_option("--device", device,
                 "inference device: auto (CUDA when available), cpu, cuda (falls back to CPU)")
      ->envname("KADR_DEVICE")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();

  std::string engine = "onnxruntime";
  app.add_option("--engine", engine,
                 "engine for ONNX models without an \"engine\" in their sidecar: onnxruntime, "
                 "opencv (OpenCV DNN)")
      ->envname("KADR_ENGINE")
      ->check(CLI::IsMember({"onnxruntime", "opencv"}))
      ->capture_default_str();

  const std::vector<Command> commands = {
      AddDetectCommand(app, global), AddModelsCommand(app, global), AddBrokerCommand(app, global),
      AddWorkerCommand(app, global), AddUpCommand(app, global),     AddGatewayCommand(app, global),
      AddViewerCommand(app, global), AddCameraCommand(app, global), AddTopicsCommand(app, global),
      AddHealthCommand(app, global), AddTokenCommand(app, global)};
  // The config file's settings become environment defaults, so flags > environment > file.
  if (const auto config = FindConfigFile(argc, argv); !config.empty()) {
    if (Status s = ApplyConfigSettings(config, app); !s.ok()) {
      fmt::print(stderr, "error: {}\n", s.message());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  global.device = *inference::ParseDevice(device);      // checked by IsMember above
  global.engine = *inference::ParseEngineKind(engine);  // likewise
  global.models_dirs =
      models_dirs.empty() ? std::vector<std::filesystem::path>{"models"} : SplitPaths(models_dirs);
  spdlog::set_default_logger(spdlog::stderr_color_mt("kadr"));
  spdlog::set_level(spdlog::level::from_str(global.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  if (global.threads > 0) cv::setNumThreads(global.threads);

  for (const auto& command : commands) {
    if (!command.app->parsed()) continue;
    // The services' data (job store, images, videos, stream sources with their credentials)
    // is the operator's alone: files 0600, folders 0700, whatever library creates them
    // (docs/security.md). `kadr detect` writes where the user asked, with the user's umask.
    static const std::set<std::string> kServices = {"up",     "gateway", "viewer",
                                                    "camera", "worker",  "broker"};
    if (kServices.contains(command.app->get_name())) umask(077);
    return command.run();
  }
  return 2;
}

}  // namespace kadr::cli
