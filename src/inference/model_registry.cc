#include "inference/model_registry.h"

#include <fstream>
#include <iterator>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "inference/detail/builtin_detectors.h"
#include "inference/detail/onnx_detector.h"

namespace kadr::inference {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

Result<std::string> ReadText(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read " + path.string());
  return std::string{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::path Resolve(const fs::path& base, const std::string& p) {
  fs::path path(p);
  return path.is_absolute() ? path : base / path;
}

Status ParseSpecObject(const json& j, const fs::path& base, ModelSpec& spec) {
  static const std::set<std::string> kKeys = {"name",         "path",       "family", "labels",
                                              "labels_file",  "confidence", "iou",    "input_width",
                                              "input_height", "swap_rb",    "mean",   "std",
                                              "pad",          "pad_value",  "engine"};
  if (!j.is_object()) return InvalidArgumentError("a model entry must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (!kKeys.count(key)) return InvalidArgumentError("unknown key '" + key + "'");
  }
  try {
    if (j.contains("name")) spec.name = j["name"].get<std::string>();
    if (j.contains("path")) spec.path = Resolve(base, j["path"].get<std::string>());
    if (j.contains("family")) {
      ASSIGN_OR_RETURN(spec.family, ParseFamily(j["family"].get<std::string>()));
    }
    if (j.contains("labels")) spec.labels = j["labels"].get<std::vector<std::string>>();
    if (j.contains("labels_file")) {
      ASSIGN_OR_RETURN(spec.labels,
                       ReadLabelsFile(Resolve(base, j["labels_file"].get<std::string>())));
    }
    auto unit = [&](const char* key, std::optional<float>& out) -> Status {
      if (!j.contains(key)) return Status::Ok();
      const float v = j[key].get<float>();
      if (v < 0 || v > 1) return InvalidArgumentError(std::string(key) + " must be in [0, 1]");
      out = v;
      return Status::Ok();
    };
    RETURN_IF_ERROR(unit("confidence", spec.confidence));
    RETURN_IF_ERROR(unit("iou", spec.iou));
    if (j.contains("input_width")) spec.input_width = j["input_width"].get<int>();
    if (j.contains("input_height")) spec.input_height = j["input_height"].get<int>();
    if (j.contains("swap_rb")) spec.swap_rb = j["swap_rb"].get<bool>();
    if (j.contains("mean")) spec.mean = j["mean"].get<std::array<float, 3>>();
    if (j.contains("std")) spec.std = j["std"].get<std::array<float, 3>>();
    if (j.contains("pad")) {
      const auto pad = j["pad"].get<std::string>();
      if (pad != "center" && pad != "top_left") {
        return InvalidArgumentError("pad must be \"center\" or \"top_left\"");
      }
      spec.pad_top_left = pad == "top_left";
    }
    if (j.contains("pad_value")) spec.pad_value = j["pad_value"].get<float>();
    if (j.contains("engine")) {
      ASSIGN_OR_RETURN(spec.engine, ParseEngineKind(j["engine"].get<std::string>()));
    }
  } catch (const json::exception& e) {
    return InvalidArgumentError(std::string("wrong value type: ") + e.what());
  }
  return Status::Ok();
}

// The folder's only *.names file, if there is exactly one.
std::optional<fs::path> SoleNamesFile(const fs::path& dir) {
  std::optional<fs::path> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".names") {
      if (found) return std::nullopt;
      found = e.path();
    }
  }
  return found;
}

}  // namespace

std::string_view LoadStateName(LoadState state) {
  switch (state) {
    case LoadState::kNotLoaded:
      return "not_loaded";
    case LoadState::kReady:
      return "ready";
    case LoadState::kFailed:
      return "failed";
  }
  return "unknown";
}

Status ParseModelSpecJson(std::string_view text, const fs::path& base_dir, ModelSpec& spec) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError("not valid JSON");
  return ParseSpecObject(j, base_dir, spec);
}

