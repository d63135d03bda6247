#include "cli/detail/config_settings.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kadr::cli {
namespace {

using nlohmann::json;

std::string EnvNameOf(std::string_view key) {
  std::string env = "KADR_";
  for (const char c : key) {
    env += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return env;
}

Result<std::string> Scalar(const json& v, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
  if (v.is_number()) return v.dump();
  return InvalidArgumentError("setting '" + key + "' must be a string, number, boolean, list" +
                              " or (kafka_properties) an object, not " + v.type_name());
}

Result<std::string> ValueText(const json& v, const std::string& key, char delimiter) {
  std::string out;
  if (v.is_array()) {
    if (delimiter == '\0') {
      return InvalidArgumentError("setting '" + key + "' takes one value, not a list");
    }
    for (const auto& item : v) {
      ASSIGN_OR_RETURN(std::string s, Scalar(item, key));
      if (!out.empty()) out += delimiter;
      out += s;
    }
    return out;
  }
  if (v.is_object()) {
    for (const auto& [k, item] : v.items()) {
      std::string name = key;
      name.append(".").append(k);
      ASSIGN_OR_RETURN(std::string s, Scalar(item, name));
      if (!out.empty()) out += ';';
      out.append(k).append("=").append(s);
    }
    return out;
  }
  return Scalar(v, key);
}

}  // namespace

Result<std::vector<ConfigSetting>> ParseConfigSettings(const std::string& text,
                                                       const KnownSettings& known) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError(R"(not a JSON object like {"settings": {...}, "models": [...]})");
  }
  std::vector<ConfigSetting> out;
  if (!j.contains("settings")) return out;
  const json& settings = j["settings"];
  if (!settings.is_object()) return InvalidArgumentError(R"("settings" must be an object)");
  for (const auto& [key, value] : settings.items()) {
    ConfigSetting s;
    s.env = EnvNameOf(key);
    const auto option = known.find(s.env);
    if (option == known.end()) {
      return InvalidArgumentError("unknown setting '" + key + "' (no option reads " + s.env +
                                  "; the settings are listed in docs/operations.md)");
    }
    ASSIGN_OR_RETURN(s.value, ValueText(value, key, option->second));
    out.push_back(std::move(s));
  }
  return out;
}

KnownSettings KnownEnvNames(const CLI::App& app) {
  KnownSettings names;
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_envname().empty()) continue;
    char& delimiter = names[opt->get_envname()];
    if (delimiter == '\0') delimiter = opt->get_delimiter();
  }
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    for (const auto& [env, delimiter] : KnownEnvNames(*sub)) {
      char& d = names[env];
      if (d == '\0') d = delimiter;
    }
  }
  return names;
}

std::filesystem::path FindConfigFile(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--config" && i + 1 < argc) return argv[i + 1];
    if (arg.starts_with("--config=")) return std::string(arg.substr(9));
  }
  const char* env = std::getenv("KADR_CONFIG");
  return env != nullptr ? std::filesystem::path(env) : std::filesystem::path();
}

Status ApplyConfigSettings(const std::filesystem::path& file, const CLI::App& app) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return NotFoundError("config " + file.string() + ": cannot read it");
  std::stringstream text;
  text << in.rdbuf();
  auto settings = ParseConfigSettings(text.str(), KnownEnvNames(app));
  if (!settings) return settings.error().WithContext("config " + file.string());
  for (const auto& s : *settings) {
    // 0: a variable already set (the environment) wins over the file.
    if (::setenv(s.env.c_str(), s.value.c_str(), 0) != 0) {
      return InternalError("config " + file.string() + ": cannot set " + s.env);
    }
  }
  return Status::Ok();
}

}  // namespace kadr::cli
