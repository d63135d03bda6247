// OpenCvFrameSource: FrameSource over cv::VideoCapture.
//
//   device  CAP_V4L2 on the path, after checking that the path exists
//   rtsp    CAP_FFMPEG with CAP_PROP_OPEN_TIMEOUT_MSEC / CAP_PROP_READ_TIMEOUT_MSEC, so a dead
//           server never blocks for ever. Transport: OpenCV's FFmpeg backend asks for RTSP
//           over TCP by itself unless the process environment sets
//           OPENCV_FFMPEG_CAPTURE_OPTIONS (then those options apply, to every capture: the
//           transport cannot be chosen per capture in OpenCV 4.6).
//   http    CAP_FFMPEG with the same timeouts (MJPEG over HTTP, or any stream FFmpeg reads)
//   file    CAP_FFMPEG; at the end a looped file seeks back to frame 0 (reopens if the seek
//           does not work)
// Before FFmpeg sees a network URL, a plain TCP connection to host:port is tried within the
// open timeout, so that "connection refused" / "no answer" / "unknown host" are reported as
// such instead of OpenCV's bare "could not open".
//
// Threading and errors: as FrameSource. OpenCV exceptions are caught and become kInternal.
#pragma once

#include <memory>
#include <string_view>

#include "capture/frame_source.h"

namespace kadr::capture {

// A FrameSource for `source` (see ParseSource); nothing is opened yet.
// kInvalidArgument: ParseSource's errors.
Result<std::unique_ptr<FrameSource>> MakeOpenCvFrameSource(std::string_view source,
                                                           const SourceOptions& options);

// Tries a TCP connection to host:port within `timeout` and closes it.
// kUnavailable: unknown host ("cannot resolve host 'x': ..."), refused, unreachable.
// kDeadlineExceeded: no answer within `timeout`.
Status ProbeTcp(const std::string& host, int port, std::chrono::milliseconds timeout);

}  // namespace kadr::capture
