// Worker announcements on the `kadr.workers` topic (docs/protocol.md): every worker publishes
// one every `interval_ms` and one with state "stopping" when it leaves. Gateways read them to
// know which models have live workers (readiness, 503 when none) and to show per-model
// counters; any language can read or write them. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kadr::protocol {

inline constexpr std::string_view kWorkersTopic = "kadr.workers";

struct WorkerHeartbeat {
  std::string worker_id;            // unique per worker process and model: "<host>-<pid>-<model>"
  std::string model;                // registry name; frames come from FramesTopic(model)
  std::int64_t ts_ms = 0;           // Unix ms when sent
  std::int64_t interval_ms = 2000;  // the next one comes within this; dead after 3 missed
  std::string state = "running";    // "running" or "stopping" (the last one a worker sends)
  // What the worker knows of its model, so a gateway needs no model files.
  std::string family;           // "yolox", "yolov8", "people-hog", ...
  std::string task = "detect";  // "detect" or "segment"
  int input_width = 0;
  int input_height = 0;
  std::vector<std::string> labels;
  // Cumulative since the worker started.
  std::uint64_t frames = 0;
  std::uint64_t processed = 0;
  std::uint64_t skipped = 0;
  std::uint64_t failed = 0;
  std::int64_t in_flight = 0;  // frames taken and not yet acknowledged
};

std::string WorkerHeartbeatToJson(const WorkerHeartbeat& hb);
// kInvalidArgument for malformed JSON, another schema_version, missing worker_id/model.
Result<WorkerHeartbeat> WorkerHeartbeatFromJson(std::string_view json);

// True when `hb` is "running" and its next heartbeat is not more than 3 intervals late.
bool IsAlive(const WorkerHeartbeat& hb, std::int64_t now_ms);

}  // namespace kadr::protocol
