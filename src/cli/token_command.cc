// `kadr token create|list|revoke`: the API tokens of a deployment, in its token file
// (auth/token_store.h). A created token is printed once, on stdout alone (for scripts); the
// file keeps only its hash. Works while the services run: they reload the file when it
// changes, so a revoked token stops working at its next request.
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "auth/role.h"
#include "auth/token_store.h"
#include "cli/detail/commands.h"
#include "cli/detail/http_flags.h"

namespace kadr::cli {
namespace {

struct TokenArgs {
  HttpSecurityFlags http;  // only auth_file is used
  std::string data_dir = "kadr-data";
  std::string role;
  std::string name;
  std::string id;
};

std::unique_ptr<auth::TokenStore> OpenStore(const TokenArgs& args) {
  const std::string file = AuthFilePath(args.http, args.data_dir);
  auto store = auth::TokenStore::Open(file);
  if (!store) {
    fmt::print(stderr, "error: token file {}: {}\n", file, store.error().ToString());
    return nullptr;
  }
  return std::move(*store);
}

int RunCreate(const TokenArgs& args) {
  const auto role = auth::ParseRole(args.role);
  if (!role) {
    fmt::print(stderr, "error: --role must be viewer, operator or admin\n");
    return 2;
  }
  auto store = OpenStore(args);
  if (!store) return 1;
  auto created = store->Create(args.name, *role);
  if (!created) {
    fmt::print(stderr, "error: {}\n", created.error().ToString());
    return created.error().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  fmt::print(stderr,
             "kadr: created token {} \"{}\" ({}) in {}; it is shown only now, the file keeps "
             "its hash:\n",
             created->info.id, created->info.name, auth::RoleName(created->info.role),
             store->file().string());
  std::fflush(stderr);
  fmt::print("{}\n", created->token);
  std::fflush(stdout);
  return 0;
}

int RunList(const TokenArgs& args) {
  auto store = OpenStore(args);
  if (!store) return 1;
  auto list = store->List();
  if (!list) {
    fmt::print(stderr, "error: {}\n", list.error().ToString());
    return 1;
  }
  fmt::print("{:<12}  {:<8}  {:<20}  {}\n", "ID", "ROLE", "CREATED (UTC)", "NAME");
  for (const auth::TokenInfo& t : *list) {
    const std::time_t seconds = static_cast<std::time_t>(t.created_ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    char when[32] = {};
    std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
    fmt::print("{:<12}  {:<8}  {:<20}  {}\n", t.id, auth::RoleName(t.role), when, t.name);
  }
  return 0;
}

int RunRevoke(const TokenArgs& args) {
  auto store = OpenStore(args);
  if (!store) return 1;
  if (Status s = store->Revoke(args.id); !s.ok()) {
    fmt::print(stderr, "error: {}\n", s.ToString());
    return 1;
  }
  fmt::print(stderr, "kadr: revoked token {}; its sessions end with it\n", args.id);
  return 0;
}

}  // namespace

Command AddTokenCommand(CLI::App& app, const GlobalOptions&) {
  auto args = std::make_shared<TokenArgs>();
  CLI::App* sub = app.add_subcommand(
      "token", "manage API tokens: create (printed once), list (no secrets), revoke");
  sub->require_subcommand(1);
  sub->fallthrough();
  sub->add_option("--auth-file", args->http.auth_file,
                  "the token file (default: <data-dir>/auth/tokens.json)")
      ->envname("KADR_AUTH_FILE");
  sub->add_option("--data-dir", args->data_dir, "the data folder whose auth/tokens.json to use")
      ->envname("KADR_DATA_DIR")
      ->capture_default_str();

  auto run = std::make_shared<std::function<int()>>();
  CLI::App* create = sub->add_subcommand("create", "create a token and print it (once)");
  create
      ->add_option("--role", args->role,
                   "viewer (read), operator (+ submit), admin (+ streams, deletes)")
      ->required()
      ->check(CLI::IsMember({"viewer", "operator", "admin"}));
  create->add_option("--name", args->name, "who or what holds it (1-64 printable characters)")
      ->required();
  create->callback([args, run] { *run = [args] { return RunCreate(*args); }; });
  CLI::App* list = sub->add_subcommand("list", "list the tokens: id, role, created, name");
  list->callback([args, run] { *run = [args] { return RunList(*args); }; });
  CLI::App* revoke = sub->add_subcommand("revoke", "revoke a token (and its web-UI sessions)");
  revoke->add_option("id", args->id, "the token's id (`kadr token list`)")->required();
  revoke->callback([args, run] { *run = [args] { return RunRevoke(*args); }; });
  return {sub, [run] { return *run ? (*run)() : 2; }};
}

}  // namespace kadr::cli
