#include <algorithm>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "protocol/frame.h"
#include "protocol/json_fields.h"

namespace kadr::protocol {

using nlohmann::json;

namespace {

// An int field of the announcement: out of int's range is out of every range checked later.
int Clamp32(std::int64_t v) {
  return static_cast<int>(std::clamp<std::int64_t>(v, INT32_MIN, INT32_MAX));
}

}  // namespace

std::string WorkerHeartbeatToJson(const WorkerHeartbeat& hb) {
  json j = {{"schema_version", kProtocolVersion},
            {"worker_id", hb.worker_id},
            {"model", hb.model},
            {"ts_ms", hb.ts_ms},
            {"interval_ms", hb.interval_ms},
            {"state", hb.state},
            {"model_info",
             {{"family", hb.family},
              {"task", hb.task},
              {"input", {{"width", hb.input_width}, {"height", hb.input_height}}},
              {"labels", hb.labels}}},
            {"stats",
             {{"frames", hb.frames},
              {"processed", hb.processed},
              {"skipped", hb.skipped},
              {"failed", hb.failed},
              {"in_flight", hb.in_flight},
              {"lost", hb.lost}}}};
  if (!hb.losses.empty()) {
    json losses = json::array();
    for (const auto& l : hb.losses) {
      losses.push_back(
          {{"topic", l.topic}, {"partition", l.partition}, {"from", l.from}, {"to", l.to}});
    }
    j["losses"] = std::move(losses);
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<WorkerHeartbeat> WorkerHeartbeatFromJson(std::string_view text) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError("worker heartbeat is not a JSON object");
  }
  WorkerHeartbeat hb;
  try {
    const std::int64_t version = IntegerField(j, "schema_version");
    if (version != kProtocolVersion) {
      return InvalidArgumentError("worker heartbeat has unsupported schema_version " +
                                  std::to_string(version));
    }
    hb.worker_id = j.at("worker_id").get<std::string>();
    hb.model = j.at("model").get<std::string>();
    hb.ts_ms = IntegerField(j, "ts_ms");
    hb.interval_ms = IntegerFieldOr(j, "interval_ms", hb.interval_ms);
    hb.state = j.value("state", hb.state);
    if (const auto it = j.find("model_info"); it != j.end() && it->is_object()) {
      hb.family = it->value("family", "");
      hb.task = it->value("task", hb.task);
      if (const auto in = it->find("input"); in != it->end() && in->is_object()) {
        hb.input_width = Clamp32(IntegerFieldOr(*in, "width", 0));
        hb.input_height = Clamp32(IntegerFieldOr(*in, "height", 0));
      }
      if (const auto labels = it->find("labels"); labels != it->end()) {
        hb.labels = labels->get<std::vector<std::string>>();
      }
    }
    if (const auto it = j.find("stats"); it != j.end() && it->is_object()) {
      const auto count = [&](const char* key) -> std::uint64_t {
        const std::int64_t n = IntegerFieldOr(*it, key, 0);
        if (n < 0) throw json::out_of_range::create(406, std::string(key) + " is negative", &*it);
        return static_cast<std::uint64_t>(n);
      };
      hb.frames = count("frames");
      hb.processed = count("processed");
      hb.skipped = count("skipped");
      hb.failed = count("failed");
      hb.in_flight = IntegerFieldOr(*it, "in_flight", 0);
      hb.lost = count("lost");
    }
    if (const auto it = j.find("losses"); it != j.end() && it->is_array()) {
      for (const auto& l : *it) {
        if (hb.losses.size() >= kMaxLossesPerHeartbeat) break;
        bus::Loss loss;
        loss.topic = l.at("topic").get<std::string>();
        const std::int64_t partition = IntegerField(l, "partition");
        if (partition < 0 || partition > INT32_MAX) {
          return InvalidArgumentError("worker heartbeat has a malformed loss range");
        }
        loss.partition = static_cast<int>(partition);
        loss.from = IntegerField(l, "from");
        loss.to = IntegerFieldOr(l, "to", -1);
        if (loss.topic.empty() || loss.topic.size() > 249 || loss.partition < 0 || loss.from < 0 ||
            loss.to < -1 || (loss.to >= 0 && loss.to < loss.from)) {
          return InvalidArgumentError("worker heartbeat has a malformed loss range");
        }
        hb.losses.push_back(std::move(loss));
      }
    }
  } catch (const json::exception& e) {
    return InvalidArgumentError(std::string("malformed worker heartbeat: ") + e.what());
  }
  if (hb.worker_id.empty() || hb.model.empty()) {
    return InvalidArgumentError("worker heartbeat without worker_id or model");
  }
  // Everything a reader computes with is range-checked (announcements come from anyone who
  // can write to kadr.workers): no overflow in IsAlive, no huge label lists kept per worker.
  if (hb.worker_id.size() > kMaxHeartbeatText || hb.model.size() > kMaxHeartbeatText ||
      hb.family.size() > kMaxHeartbeatText || hb.task.size() > kMaxHeartbeatText) {
    return InvalidArgumentError("worker heartbeat has a name longer than " +
                                std::to_string(kMaxHeartbeatText) + " characters");
  }
  if (hb.ts_ms <= 0 || hb.ts_ms > kMaxHeartbeatTsMs) {
    return InvalidArgumentError("worker heartbeat ts_ms is out of range");
  }
  if (hb.interval_ms <= 0 || hb.interval_ms > kMaxHeartbeatIntervalMs) {
    return InvalidArgumentError("worker heartbeat interval_ms must be in 1.." +
                                std::to_string(kMaxHeartbeatIntervalMs));
  }
  if (hb.input_width < 0 || hb.input_height < 0 || hb.input_width > 65536 ||
      hb.input_height > 65536) {
    return InvalidArgumentError("worker heartbeat model input size is out of range");
  }
  if (hb.labels.size() > kMaxHeartbeatLabels) {
    return InvalidArgumentError("worker heartbeat has more than " +
                                std::to_string(kMaxHeartbeatLabels) + " labels");
  }
  for (const auto& label : hb.labels) {
    if (label.size() > kMaxHeartbeatText) {
      return InvalidArgumentError("worker heartbeat has a label longer than " +
                                  std::to_string(kMaxHeartbeatText) + " characters");
    }
  }
  if (hb.in_flight < 0 || hb.in_flight > kMaxHeartbeatCount) {
    return InvalidArgumentError("worker heartbeat in_flight is out of range");
  }
  for (const std::uint64_t n : {hb.frames, hb.processed, hb.skipped, hb.failed, hb.lost}) {
    if (n > static_cast<std::uint64_t>(kMaxHeartbeatCount)) {
      return InvalidArgumentError("worker heartbeat counter is out of range");
    }
  }
  if (hb.state != "running" && hb.state != "stopping") {
    return InvalidArgumentError("worker heartbeat has unknown state '" + hb.state + "'");
  }
  return hb;
}

bool IsAlive(const WorkerHeartbeat& hb, std::int64_t now_ms) {
  return hb.state == "running" && now_ms - hb.ts_ms <= 3 * hb.interval_ms;
}

}  // namespace kadr::protocol
