// The camera service's wiring, shared by `kadr camera` and `kadr up`: its flags and the
// construction of a CameraService over Kafka (results consumer group kadr.camera.<id>).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "camera/camera_service.h"
#include "common/metrics.h"
#include "kafka/kafka_bus.h"

namespace kadr::cli {

// What a video job may be (gateway: checked on the container's headers before it is queued;
// camera service: the frames it reads, the outputs it keeps). docs/security.md.
struct VideoLimitFlags {
  std::int64_t max_pixels = std::int64_t{4096} * 4096;  // --max-video-pixels
  std::int64_t max_frames = 108000;                     // --max-video-frames
  double max_seconds = 3600;                            // --max-video-seconds
  std::size_t max_dir_mb = 20480;                       // --max-video-dir-mb
};

// Registers the flags above (on up, gateway and camera: once per command).
void AddVideoLimitFlags(CLI::App& sub, VideoLimitFlags& flags);

struct CameraFlags {
  std::string camera_id;           // --camera-id, KADR_CAMERA_ID (default: host-port)
  std::size_t max_streams = 64;    // --max-streams
  int probe_timeout_ms = 5000;     // --probe-timeout-ms
  int open_timeout_ms = 5000;      // --open-timeout-ms
  int stall_timeout_ms = 5000;     // --stall-timeout-ms
  std::size_t max_video_jobs = 2;  // --max-video-jobs
  // Stream sources the operator allows (capture::SourcePolicyOptions); empty: none of the
  // host's files or devices, no loopback / link-local / metadata host.
  std::vector<std::string> source_dirs;     // --source-dir, KADR_SOURCE_DIRS (':')
  std::vector<std::string> source_devices;  // --source-device, KADR_SOURCE_DEVICES (':')
  std::vector<std::string> source_hosts;    // --source-host, KADR_SOURCE_HOSTS (',')
  VideoLimitFlags video_limits;
};

void AddCameraFlags(CLI::App& sub, CameraFlags& flags);

// "kadr.camera.<camera_id>": the results group of one camera service.
std::string CameraGroup(const std::string& camera_id);
// "kadr.camera.video": the group every camera service reads kadr.video.jobs in.
inline constexpr char kVideoJobsGroup[] = "kadr.camera.video";

// The service and the consumers it reads with; destroy the service first.
struct CameraStack {
  std::unique_ptr<kafka::KafkaSubscriber> subscriber;
  std::unique_ptr<kafka::KafkaSubscriber> requests;  // with a video folder
  std::unique_ptr<camera::CameraService> service;
};

// Ensures kadr.live.results / kadr.live.annotated exist (warns when the broker is not ready),
// subscribes group kadr.camera.<camera_id> to kadr.live.results, and creates the service on
// `data_dir` (restoring its streams). With a `video_dir` it also takes video jobs: its reply
// topic kadr.video.replies.<camera_id> is created and read with the results, and group
// kadr.camera.video reads kadr.video.jobs. Its frames take their room on the broker from
// `admission`, shared with the process's other producers. The publisher and metrics must
// outlive the result.
Result<CameraStack> MakeCameraService(const CameraFlags& flags, const std::string& camera_id,
                                      const std::string& data_dir, const std::string& video_dir,
                                      const std::string& default_model,
                                      const kafka::KafkaOptions& kafka_options,
                                      kafka::KafkaPublisher& publisher, MetricsRegistry& metrics,
                                      camera::ModelCheck check, int partitions,
                                      std::shared_ptr<engine::Admission> admission);

}  // namespace kadr::cli