Result<std::unique_ptr<ModelRegistry>> ModelRegistry::Create(const RegistryOptions& options) {
  std::unique_ptr<ModelRegistry> reg(new ModelRegistry());
  reg->options_ = options;
  for (const EngineKind engine : {EngineKind::kOnnxRuntime, EngineKind::kOpenCvDnn}) {
    reg->devices_[static_cast<size_t>(engine)] = ResolveDevice(options.device, engine);
  }
  // One line for the default engine; the other's shows when a model uses it.
  if (reg->device().fallback) {
    spdlog::warn("{}", DescribeDevice(reg->device()));
  } else {
    spdlog::info("{}", DescribeDevice(reg->device()));
  }
  if (options.builtins) {
    reg->Add(HogPeopleSpec());
    reg->Add(HaarFaceSpec(options.haar_dir));
    reg->Add(NullSpec());
  }

  // Discovered models first, so the config file can override them by name.
  for (const auto& dir : options.models_dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".onnx") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    const auto sole_names = SoleNamesFile(dir);
    for (const auto& file : files) {
      ModelSpec spec;
      spec.name = file.stem().string();
      spec.path = file;
      spec.source = "discovered in " + dir.string();
      fs::path sidecar = file;
      sidecar.replace_extension(".json");
      if (fs::exists(sidecar, ec)) {
        ASSIGN_OR_RETURN(std::string text, ReadText(sidecar));
        RETURN_IF_ERROR(
            ParseModelSpecJson(text, dir, spec).WithContext("sidecar " + sidecar.string()));
        spec.source += " with sidecar " + sidecar.filename().string();
      }
      fs::path names = file;
      names.replace_extension(".names");
      if (spec.labels.empty()) {
        if (fs::exists(names, ec)) {
          ASSIGN_OR_RETURN(spec.labels, ReadLabelsFile(names));
        } else if (sole_names) {
          // Only used when the ONNX metadata has no names either (decided at load).
          spec.labels.clear();
          auto labels = ReadLabelsFile(*sole_names);
          if (labels) spec.source += ", labels " + sole_names->filename().string();
          if (labels) spec.labels = std::move(*labels);
        }
      }
      reg->Add(std::move(spec));
    }
  }

  if (!options.config_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadText(options.config_file));
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    const std::string where = "config " + options.config_file.string();
    // {"models": [...], "settings": {...}}: both optional; the settings are the command
    // line's (src/cli/detail/config_settings.h).
    if (j.is_discarded() || !j.is_object()) {
      return InvalidArgumentError(where + R"(: expected {"models": [ ... ], "settings": { ... }})");
    }
    for (const auto& [key, value] : j.items()) {
      if (key != "models" && key != "settings") {
        std::string message = where;
        message.append(": unknown key '")
            .append(key)
            .append(R"(' (expected "models", "settings"))");
        return InvalidArgumentError(std::move(message));
      }
    }
    if (!j.contains("models")) j["models"] = json::array();
    if (!j["models"].is_array()) {
      return InvalidArgumentError(where + R"(: "models" must be a list of model entries)");
    }
    const fs::path base = options.config_file.parent_path();
    std::set<std::string> seen;
    for (const auto& entry : j["models"]) {
      ModelSpec spec;
      RETURN_IF_ERROR(ParseSpecObject(entry, base, spec).WithContext(where));
      if (spec.name.empty()) return InvalidArgumentError(where + ": a model entry has no \"name\"");
      if (!seen.insert(spec.name).second) {
        return InvalidArgumentError(where + ": model '" + spec.name + "' is listed twice");
      }
      if (spec.path.empty() && !IsBuiltinFamily(spec.family)) {
        return InvalidArgumentError(where + ": model '" + spec.name + "' has no \"path\"");
      }
      spec.source = where;
      reg->Add(std::move(spec));
    }
  }
  return reg;
}

void ModelRegistry::Add(ModelSpec spec) {
  auto entry = std::make_unique<Entry>();
  const std::string name = spec.name;
  entry->spec = std::move(spec);
  std::lock_guard lock(mu_);
  entries_[name] = std::move(entry);
}

std::vector<std::string> ModelRegistry::Names() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> names;
  for (const auto& [name, e] : entries_) names.push_back(name);
  return names;
}

