// SourcePolicy: which stream sources the operator allows, so that a client of the stream API
// cannot make the camera service read or scan the host (issue 16, docs/security.md "Stream
// sources", ADR 0011). And InstallFfmpegAllowLists(): the FFmpeg protocols and demuxers every
// capture of the process may use.
//
//   files    only under the operator's directories (--source-dir), after resolving `..` and
//            symlinks; off when none is given
//   devices  only the operator's device paths (--source-device); off when none is given
//   network  rtsp, rtsps, http, https (ParseSource refuses every other scheme). Without a host
//            allow-list every address is allowed except loopback (127/8, ::1), unspecified
//            (0/8, ::), link-local (169.254/16 with the cloud metadata 169.254.169.254,
//            fe80::/10) and the metadata addresses fd00:ec2::254 and 100.100.100.200, also in
//            their IPv4-mapped and IPv4-compatible IPv6 forms; private LAN ranges stay allowed
//            (cameras live there). With an allow-list (--source-host HOST|CIDR) only the
//            hosts named there (any address they resolve to) and the addresses inside its
//            CIDRs are allowed, loopback included when listed.
//
// A refusal is kPermissionDenied with a message that names the source as the request gave it
// and never depends on whether a path exists (no file-existence oracle), nor shows where a
// symlink points.
//
// Thread-safety: a SourcePolicy is immutable after Create(); share it (shared_ptr<const>) and
// use it from any thread. Check() touches the file system (realpath) but never the network.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "capture/frame_source.h"
#include "common/net.h"
#include "common/status.h"

namespace kadr::capture {

struct SourcePolicyOptions {
  // Directories whose files, at any depth, may be sources (--source-dir). Empty: no files.
  std::vector<std::string> dirs;
  // Device paths that may be sources, exactly (--source-device /dev/video0). Empty: none.
  std::vector<std::string> devices;
  // Hosts network sources may reach (--source-host): names (matched without case against the
  // URL's host), addresses, or CIDRs ("10.1.0.0/16", "fd00::/8"). Empty: every host but the
  // loopback, unspecified, link-local and cloud metadata addresses.
  std::vector<std::string> hosts;
};

class SourcePolicy {
 public:
  // The default policy: no files, no devices, the default host rule.
  SourcePolicy() = default;

  // Validates and resolves the options. kInvalidArgument: a directory that does not exist or
  // is not a directory, a device that is not an absolute path under /dev/, a host entry that
  // is neither a host name, an address nor a CIDR.
  static Result<std::shared_ptr<const SourcePolicy>> Create(const SourcePolicyOptions& options);

  // Whether `location` (ParseSource's) may be opened; the location to open when it may: a
  // file's or device's path resolved (symlinks and `..`), which the caller must open instead
  // of the request's. Network sources: an address literal is checked here; a host name is
  // checked when it is resolved (CheckAddress), unless the allow-list names it.
  // kPermissionDenied otherwise.
  Result<SourceLocation> Check(const SourceLocation& location) const;

  // Whether a network source whose URL names `host` may connect to `address` (numeric, as
  // getnameinfo writes it; an IPv6 zone "%eth0" is ignored). kPermissionDenied otherwise;
  // kInvalidArgument when `address` is not numeric.
  Status CheckAddress(std::string_view host, std::string_view address) const;

  // True when the host allow-list names `host` (so any address it resolves to is allowed).
  bool AllowsHostName(std::string_view host) const;

  // One line for the startup log: "dirs=[...] devices=[...] hosts=default".
  std::string Describe() const;

 private:
  std::vector<std::filesystem::path> dirs_;  // canonical
  std::vector<std::string> devices_;         // lexically normal
  std::vector<std::string> host_names_;      // lower case, no trailing dot
  std::vector<net::IpNetwork> host_nets_;
  bool hosts_listed_ = false;
};

// Installs, once per process, the FFmpeg options every cv::VideoCapture(CAP_FFMPEG) of the
// process uses (OpenCV reads OPENCV_FFMPEG_CAPTURE_OPTIONS at each open): protocol_whitelist
// "file,http,https,tcp,tls,httpproxy" (no concat, data, subfile, pipe, udp, ftp...),
// format_whitelist of the video demuxers kadr reads (mov/mp4, matroska/webm, avi, mjpeg,
// mpjpeg, rtsp, mpegts, h264, hevc: no tty, image2, concat, hls...), max_redirects 0 (an
// HTTP source cannot send FFmpeg elsewhere), and rtsp_transport tcp (what OpenCV asks for
// when the variable is unset). Options already in the variable are kept, except that these
// allow-lists and max_redirects replace theirs. Returns the effective value.
// Call it at the start of main()'s command, before any thread starts: setenv() racing a
// getenv() of another thread is undefined behaviour. MakeOpenCvFrameSource() calls it too
// (a no-op once done), as a backstop for programs that did not.
const std::string& InstallFfmpegAllowLists();

}  // namespace kadr::capture
