#include "capture/source_policy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

namespace kadr::capture {
namespace {

namespace fs = std::filesystem;

using net::IpAddress;
using net::ParseIp;

struct Forbidden {
  const char* net;
  int prefix;
  const char* kind;
};

// What network sources may not reach unless the host allow-list says so.
constexpr Forbidden kForbidden[] = {
    {"0.0.0.0", 8, "an unspecified"},
    {"127.0.0.0", 8, "a loopback"},
    {"169.254.0.0", 16, "a link-local (cloud metadata)"},
    {"100.100.100.200", 32, "a cloud metadata"},
    {"::", 128, "an unspecified"},
    {"::1", 128, "a loopback"},
    {"fe80::", 10, "a link-local"},
    {"fd00:ec2::254", 128, "a cloud metadata"},
};

// "a loopback" etc. for a refused address; nullptr for one the default rule allows.
const char* ForbiddenKind(const IpAddress& ip) {
  for (const Forbidden& f : kForbidden) {
    const std::optional<IpAddress> base = ParseIp(f.net);
    if (base && net::IpNetwork{*base, f.prefix}.Contains(ip)) return f.kind;
  }
  return nullptr;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

bool IsHostName(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_';
  });
}

// The numeric addresses of a host written as an address literal in any form getaddrinfo
// takes ("127.1", "0x7f.1", "[::ffff:127.0.0.1]"), without a DNS query; empty for a name.
std::vector<std::string> LiteralAddresses(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  addrinfo* found = nullptr;
  std::vector<std::string> out;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[NI_MAXHOST] = {};
    if (::getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof(text), nullptr, 0, NI_NUMERICHOST) ==
        0) {
      out.emplace_back(text);
    }
  }
  ::freeaddrinfo(found);
  return out;
}

bool Within(const fs::path& path, const fs::path& dir) {
  auto d = dir.begin();
  auto p = path.begin();
  for (; d != dir.end(); ++d, ++p) {
    if (p == path.end() || *p != *d) return false;
  }
  return true;
}

constexpr char kFilesOff[] =
    "file sources are off: the operator allows directories with --source-dir";
constexpr char kDevicesOff[] =
    "device sources are off: the operator allows devices with --source-device";

}  // namespace

Result<std::shared_ptr<const SourcePolicy>> SourcePolicy::Create(
    const SourcePolicyOptions& options) {
  auto policy = std::make_shared<SourcePolicy>();
  for (const std::string& dir : options.dirs) {
    if (dir.empty()) return InvalidArgumentError("--source-dir: empty directory name");
    std::error_code ec;
    fs::path canonical = fs::canonical(dir, ec);
    if (ec) return InvalidArgumentError("--source-dir " + dir + ": " + ec.message());
    if (!fs::is_directory(canonical, ec)) {
      return InvalidArgumentError("--source-dir " + dir + ": not a directory");
    }
    policy->dirs_.push_back(std::move(canonical));
  }
  for (const std::string& device : options.devices) {
    const std::string normal = fs::path(device).lexically_normal().string();
    if (!normal.starts_with("/dev/") || normal.size() <= 5) {
      return InvalidArgumentError("--source-device " + device +
                                  ": not a device path under /dev/ (e.g. /dev/video0)");
    }
    policy->devices_.push_back(normal);
  }
  for (const std::string& entry : options.hosts) {
    std::string_view e = entry;
    if (e.starts_with("[") && e.ends_with("]")) e = e.substr(1, e.size() - 2);
    if (e.find('/') != std::string_view::npos || ParseIp(e)) {
      Result<net::IpNetwork> network = net::ParseNetwork(e);
      if (!network) {
        return InvalidArgumentError("--source-host " + entry + ": " +
                                    (network.error().message() == "bad prefix length"
                                         ? std::string("bad prefix length")
                                         : std::string("not a host name, an address or a CIDR")));
      }
      policy->host_nets_.push_back(*network);
    } else if (IsHostName(e)) {
      policy->host_names_.push_back(Lower(e));
    } else {
      return InvalidArgumentError("--source-host " + entry +
                                  ": not a host name, an address or a CIDR");
    }
    policy->hosts_listed_ = true;
  }
  return std::shared_ptr<const SourcePolicy>(std::move(policy));
}

bool SourcePolicy::AllowsHostName(std::string_view host) const {
  if (host_names_.empty()) return false;
  const std::string h = Lower(host);
  return std::find(host_names_.begin(), host_names_.end(), h) != host_names_.end();
}

Status SourcePolicy::CheckAddress(std::string_view host, std::string_view address) const {
  const std::optional<IpAddress> ip = ParseIp(address);
  if (!ip) return InvalidArgumentError("'" + std::string(address) + "' is not an address");
  const bool literal = ParseIp(host).has_value();
  const std::string shown = literal ? "source host '" + std::string(host) + "' is"
                                    : "source host '" + std::string(host) + "' resolves to";
  if (hosts_listed_) {
    if (AllowsHostName(host)) return Status::Ok();
    for (const net::IpNetwork& n : host_nets_) {
      if (n.Contains(*ip)) return Status::Ok();
    }
    return PermissionDeniedError(shown + (literal ? " not" : " an address not") +
                                 " among the allowed source hosts (--source-host)");
  }
  if (const char* kind = ForbiddenKind(*ip)) {
    return PermissionDeniedError(shown + " " + kind +
                                 " address, which network sources may not reach (the "
                                 "operator allows hosts with --source-host)");
  }
  return Status::Ok();
}