std::vector<ModelStatus> ModelRegistry::List() const {
  std::lock_guard lock(mu_);
  std::vector<ModelStatus> out;
  for (const auto& [name, e] : entries_) {
    ModelStatus s;
    s.spec = e->spec;
    s.state = e->state;
    s.error = e->error;
    if (e->detector) s.info = e->detector->info();
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::shared_ptr<Detector>> ModelRegistry::Get(std::string_view name) {
  Entry* entry = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string names;
      for (const auto& [n, e] : entries_) names += (names.empty() ? "" : ", ") + n;
      return NotFoundError("unknown model '" + std::string(name) + "'; available: " + names);
    }
    entry = it->second.get();
    if (entry->state == LoadState::kReady) return entry->detector;
    if (entry->state == LoadState::kFailed) return entry->error;
  }
  std::lock_guard load_lock(entry->load_mu);
  {
    std::lock_guard lock(mu_);  // another thread may have loaded it meanwhile
    if (entry->state == LoadState::kReady) return entry->detector;
    if (entry->state == LoadState::kFailed) return entry->error;
  }
  const ModelSpec& spec = entry->spec;
  Result<std::unique_ptr<Detector>> created = InternalError("not loaded");
  if (IsBuiltinFamily(spec.family)) {
    created = CreateBuiltinDetector(spec);
  } else {
    const EngineKind engine = spec.engine.value_or(options_.engine);
    created = LoadOnnx(spec, engine);
    if (!created && created.error().code() == StatusCode::kUnsupported) {
      // Say whether the other engine can run it: a quantised model OpenCV refuses may run on
      // ONNX Runtime, and a model ONNX Runtime refuses may still load in OpenCV.
      const EngineKind other =
          engine == EngineKind::kOnnxRuntime ? EngineKind::kOpenCvDnn : EngineKind::kOnnxRuntime;
      const std::string other_name(EngineKindName(other));
      auto probe = LoadOnnx(spec, other);
      std::string hint;
      if (probe) {
        hint = "; it loads with engine '" + other_name + "' (\"engine\": \"" + other_name +
               "\" in its sidecar, or --engine " + other_name + ")";
      } else {
        // The probe's message repeats the model's name and file; keep only its cause.
        std::string cause = probe.error().message();
        const std::string context = "model '" + spec.name + "' (" + spec.path.string() + "): ";
        if (cause.rfind(context, 0) == 0) cause.erase(0, context.size());
        const auto families = cause.find(". kadr runs");
        if (families != std::string::npos) cause.erase(families);
        // A file neither can parse fails the same way twice: say it once.
        hint = created.error().message().find(cause) != std::string::npos
                   ? "; engine '" + other_name + "' cannot run it either"
                   : "; engine '" + other_name + "' cannot run it either: " + cause;
      }
      created = Status(created.error().code(), created.error().message() + hint);
    }
  }
  std::lock_guard lock(mu_);
  if (!created) {
    entry->state = LoadState::kFailed;
    entry->error = created.error();
    spdlog::warn("model load failed name={} error=\"{}\"", spec.name, entry->error.message());
    return entry->error;
  }
  entry->detector = std::shared_ptr<Detector>(std::move(*created));
  entry->state = LoadState::kReady;
  for (const auto& note : entry->detector->info().notes) {
    spdlog::info("model {}: {}", spec.name, note);
  }
  return entry->detector;
}

Result<std::unique_ptr<Detector>> ModelRegistry::LoadOnnx(const ModelSpec& spec,
                                                          EngineKind engine) {
  const DeviceChoice& device = devices_[static_cast<size_t>(engine)];
  OnnxDetectorOptions options{.engine = engine,
                              .cuda = device.cuda,
                              .threads = options_.threads,
                              .warm_up = true,
                              .max_batch = options_.max_batch};
  ModelSpec on_engine = spec;
  on_engine.engine = engine;
  auto created = CreateOnnxDetector(on_engine, options);
  if (!created && device.cuda) {
    // The warm-up pass runs on the device: a CUDA error (cuDNN missing, out of memory, a layer
    // the backend cannot run) shows here, and the CPU still serves the model.
    spdlog::warn("model {} failed on CUDA ({}); loading it on the CPU", spec.name,
                 created.error().message());
    options.cuda = false;
    created = CreateOnnxDetector(on_engine, options);
  }
  return created;
}

void ModelRegistry::LoadAll() {
  for (const auto& name : Names()) (void)Get(name);
}

}  // namespace kadr::inference
