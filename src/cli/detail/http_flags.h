// The HTTP settings every kadr server shares (up, gateway, viewer, camera, worker): access
// control (--auth, --auth-file), TLS (--tls-cert, --tls-key) and the Host names it answers
// (--allowed-host), the proxies whose X-Forwarded-For it believes (--trusted-proxy), and how
// they become http::HttpServerOptions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "auth/access_control.h"
#include "common/status.h"
#include "http/server.h"

namespace kadr::cli {

struct HttpSecurityFlags {
  std::string auth = "auto";  // --auth, KADR_AUTH: auto | on | off
  std::string auth_file;      // --auth-file, KADR_AUTH_FILE; empty: <data dir>/auth/tokens.json
  std::string tls_cert;       // --tls-cert, KADR_TLS_CERT (PEM chain)
  std::string tls_key;        // --tls-key, KADR_TLS_KEY (PEM private key)
  std::vector<std::string> allowed_hosts;    // --allowed-host, KADR_ALLOWED_HOSTS
  std::vector<std::string> trusted_proxies;  // --trusted-proxy, KADR_TRUSTED_PROXIES
};

void AddHttpSecurityFlags(CLI::App& app, HttpSecurityFlags& flags);

// The token file: --auth-file, else <data_dir>/auth/tokens.json.
std::string AuthFilePath(const HttpSecurityFlags& flags, const std::string& data_dir);

// Sets `options`' TLS files, allowed hosts and authorizer from `flags` (options.host must be
// set). With access control on, opens the token file and, when it holds no admin token,
// creates one and prints it once on stderr. Returns the access control (off: without a store)
// for the login routes (auth::AccessControl::RegisterRoutes), which must outlive the server.
// kInvalidArgument: a bad --auth, only one of --tls-cert/--tls-key; kNotFound: a TLS file is
// missing; the token file's errors.
Result<std::shared_ptr<auth::AccessControl>> ApplyHttpSecurity(const HttpSecurityFlags& flags,
                                                               const std::string& data_dir,
                                                               http::HttpServerOptions& options);

// "http" or "https" for the server these options make.
std::string HttpScheme(const http::HttpServerOptions& options);

}  // namespace kadr::cli
