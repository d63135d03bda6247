// The "settings" of the JSON config file (`--config FILE`, KADR_CONFIG): every setting a flag
// has, keyed by its environment name without the `KADR_` prefix, in lower case:
//
//   {"settings": {"brokers": "kafka:9092", "http_port": 8080, "models": ["yolox_nano"],
//                 "kafka_properties": {"security.protocol": "SASL_SSL"}},
//    "models": [ ...model registry entries, docs/models.md... ]}
//
// Precedence: flags, then KADR_* environment variables, then the file, then the defaults.
// The file's values are applied as environment defaults before the command line is parsed
// (a variable already set wins), so CLI11 validates them exactly as it validates flags and
// variables. Values: strings, numbers and booleans as written; a list joins with the option's
// own delimiter (',' for models, ';' for kafka_properties) and is refused for a setting that
// takes one value; an object (kafka_properties) becomes "k=v;k=v". A key no option knows is
// an error, so a typo does not go unnoticed.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace kadr::cli {

struct ConfigSetting {
  std::string env;    // KADR_HTTP_PORT
  std::string value;  // "8080"
};

// Environment name -> the delimiter its option splits a value on ('\0': one value).
using KnownSettings = std::map<std::string, char>;

// The settings of config file text, checked against the known environment names.
// kInvalidArgument for malformed JSON, a non-object "settings", an unknown key, or a value
// that is null, a list for a one-value setting, or nested where it makes no sense.
// No "settings": empty.
Result<std::vector<ConfigSetting>> ParseConfigSettings(const std::string& text,
                                                       const KnownSettings& known);

// Every environment name of `app`'s options and its subcommands' options.
KnownSettings KnownEnvNames(const CLI::App& app);

// The config file named on the command line (`--config F`, `--config=F`) or by KADR_CONFIG;
// empty when neither names one.
std::filesystem::path FindConfigFile(int argc, char** argv);

// Reads `file` and sets each setting's variable where it is not set already.
// Errors: kNotFound (no such file) and those of ParseConfigSettings, prefixed with the path.
Status ApplyConfigSettings(const std::filesystem::path& file, const CLI::App& app);

}  // namespace kadr::cli
