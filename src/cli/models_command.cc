// `kadr models`: every model the registry knows, loaded, with its load status.
#include <cstdio>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/detail/commands.h"

namespace kadr::cli {
namespace {

int RunModels(bool json, const GlobalOptions& global) {
  auto registry = inference::ModelRegistry::Create(ToRegistryOptions(global));
  if (!registry) {
    fmt::print(stderr, "error: {}\n", registry.error().ToString());
    return 2;
  }
  (*registry)->LoadAll();
  const auto models = (*registry)->List();
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& m : models) {
      nlohmann::json j = {{"name", m.spec.name},
                          {"status", inference::LoadStateName(m.state)},
                          {"source", m.spec.source},
                          {"path", m.spec.path.string()}};
      if (m.info) {
        j["family"] = inference::FamilyName(m.info->family);
        j["backend"] = m.info->backend;
        j["input"] = {{"width", m.info->input_width}, {"height", m.info->input_height}};
        j["classes"] = m.info->labels.size();
        j["labels"] = m.info->labels;
        j["masks"] = m.info->has_masks;
        j["confidence"] = m.info->default_confidence;
        j["iou"] = m.info->default_iou;
        j["notes"] = m.info->notes;
      } else {
        j["family"] = inference::FamilyName(m.spec.family);
      }
      if (m.state == inference::LoadState::kFailed) {
        j["error"] = {{"code", StatusCodeName(m.error.code())}, {"message", m.error.message()}};
      }
      out.push_back(std::move(j));
    }
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("{:<30} {:<11} {:<9} {:>7} {:<15} {}\n", "NAME", "FAMILY", "INPUT", "CLASSES",
             "BACKEND", "STATUS");
  for (const auto& m : models) {
    const bool ready = m.info.has_value();
    const std::string input = ready && m.info->input_width > 0
                                  ? fmt::format("{}x{}", m.info->input_width, m.info->input_height)
                                  : "any";
    fmt::print("{:<30} {:<11} {:<9} {:>7} {:<15} {}\n", m.spec.name,
               inference::FamilyName(ready ? m.info->family : m.spec.family), ready ? input : "-",
               ready ? std::to_string(m.info->labels.size()) : "-", ready ? m.info->backend : "-",
               inference::LoadStateName(m.state));
    if (m.state == inference::LoadState::kFailed) fmt::print("    error: {}\n", m.error.message());
  }
  return 0;
}

}  // namespace

Command AddModelsCommand(CLI::App& app, const GlobalOptions& global) {
  auto json = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand("models", "list the available models and load each one");
  sub->add_flag("--json", *json, "print JSON instead of a table")->envname("KADR_JSON");
  return {sub, [json, &global] { return RunModels(*json, global); }};
}

}  // namespace kadr::cli
