// FrameSource: where live frames come from (a V4L2 device, an RTSP or HTTP MJPEG stream, a
// video file), behind one small interface the camera service is written against; and the
// source-string helpers every caller needs (ParseSource, RedactUrl).
//
// Lifecycle: construct (no I/O) -> Open() -> Read()... -> Close(). A source that failed or was
// lost is not reopened in place: the caller closes it and builds a new one (the camera
// service's reconnect loop does exactly that).
// Threading: one FrameSource is used from one thread at a time (the capture thread). Read()
// blocks at most about the source's read timeout; there is no way to interrupt it earlier,
// so a caller stopping a capture thread waits at most that long.
// Errors: see each method. Messages never contain credentials (they go through RedactUrl).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <opencv2/core/mat.hpp>

#include "common/status.h"

namespace kadr::capture {

class SourcePolicy;  // capture/source_policy.h

enum class SourceKind {
  kDevice,  // "/dev/video0" (V4L2)
  kRtsp,    // "rtsp://[user:pass@]host[:port]/path", "rtsps://..."
  kHttp,    // "http://host/stream.mjpg", "https://..." (MJPEG or anything FFmpeg reads)
  kFile,    // "/abs/path/video.mp4" or "file:///abs/path/video.mp4"
};

std::string_view SourceKindName(SourceKind kind);  // "device", "rtsp", "http", "file"

// A source string taken apart. Network sources keep their full URL (credentials included:
// FFmpeg needs them) in `uri`; print `redacted` instead.
struct SourceLocation {
  SourceKind kind = SourceKind::kFile;
  std::string uri;       // what is opened: the URL, or the absolute path (file://, device)
  std::string redacted;  // RedactUrl(uri): safe for logs, errors and API responses
  std::string host;      // network sources: host name or address (IPv6 without brackets)
  int port = 0;          // network sources: the port, or the scheme's default (554, 80, 443)
};

// Validates and classifies a source string without touching the file system or network.
// kInvalidArgument: empty, a relative path, an unsupported scheme ("udp://..."), a network
// URL without a host or with a bad port, a file:// URL for another host.
Result<SourceLocation> ParseSource(std::string_view source);

// `text` with the credentials of every URL in it replaced: "rtsp://user:pass@cam/x" ->
// "rtsp://***@cam/x"; values of query parameters that look secret (password, pass, pwd,
// token, auth, key, secret, signature, sig) -> "***". When in doubt it hides more: everything
// between "://" and the last '@' of the URL (up to whitespace or a quote) counts as
// credentials, since a password may hold '/' or '?' unescaped. Text without "://" is returned
// unchanged. Use it on every log line, error message and API response that may hold a source.
std::string RedactUrl(std::string_view text);

// One decoded frame, or the end of a file that is not looped.
struct Frame {
  cv::Mat image;               // 8-bit BGR (CV_8UC3); empty when end_of_stream
  bool end_of_stream = false;  // a file source reached its end (never with loop)
};

// What the source says about itself once open. Values the backend does not know are 0.
struct SourceInfo {
  SourceKind kind = SourceKind::kFile;
  double fps = 0;  // nominal frame rate (0: unknown, e.g. many MJPEG streams)
  int width = 0;   // of the first frame
  int height = 0;
  bool live = true;  // false for files: the reader must pace itself
};

struct SourceOptions {
  // Longest Open() may take for a network source (connect + stream probe).
  std::chrono::milliseconds open_timeout{5000};
  // Longest one Read() may wait for a network source's next frame before it fails.
  std::chrono::milliseconds read_timeout{5000};
  // Files: start again from the first frame at the end instead of ending.
  bool loop = false;
  // What may be opened (files, devices, hosts). Unset: the default SourcePolicy (no files, no
  // devices, no loopback, link-local or metadata hosts).
  std::shared_ptr<const SourcePolicy> policy;
};

class FrameSource {
 public:
  virtual ~FrameSource() = default;

  // Opens the source and reads its first frame (which the first Read() returns).
  // kPermissionDenied: a network source's host resolves to an address the policy refuses.
  // kNotFound: "no such device /dev/video9", "no such file /x.mp4".
  // kInvalidArgument: the file is a directory or unreadable.
  // kUnsupported: a file that is not a video ("not a video: ..."), one with no decodable frame.
  // kUnavailable: a device that cannot be opened (busy, not a capture device), a network
  //   source that refuses the connection or cannot be resolved, a stream that opens but gives
  //   no frame. kDeadlineExceeded: no answer within open_timeout. Messages name the source
  //   (redacted) and host:port.
  virtual Status Open() = 0;

  // The next frame. kUnavailable when the source is lost: connection closed, read timed out,
  // device gone, a file that cannot be restarted. kFailedPrecondition when not open.
  virtual Result<Frame> Read() = 0;

  // Releases the device / connection / file. Idempotent.
  virtual void Close() = 0;

  // Meaningful after a successful Open().
  virtual SourceInfo info() const = 0;
};

}  // namespace kadr::capture
