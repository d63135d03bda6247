// Subcommand registration. Each Add*Command adds a CLI11 subcommand and returns the function
// that runs it once the command line is parsed (the returned int is the exit code).
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "cli/app.h"

namespace kadr::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command AddDetectCommand(CLI::App& app, const GlobalOptions& global);
Command AddModelsCommand(CLI::App& app, const GlobalOptions& global);
Command AddBrokerCommand(CLI::App& app, const GlobalOptions& global);
Command AddWorkerCommand(CLI::App& app, const GlobalOptions& global);
Command AddUpCommand(CLI::App& app, const GlobalOptions& global);
Command AddGatewayCommand(CLI::App& app, const GlobalOptions& global);
Command AddViewerCommand(CLI::App& app, const GlobalOptions& global);
Command AddCameraCommand(CLI::App& app, const GlobalOptions& global);
Command AddTopicsCommand(CLI::App& app, const GlobalOptions& global);
Command AddHealthCommand(CLI::App& app, const GlobalOptions& global);
Command AddTokenCommand(CLI::App& app, const GlobalOptions& global);

}  // namespace kadr::cli
