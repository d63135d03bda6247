#include "protocol/result.h"

#include <nlohmann/json.hpp>

namespace kadr::protocol {
namespace {

using nlohmann::json;

json BoxJson(const Box& b) {
  return {{"x", b.x}, {"y", b.y}, {"width", b.width}, {"height", b.height}};
}

json DetectionJson(const Detection& d) {
  json j = {{"class_id", d.class_id}, {"label", d.label}, {"score", d.score}, {"box", BoxJson(d.box)}};
  if (d.mask) {
    const Mask& m = *d.mask;
    j["mask"] = {{"x", m.x}, {"y", m.y}, {"width", m.width}, {"height", m.height},
                 {"rle", EncodeMaskRle(m)}};
  }
  return j;
}

}  // namespace

std::vector<std::int64_t> EncodeMaskRle(const Mask& mask) {
  std::vector<std::int64_t> counts;
  std::uint8_t current = 0;
  std::int64_t run = 0;
  for (std::uint8_t v : mask.data) {
    const std::uint8_t bit = v ? 1 : 0;
    if (bit != current) {
      counts.push_back(run);
      run = 0;
      current = bit;
    }
    ++run;
  }
  counts.push_back(run);
  return counts;
}

Result<std::vector<std::uint8_t>> DecodeMaskRle(const std::vector<std::int64_t>& counts,
                                                std::size_t total) {
  std::vector<std::uint8_t> data;
  data.reserve(total);
  std::uint8_t bit = 0;
  for (std::int64_t run : counts) {
    if (run < 0 || data.size() + static_cast<std::size_t>(run) > total) {
      return InvalidArgumentError("mask rle runs do not add up to width*height");
    }
    data.insert(data.end(), static_cast<std::size_t>(run), bit);
    bit ^= 1;
  }
  if (data.size() != total) return InvalidArgumentError("mask rle runs do not add up to width*height");
  return data;
}

std::string ToJson(const DetectionResult& r, int indent) {
  json dets = json::array();
  for (const auto& d : r.detections) dets.push_back(DetectionJson(d));
  json j = {{"schema_version", kResultSchemaVersion},
            {"model", r.model},
            {"image", {{"width", r.image_width}, {"height", r.image_height}}},
            {"detections", std::move(dets)},
            {"timings_ms", r.timings_ms}};
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

Result<DetectionResult> ResultFromJson(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError("result is not a JSON object");
  try {
    if (j.value("schema_version", 0) != kResultSchemaVersion) {
      return InvalidArgumentError("unsupported result schema_version");
    }
    DetectionResult r;
    r.model = j.at("model").get<std::string>();
    r.image_width = j.at("image").at("width").get<int>();
    r.image_height = j.at("image").at("height").get<int>();
    if (j.contains("timings_ms")) r.timings_ms = j["timings_ms"].get<std::map<std::string, double>>();
    for (const auto& jd : j.at("detections")) {
      Detection d;
      d.class_id = jd.at("class_id").get<int>();
      d.label = jd.at("label").get<std::string>();
      d.score = jd.at("score").get<float>();
      const auto& b = jd.at("box");
      d.box = {b.at("x").get<float>(), b.at("y").get<float>(), b.at("width").get<float>(),
               b.at("height").get<float>()};
      if (jd.contains("mask")) {
        const auto& jm = jd["mask"];
        Mask m;
        m.x = jm.at("x").get<int>();
        m.y = jm.at("y").get<int>();
        m.width = jm.at("width").get<int>();
        m.height = jm.at("height").get<int>();
        if (m.width < 0 || m.height < 0) return InvalidArgumentError("mask has a negative size");
        ASSIGN_OR_RETURN(m.data, DecodeMaskRle(jm.at("rle").get<std::vector<std::int64_t>>(),
                                               static_cast<std::size_t>(m.width) * m.height));
        d.mask = std::move(m);
      }
      r.detections.push_back(std::move(d));
    }
    return r;
  } catch (const json::exception& e) {
    return InvalidArgumentError(std::string("malformed result JSON: ") + e.what());
  }
}

}  // namespace kadr::protocol
