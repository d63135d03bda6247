#include "capture/opencv_frame_source.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <opencv2/videoio.hpp>

#include "capture/source_policy.h"
#include "common/clock.h"
#include "video/video.h"

namespace kadr::capture {
namespace {

std::string HostPort(const std::string& host, int port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

const std::shared_ptr<const SourcePolicy>& DefaultPolicy() {
  static const auto kPolicy = std::make_shared<const SourcePolicy>();
  return kPolicy;
}

// `uri` with its host[:port] replaced by `address`:`port`, so that FFmpeg connects to the
// address the policy checked instead of resolving the name again.
std::string PinnedUri(const std::string& uri, const std::string& address, int port) {
  const std::size_t start = uri.find("://") + 3;
  std::size_t end = uri.find_first_of("/?#", start);
  if (end == std::string::npos) end = uri.size();
  const std::size_t at = uri.rfind('@', end);
  const std::size_t host = at != std::string::npos && at >= start ? at + 1 : start;
  return uri.substr(0, host) + HostPort(address, port) + uri.substr(end);
}

// Waits for a non-blocking connect on `fd` up to `deadline`; 0 or an errno value.
int FinishConnect(int fd, SteadyClock::time_point deadline) {
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) return ETIMEDOUT;
    pollfd p{fd, POLLOUT, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return ETIMEDOUT;
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
  }
}

class OpenCvFrameSource final : public FrameSource {
 public:
  OpenCvFrameSource(SourceLocation location, const SourceOptions& options)
      : location_(std::move(location)),
        options_(options),
        policy_(options.policy ? options.policy : DefaultPolicy()) {
    info_.kind = location_.kind;
    info_.live = true;
  }
  ~OpenCvFrameSource() override { Close(); }

  Status Open() override {
    try {
      return OpenImpl();
    } catch (const std::exception& e) {
      Close();
      return InternalError("opening " + location_.redacted + ": " + RedactUrl(e.what()));
    }
  }

  Result<Frame> Read() override {
    if (!capture_.isOpened()) {
      return FailedPreconditionError(location_.redacted + " is not open");
    }
    Frame frame;
    if (!pending_.empty()) {
      frame.image = std::move(pending_);
      pending_ = cv::Mat();
      return frame;
    }
    try {
      if (capture_.read(frame.image) && !frame.image.empty()) return Normalised(std::move(frame));
      return UnavailableError("lost " + location_.redacted +
                              ": no frame (connection closed, device gone, or nothing within " +
                              std::to_string(options_.read_timeout.count()) + " ms)");
    } catch (const std::exception& e) {
      return InternalError("reading " + location_.redacted + ": " + RedactUrl(e.what()));
    }
  }

  void Close() override {
    try {
      capture_.release();
    } catch (const std::exception&) {
      // Nothing useful to do: the capture is gone either way.
    }
    pending_ = cv::Mat();
  }

  SourceInfo info() const override { return info_; }

