#include "imaging/encode.h"

#include <exception>
#include <memory>
#include <new>
#include <string>

#include <opencv2/core.hpp>
#include <turbojpeg.h>

namespace kadr::imaging {
namespace {

// One TurboJPEG compressor per thread: creating one costs allocations, and a handle must not be
// shared between threads.
class ThreadCompressor {
 public:
  static tjhandle Get() { return Instance().handle_; }
  // A handle that failed mid-stream may keep stale state; start the next call afresh.
  static void Reset() {
    ThreadCompressor& self = Instance();
    if (self.handle_ != nullptr) tjDestroy(self.handle_);
    self.handle_ = tjInitCompress();
  }

 private:
  ThreadCompressor() : handle_(tjInitCompress()) {}
  ~ThreadCompressor() {
    if (handle_ != nullptr) tjDestroy(handle_);
  }
  static ThreadCompressor& Instance() {
    thread_local ThreadCompressor instance;
    return instance;
  }
  tjhandle handle_;
};

struct TjFree {
  void operator()(unsigned char* p) const { tjFree(p); }
};

}  // namespace

Result<std::vector<std::uint8_t>> EncodeJpeg(const cv::Mat& image, const JpegOptions& options) {
  if (image.empty()) return InvalidArgumentError("empty image");
  if (image.type() != CV_8UC3 && image.type() != CV_8UC1) {
    return InvalidArgumentError("cannot encode a " + cv::typeToString(image.type()) +
                                " image as JPEG; expected CV_8UC3 (BGR) or CV_8UC1 (gray)");
  }
  if (options.quality < 1 || options.quality > 100) {
    return InvalidArgumentError("JPEG quality must be 1..100, got " +
                                std::to_string(options.quality));
  }
  tjhandle tj = ThreadCompressor::Get();
  if (tj == nullptr) return InternalError("cannot create a TurboJPEG compressor");

  const bool gray = image.type() == CV_8UC1;
  const int subsamp = gray ? TJSAMP_GRAY : options.subsample_420 ? TJSAMP_420 : TJSAMP_444;
  // Let TurboJPEG grow its own buffer rather than pre-sizing one with tjBufSize(): the
  // worst-case bound is many times the typical output, and zeroing it would cost more than
  // the one copy below.
  unsigned char* out = nullptr;
  unsigned long out_size = 0;
  const int rc =
      tjCompress2(tj, image.data, image.cols, static_cast<int>(image.step), image.rows,
                  gray ? TJPF_GRAY : TJPF_BGR, &out, &out_size, subsamp, options.quality, 0);
  std::unique_ptr<unsigned char, TjFree> owned(out);
  if (rc != 0) {
    const std::string message = tjGetErrorStr2(tj);
    ThreadCompressor::Reset();
    return InternalError("JPEG encoding failed: " + message);
  }
  try {
    return std::vector<std::uint8_t>(out, out + out_size);
  } catch (const std::bad_alloc&) {
    return InternalError("out of memory encoding JPEG");
  }
}

}  // namespace kadr::imaging