Result<SourceLocation> SourcePolicy::Check(const SourceLocation& location) const {
  SourceLocation out = location;
  switch (location.kind) {
    case SourceKind::kFile: {
      if (dirs_.empty()) return PermissionDeniedError(kFilesOff);
      // The same answer whether the path exists or not, and never where a symlink points.
      const Status outside = PermissionDeniedError(
          location.redacted + " is outside the allowed source directories (--source-dir)");
      std::error_code ec;
      const fs::path resolved = fs::weakly_canonical(location.uri, ec);
      if (ec || resolved.empty()) return outside;
      for (const fs::path& dir : dirs_) {
        if (Within(resolved, dir)) {
          out.uri = resolved.string();
          return out;
        }
      }
      return outside;
    }
    case SourceKind::kDevice: {
      if (devices_.empty()) return PermissionDeniedError(kDevicesOff);
      const std::string normal = fs::path(location.uri).lexically_normal().string();
      for (const std::string& device : devices_) {
        if (normal == device) {
          out.uri = normal;
          return out;
        }
      }
      // A link to an allowed device (/dev/v4l/by-id/...) is that device.
      std::error_code ec;
      const fs::path resolved = fs::weakly_canonical(normal, ec);
      if (!ec) {
        for (const std::string& device : devices_) {
          std::error_code ec2;
          const fs::path allowed = fs::weakly_canonical(device, ec2);
          if (!ec2 && allowed == resolved) {
            out.uri = device;
            return out;
          }
        }
      }
      return PermissionDeniedError(location.redacted +
                                   " is not an allowed device (--source-device)");
    }
    case SourceKind::kRtsp:
    case SourceKind::kHttp: {
      if (AllowsHostName(location.host)) return out;
      const std::vector<std::string> literal = LiteralAddresses(location.host);
      for (const std::string& address : literal) {
        RETURN_IF_ERROR(CheckAddress(location.host, address));
      }
      if (literal.empty() && hosts_listed_ && host_nets_.empty()) {
        return PermissionDeniedError("source host '" + location.host +
                                     "' is not among the allowed source hosts (--source-host)");
      }
      return out;  // a name: checked when it is resolved
    }
  }
  return out;
}

std::string SourcePolicy::Describe() const {
  auto list = [](const auto& items) {
    std::string out = "[";
    for (const auto& item : items) {
      if (out.size() > 1) out += ',';
      if constexpr (std::is_same_v<std::decay_t<decltype(item)>, fs::path>) {
        out += item.string();
      } else {
        out += item;
      }
    }
    return out + "]";
  };
  std::string hosts = "default (no loopback, link-local or metadata addresses)";
  if (hosts_listed_) {
    std::vector<std::string> all = host_names_;
    for (const net::IpNetwork& n : host_nets_) {
      char text[INET6_ADDRSTRLEN] = {};
      ::inet_ntop(n.base.v6 ? AF_INET6 : AF_INET, n.base.bytes.data(), text, sizeof(text));
      all.push_back(std::string(text) + "/" + std::to_string(n.prefix));
    }
    hosts = list(all);
  }
  return "dirs=" + (dirs_.empty() ? std::string("none") : list(dirs_)) +
         " devices=" + (devices_.empty() ? std::string("none") : list(devices_)) +
         " hosts=" + hosts;
}

const std::string& InstallFfmpegAllowLists() {
  // A function-local static: initialised once, thread-safe.
  static const std::string kValue = [] {
    constexpr char kVariable[] = "OPENCV_FFMPEG_CAPTURE_OPTIONS";
    // Ours; they replace the same keys of the operator's value. The protocols are what
    // rtsp (over TCP), rtsps, http(s) through an optional proxy and files need; the demuxers
    // those of the containers and streams kadr reads (tests/unit/capture verifies each).
    const std::vector<std::pair<std::string, std::string>> ours = {
        {"protocol_whitelist", "file,http,https,tcp,tls,httpproxy"},
        {"format_whitelist", "mov,mp4,matroska,webm,avi,mjpeg,mpjpeg,rtsp,mpegts,h264,hevc"},
        {"max_redirects", "0"}};
    std::vector<std::pair<std::string, std::string>> options;
    if (const char* old = std::getenv(kVariable); old != nullptr) {
      // av_dict_parse_string(value, ";", "|"): "key;value|key;value".
      std::string_view rest = old;
      while (!rest.empty()) {
        const std::string_view pair = rest.substr(0, rest.find('|'));
        rest = pair.size() < rest.size() ? rest.substr(pair.size() + 1) : std::string_view();
        const std::size_t sep = pair.find(';');
        if (sep == std::string_view::npos) continue;
        std::string key(pair.substr(0, sep));
        if (std::any_of(ours.begin(), ours.end(), [&](const auto& o) { return o.first == key; })) {
          continue;
        }
        options.emplace_back(std::move(key), std::string(pair.substr(sep + 1)));
      }
    }
    if (std::none_of(options.begin(), options.end(),
                     [](const auto& o) { return o.first == "rtsp_transport"; })) {
      options.emplace_back("rtsp_transport", "tcp");  // OpenCV's own default, kept
    }
    options.insert(options.end(), ours.begin(), ours.end());
    std::string joined;
    for (const auto& [key, v] : options) {
      if (!joined.empty()) joined += '|';
      joined += key;
      joined += ';';
      joined += v;
    }
    ::setenv(kVariable, joined.c_str(), 1);
    return joined;
  }();
  return kValue;
}

}  // namespace kadr::capture