 private:
  Status OpenImpl() {
    Close();
    const auto started = SteadyClock::now();
    switch (location_.kind) {
      case SourceKind::kDevice: {
        struct stat st {};
        if (::stat(location_.uri.c_str(), &st) != 0) {
          return NotFoundError("no such device " + location_.uri);
        }
        if (Status s = OpenCapture(); !s.ok()) return s;
        break;
      }
      case SourceKind::kFile:
        return InternalError("files are read by FileFrameSource");
      case SourceKind::kRtsp:
      case SourceKind::kHttp: {
        auto address = ProbeTcp(location_.host, location_.port, options_.open_timeout, *policy_);
        if (!address) {
          return Status(address.error().code(),
                        location_.redacted + ": " + address.error().message());
        }
        // RTSP connects to the address just checked (no second resolution that DNS could
        // answer differently). HTTP(S) and RTSPS keep the name: the Host header and TLS
        // need it (docs/security.md says what that leaves open).
        open_uri_ = location_.uri;
        const bool plain_rtsp = location_.kind == SourceKind::kRtsp && location_.uri[4] == ':';
        if (plain_rtsp && address->find('%') == std::string::npos) {
          open_uri_ = PinnedUri(location_.uri, *address, location_.port);
        }
        if (Status s = OpenCapture(); !s.ok()) {
          const double ms = MillisSince(started);
          if (ms >= static_cast<double>(options_.open_timeout.count())) {
            return DeadlineExceededError(
                location_.redacted + ": connected to " + HostPort(location_.host, location_.port) +
                " but no video within " + std::to_string(options_.open_timeout.count()) + " ms");
          }
          return s;
        }
        break;
      }
    }
    cv::Mat first;
    if (!capture_.read(first) || first.empty()) {
      capture_.release();
      // OpenCV's open timeout interrupts FFmpeg's stream probe and still reports success.
      if (MillisSince(started) >= static_cast<double>(options_.open_timeout.count()) * 0.95) {
        return DeadlineExceededError(
            location_.redacted + ": connected to " + HostPort(location_.host, location_.port) +
            " but no video within " + std::to_string(options_.open_timeout.count()) + " ms");
      }
      return UnavailableError(location_.redacted + ": opened, but no frame came");
    }
    Frame f{std::move(first), false};
    pending_ = Normalised(std::move(f)).image;
    info_.width = pending_.cols;
    info_.height = pending_.rows;
    const double fps = capture_.get(cv::CAP_PROP_FPS);
    info_.fps = std::isfinite(fps) && fps > 0 && fps <= 1000 ? fps : 0;
    return Status::Ok();
  }

  // Opens capture_ for the location; the error says what could not be opened.
  Status OpenCapture() {
    bool ok = false;
    if (location_.kind == SourceKind::kDevice) {
      ok = capture_.open(location_.uri, cv::CAP_V4L2);
      if (!ok) {
        return UnavailableError("cannot open device " + location_.uri +
                                " (busy, no permission, or not a video capture device)");
      }
      return Status::Ok();
    }
    const std::vector<int> params = {
        cv::CAP_PROP_OPEN_TIMEOUT_MSEC, static_cast<int>(options_.open_timeout.count()),
        cv::CAP_PROP_READ_TIMEOUT_MSEC, static_cast<int>(options_.read_timeout.count())};
    ok = capture_.open(open_uri_, cv::CAP_FFMPEG, params);
    if (ok) return Status::Ok();
    return UnavailableError(location_.redacted + ": connected to " +
                            HostPort(location_.host, location_.port) +
                            " but the stream could not be opened (wrong path, authentication "
                            "required, or not a video stream)");
  }

  // Frames are 8-bit BGR whatever the backend produced (grey V4L2 cameras, 4-channel MJPEG).
  static Frame Normalised(Frame f) {
    if (f.image.empty() || f.image.type() == CV_8UC3) return f;
    cv::Mat out;
    if (f.image.depth() != CV_8U) {
      f.image.convertTo(out, CV_8U);
      f.image = out;
    }
    if (f.image.channels() == 1) {
      cv::Mat bgr;
      cv::merge(std::vector<cv::Mat>{f.image, f.image, f.image}, bgr);
      f.image = bgr;
    } else if (f.image.channels() == 4) {
      std::vector<cv::Mat> planes;
      cv::split(f.image, planes);
      planes.resize(3);
      cv::merge(planes, f.image);
    }
    return f;
  }

  const SourceLocation location_;
  const SourceOptions options_;
  const std::shared_ptr<const SourcePolicy> policy_;
  std::string open_uri_;  // what FFmpeg opens: the URL, its host pinned for rtsp://
  cv::VideoCapture capture_;
  cv::Mat pending_;  // the first frame, read by Open()
  SourceInfo info_;
};

// A video file through the one reader of video files (video::VideoFileReader), as video jobs
// and `kadr detect` read them; at its end it starts again (loop) or reports the end.
class FileFrameSource final : public FrameSource {
 public:
  FileFrameSource(SourceLocation location, const SourceOptions& options)
      : location_(std::move(location)), options_(options) {
    info_.kind = SourceKind::kFile;
    info_.live = false;
  }

