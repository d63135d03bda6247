#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <string>

#include "capture/frame_source.h"

namespace kadr::capture {
namespace {

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  }
  return true;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Ends a URL inside free text: whitespace, quotes and angle brackets.
bool EndsUrl(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0 || c == '"' || c == '\'' || c == '<' ||
         c == '>' || c == '`';
}

bool IsSecretKey(std::string_view key) {
  static constexpr std::array<std::string_view, 11> kSecret = {
      "password", "passwd", "pass",      "pwd", "token", "auth",
      "key",      "secret", "signature", "sig", "apikey"};
  const std::string k = Lower(key);
  for (std::string_view s : kSecret) {
    if (k == s || k.ends_with("_" + std::string(s)) || k.ends_with("-" + std::string(s))) {
      return true;
    }
  }
  return k.find("password") != std::string::npos || k.find("token") != std::string::npos;
}

// Redacts one URL token (scheme://...), without the characters that end it.
std::string RedactOne(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  std::string out(url.substr(0, scheme_end + 3));
  std::string_view rest = url.substr(scheme_end + 3);
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    out += "***";
    rest = rest.substr(at);  // keeps the '@'
  }
  const std::size_t q = rest.find('?');
  if (q == std::string_view::npos) return out + std::string(rest);
  out += rest.substr(0, q + 1);
  std::string_view query = rest.substr(q + 1);
  std::string_view fragment;
  if (const std::size_t hash = query.find('#'); hash != std::string_view::npos) {
    fragment = query.substr(hash);
    query = query.substr(0, hash);
  }
  bool first = true;
  while (true) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    if (!first) out += '&';
    first = false;
    const std::size_t eq = pair.find('=');
    if (eq != std::string_view::npos && IsSecretKey(pair.substr(0, eq))) {
      out += pair.substr(0, eq + 1);
      out += "***";
    } else {
      out += pair;
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  out += fragment;
  return out;
}

Status Bad(std::string_view source, std::string why) {
  return InvalidArgumentError("source '" + RedactUrl(source) + "': " + std::move(why));
}

}  // namespace

std::string_view SourceKindName(SourceKind kind) {
  switch (kind) {
    case SourceKind::kDevice:
      return "device";
    case SourceKind::kRtsp:
      return "rtsp";
    case SourceKind::kHttp:
      return "http";
    case SourceKind::kFile:
      return "file";
  }
  return "file";
}

std::string RedactUrl(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t sep = text.find("://", pos);
    if (sep == std::string_view::npos) break;
    // The scheme: letters, digits, '+', '-', '.' before "://".
    std::size_t start = sep;
    while (start > pos &&
           (std::isalnum(static_cast<unsigned char>(text[start - 1])) != 0 ||
            text[start - 1] == '+' || text[start - 1] == '-' || text[start - 1] == '.')) {
      --start;
    }
    std::size_t end = sep + 3;
    while (end < text.size() && !EndsUrl(text[end])) ++end;
    out += text.substr(pos, start - pos);
    out += RedactOne(text.substr(start, end - start));
    pos = end;
  }
  out += text.substr(pos);
  return out;
}

Result<SourceLocation> ParseSource(std::string_view source) {
  SourceLocation loc;
  if (source.empty()) return InvalidArgumentError("source is empty");
  if (std::any_of(source.begin(), source.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20; })) {
    return Bad(source, "contains control characters");
  }
  if (source.starts_with("/dev/")) {
    loc.kind = SourceKind::kDevice;
    loc.uri = std::string(source);
    loc.redacted = loc.uri;
    return loc;
  }
  if (source.starts_with("/")) {
    loc.kind = SourceKind::kFile;
    loc.uri = std::string(source);
    loc.redacted = loc.uri;
    return loc;
  }
  if (StartsWithNoCase(source, "file://")) {
    std::string_view rest = source.substr(7);
    if (StartsWithNoCase(rest, "localhost/")) rest = rest.substr(9);
    if (!rest.starts_with("/")) {
      return Bad(source, "a file:// URL must name an absolute path on this host (file:///...)");
    }
    loc.kind = SourceKind::kFile;
    loc.uri = std::string(rest);
    loc.redacted = loc.uri;
    return loc;
  }
  const std::size_t sep = source.find("://");
  if (sep == std::string_view::npos) {
    return Bad(source,
               "not a source kadr reads: use /dev/videoN, rtsp://, http(s)://, an absolute "
               "file path or file:///");
  }
  const std::string scheme = Lower(source.substr(0, sep));
  int default_port = 0;
  if (scheme == "rtsp" || scheme == "rtsps") {
    loc.kind = SourceKind::kRtsp;
    default_port = scheme == "rtsp" ? 554 : 322;
  } else if (scheme == "http" || scheme == "https") {
    loc.kind = SourceKind::kHttp;
    default_port = scheme == "http" ? 80 : 443;
  } else {
    return Bad(source, "unsupported scheme '" + RedactUrl(scheme) +
                           "' (rtsp, rtsps, http, https, file or a /dev/video device)");
  }
  loc.uri = std::string(source);
  loc.redacted = RedactUrl(source);
  std::string_view rest = source.substr(sep + 3);
  // FFmpeg's rule (av_url_split): the authority ends at the first '/', '?' or '#', and the
  // host starts after its last '@'.
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    authority = authority.substr(at + 1);
  }
  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with("[")) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return Bad(source, "unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    std::string_view tail = authority.substr(close + 1);
    if (!tail.empty()) {
      if (!tail.starts_with(":")) return Bad(source, "bad port");
      port = tail.substr(1);
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return Bad(source, "no host");
  loc.host = std::string(host);
  loc.port = default_port;
  if (!port.empty()) {
    int p = 0;
    const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p < 1 || p > 65535) {
      return Bad(source, "bad port '" + std::string(port) + "' (1..65535)");
    }
    loc.port = p;
  }
  return loc;
}

}  // namespace kadr::capture
