// OpenCvFrameSource: FrameSource over cv::VideoCapture.
//
//   device  CAP_V4L2 on the path, after checking that the path exists
//   rtsp    CAP_FFMPEG with CAP_PROP_OPEN_TIMEOUT_MSEC / CAP_PROP_READ_TIMEOUT_MSEC, so a dead
//           server never blocks for ever. Over TCP: InstallFfmpegAllowLists() keeps
//           rtsp_transport tcp in OPENCV_FFMPEG_CAPTURE_OPTIONS (process-wide: the options
//           cannot be chosen per capture in OpenCV 4.6).
//   http    CAP_FFMPEG with the same timeouts (MJPEG over HTTP, or another stream whose
//           demuxer is on the FFmpeg allow-list); redirects are not followed
//   file    video::VideoFileReader on the resolved path; at its end a looped file is opened
//           again
// Before FFmpeg sees a network URL, the host is resolved and every address checked against the
// SourcePolicy, then a plain TCP connection to host:port is tried within the open timeout, so
// that "connection refused" / "no answer" / "unknown host" are reported as such instead of
// OpenCV's bare "could not open"; an rtsp:// URL is then opened on the address that answered.
// Every source is checked against SourceOptions::policy first (files and devices resolved),
// and the FFmpeg allow-lists are installed (InstallFfmpegAllowLists).
//
// Threading and errors: as FrameSource. OpenCV exceptions are caught and become kInternal.
#pragma once

#include <memory>
#include <string_view>

#include "capture/frame_source.h"
#include "capture/source_policy.h"

namespace kadr::capture {

// A FrameSource for `source` (see ParseSource); nothing is opened yet.
// kInvalidArgument: ParseSource's errors. kPermissionDenied: what options.policy refuses
// (SourcePolicy::Check; the default policy when unset).
Result<std::unique_ptr<FrameSource>> MakeOpenCvFrameSource(std::string_view source,
                                                           const SourceOptions& options);

// Resolves `host`, checks every address it resolves to against `policy` (all of them: FFmpeg
// may pick any when it resolves the name again), then tries a TCP connection to them in turn
// within `timeout` and closes it. Returns the numeric address that answered.
// kPermissionDenied: an address the policy refuses. kUnavailable: unknown host ("cannot
// resolve host 'x': ..."), refused, unreachable. kDeadlineExceeded: no answer within `timeout`.
Result<std::string> ProbeTcp(const std::string& host, int port, std::chrono::milliseconds timeout,
                             const SourcePolicy& policy);

}  // namespace kadr::capture