  Status Open() override {
    Close();
    struct stat st {};
    // Messages name the path as requested (redacted), never where a symlink led.
    if (::stat(location_.uri.c_str(), &st) != 0) {
      return NotFoundError("no such file " + location_.redacted);
    }
    if (S_ISDIR(st.st_mode)) {
      return InvalidArgumentError(location_.redacted + " is a directory, not a video file");
    }
    if (::access(location_.uri.c_str(), R_OK) != 0) {
      return InvalidArgumentError("cannot read " + location_.redacted + ": " +
                                  std::strerror(errno));
    }
    auto reader = video::VideoFileReader::Open(location_.uri);
    if (!reader) return reader.error();
    info_.fps = reader->fps();
    info_.width = reader->width();
    info_.height = reader->height();
    reader_.emplace(std::move(reader).value());
    return Status::Ok();
  }

  Result<Frame> Read() override {
    if (!reader_) return FailedPreconditionError(location_.redacted + " is not open");
    Frame frame;
    ASSIGN_OR_RETURN(bool more, reader_->Read(frame.image));
    if (more) return frame;
    if (!options_.loop) {
      frame.end_of_stream = true;
      return frame;
    }
    auto again = video::VideoFileReader::Open(location_.uri);
    if (!again) {
      return UnavailableError(
          "file " + location_.redacted +
          " ended and could not be read again from its start: " + again.error().message());
    }
    reader_.emplace(std::move(again).value());
    ASSIGN_OR_RETURN(more, reader_->Read(frame.image));
    if (!more) return UnavailableError("file " + location_.redacted + " has no frame any more");
    return frame;
  }

  void Close() override { reader_.reset(); }
  SourceInfo info() const override { return info_; }

 private:
  const SourceLocation location_;
  const SourceOptions options_;
  std::optional<video::VideoFileReader> reader_;
  SourceInfo info_;
};

}  // namespace

Result<std::string> ProbeTcp(const std::string& host, int port, std::chrono::milliseconds timeout,
                             const SourcePolicy& policy) {
  const auto deadline = SteadyClock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return UnavailableError("cannot resolve host '" + host + "': " + ::gai_strerror(rc));
  }
  // Every address first: FFmpeg may pick any of them when it resolves the name again.
  std::vector<std::string> addresses;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[NI_MAXHOST] = {};
    const int rc =
        ::getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof(text), nullptr, 0, NI_NUMERICHOST);
    Status allowed = rc == 0 ? policy.CheckAddress(host, text)
                             : InternalError("cannot print an address of '" + host + "'");
    if (!allowed.ok()) {
      ::freeaddrinfo(found);
      return allowed;
    }
    addresses.emplace_back(text);
  }
  int last_error = ECONNREFUSED;
  std::size_t index = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next, ++index) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = errno;
      continue;
    }
    int err = 0;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno == EINPROGRESS ? FinishConnect(fd, deadline) : errno;
    }
    ::close(fd);
    if (err == 0) {
      ::freeaddrinfo(found);
      return addresses[index];
    }
    last_error = err;
    if (err == ETIMEDOUT) break;
  }
  ::freeaddrinfo(found);
  if (last_error == ETIMEDOUT) {
    return DeadlineExceededError("no answer from " + HostPort(host, port) + " within " +
                                 std::to_string(timeout.count()) + " ms");
  }
  return UnavailableError("cannot connect to " + HostPort(host, port) + ": " +
                          std::strerror(last_error));
}

Result<std::unique_ptr<FrameSource>> MakeOpenCvFrameSource(std::string_view source,
                                                           const SourceOptions& options) {
  InstallFfmpegAllowLists();  // a no-op when the command did it at its start
  ASSIGN_OR_RETURN(SourceLocation requested, ParseSource(source));
  const SourcePolicy& policy = options.policy ? *options.policy : *DefaultPolicy();
  ASSIGN_OR_RETURN(SourceLocation location, policy.Check(requested));
  if (location.kind == SourceKind::kFile) {
    return std::unique_ptr<FrameSource>(
        std::make_unique<FileFrameSource>(std::move(location), options));
  }
  return std::unique_ptr<FrameSource>(
      std::make_unique<OpenCvFrameSource>(std::move(location), options));
}

}  // namespace kadr::capture
