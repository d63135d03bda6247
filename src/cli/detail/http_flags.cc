#include "cli/detail/http_flags.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "auth/token_store.h"

namespace kadr::cli {
namespace {

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A Host header's name: no brackets around an IPv6 address.
std::string HostName(std::string host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return Lower(host);
}

}  // namespace

void AddHttpSecurityFlags(CLI::App& app, HttpSecurityFlags& flags) {
  app.add_option("--auth", flags.auth,
                 "access control: on (API tokens required), off, or auto (on unless the HTTP "
                 "host is a loopback address)")
      ->envname("KADR_AUTH")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  app.add_option("--auth-file", flags.auth_file,
                 "the API tokens (hashes only; shared by every process of a deployment) "
                 "(default: <data-dir>/auth/tokens.json)")
      ->envname("KADR_AUTH_FILE");
  app.add_option("--tls-cert", flags.tls_cert,
                 "serve HTTPS with this PEM certificate (chain); needs --tls-key")
      ->envname("KADR_TLS_CERT");
  app.add_option("--tls-key", flags.tls_key, "the PEM private key of --tls-cert")
      ->envname("KADR_TLS_KEY");
  app.add_option("--allowed-host", flags.allowed_hosts,
                 "a Host name requests may carry (repeat, or comma-separated); others get 421 "
                 "(DNS rebinding). Default: for a loopback --host localhost, 127.0.0.1, ::1 and "
                 "the host; otherwise any")
      ->envname("KADR_ALLOWED_HOSTS")
      ->delimiter(',');
  app.add_option("--trusted-proxy", flags.trusted_proxies,
                 "a reverse proxy (address or network, e.g. 10.0.0.0/8) whose X-Forwarded-For "
                 "names the client, so that per-client limits and login throttling see clients "
                 "(repeat, or comma-separated; default: none, the peer is the client)")
      ->envname("KADR_TRUSTED_PROXIES")
      ->delimiter(',');
}

std::string AuthFilePath(const HttpSecurityFlags& flags, const std::string& data_dir) {
  if (!flags.auth_file.empty()) return flags.auth_file;
  return (std::filesystem::path(data_dir.empty() ? "kadr-data" : data_dir) / "auth" / "tokens.json")
      .string();
}

std::string HttpScheme(const http::HttpServerOptions& options) {
  return options.tls_cert_file.empty() ? "http" : "https";
}

Result<std::shared_ptr<auth::AccessControl>> ApplyHttpSecurity(const HttpSecurityFlags& flags,
                                                               const std::string& data_dir,
                                                               http::HttpServerOptions& options) {
  // TLS: both files or neither.
  if (flags.tls_cert.empty() != flags.tls_key.empty()) {
    return InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  for (const std::string& f : {flags.tls_cert, flags.tls_key}) {
    if (!f.empty() && !std::filesystem::is_regular_file(f)) {
      return NotFoundError("TLS file " + f + " does not exist");
    }
  }
  options.tls_cert_file = flags.tls_cert;
  options.tls_key_file = flags.tls_key;
  options.trusted_proxies = flags.trusted_proxies;

  // Host names: an explicit list, or the loopback names for a loopback bind.
  options.allowed_hosts.clear();
  for (const std::string& h : flags.allowed_hosts) {
    if (!h.empty()) options.allowed_hosts.push_back(HostName(h));
  }
  if (flags.allowed_hosts.empty() && auth::IsLoopbackHost(options.host)) {
    options.allowed_hosts = {"localhost", "127.0.0.1", "::1"};
    const std::string bind = HostName(options.host);
    if (std::find(options.allowed_hosts.begin(), options.allowed_hosts.end(), bind) ==
        options.allowed_hosts.end()) {
      options.allowed_hosts.push_back(bind);
    }
  }

  ASSIGN_OR_RETURN(const auth::AuthMode mode, auth::ParseAuthMode(flags.auth));
  std::shared_ptr<auth::TokenStore> store;
  std::string file;
  if (auth::AuthRequired(mode, options.host)) {
    file = AuthFilePath(flags, data_dir);
    auto opened = auth::TokenStore::Open(file);
    if (!opened) return opened.error().WithContext("token file " + file);
    store = std::move(*opened);
    auto created = store->EnsureAdmin("admin");
    if (!created) return created.error().WithContext("token file " + file);
    if (*created) {
      // Shown once: the file keeps only its hash.
      fmt::print(stderr,
                 "kadr: access control is on and {} held no admin token: created one. Save it "
                 "now, it is not shown again (more: `kadr token create`):\n"
                 "kadr: first admin token: {}\n",
                 file, (*created)->token);
      std::fflush(stderr);
    }
  }
  auto access = std::make_shared<auth::AccessControl>(auth::AccessOptions{}, store);
  options.authorizer = auth::MakeAuthorizer(access);
  std::string hosts;
  for (const auto& h : options.allowed_hosts) hosts += (hosts.empty() ? "" : ",") + h;
  spdlog::info("http security auth={} token_file={} tls={} allowed_hosts={}",
               access->enabled() ? "on" : "off", file.empty() ? "-" : file,
               options.tls_cert_file.empty() ? "off" : "on", hosts.empty() ? "any" : hosts);
  return access;
}

}  // namespace kadr::cli
