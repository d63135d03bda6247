#include "protocol/result.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include <nlohmann/json.hpp>

#include "protocol/json_fields.h"

namespace kadr::protocol {
namespace {

using nlohmann::json;

// Largest mask accepted from JSON, pixels: the decoder's own image limit.
constexpr std::int64_t kMaxMaskPixels = 50'000'000;
// All masks of one result together, pixels (= bytes once decoded): at most four times the
// image (boxes overlap, each mask covers its box), and never more than this, so that a small
// message cannot make its reader allocate gigabytes.
constexpr std::int64_t kMaxResultMaskPixels = 100'000'000;
constexpr std::int64_t kMaskAreaFactor = 4;

// Integer fields must be JSON integers: a float like 1e30 would be UB to convert.
int IntField(const json& j, const char* key) {
  const json& v = j.at(key);
  const std::int64_t x = JsonInteger(v, key);
  if (x < INT32_MIN || x > INT32_MAX)
    throw json::out_of_range::create(406, std::string(key) + " is out of range", &v);
  return static_cast<int>(x);
}

// A float field: a number that stays finite as a float. 1e300 would become inf, which JSON
// cannot carry: the result would be written as null and could not be read back (a stored
// result that no longer parses).
float FloatField(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_number())
    throw json::type_error::create(302, std::string(key) + " must be a number", &v);
  const double d = v.get<double>();
  if (!std::isfinite(d) || std::abs(d) > std::numeric_limits<float>::max()) {
    throw json::out_of_range::create(406, std::string(key) + " is out of range", &v);
  }
  return static_cast<float>(d);
}

json BoxJson(const Box& b) {
  return {{"x", b.x}, {"y", b.y}, {"width", b.width}, {"height", b.height}};
}

json DetectionJson(const Detection& d) {
  json j = {
      {"class_id", d.class_id}, {"label", d.label}, {"score", d.score}, {"box", BoxJson(d.box)}};
  if (d.track_id) j["track_id"] = *d.track_id;
  if (d.mask) {
    const Mask& m = *d.mask;
    j["mask"] = {{"x", m.x},
                 {"y", m.y},
                 {"width", m.width},
                 {"height", m.height},
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
  // Check the runs before allocating: the sizes come from untrusted JSON.
  std::size_t sum = 0;
  for (std::int64_t run : counts) {
    if (run < 0 || static_cast<std::size_t>(run) > total - sum) {
      return InvalidArgumentError("mask rle runs do not add up to width*height");
    }
    sum += static_cast<std::size_t>(run);
  }
  if (sum != total) return InvalidArgumentError("mask rle runs do not add up to width*height");
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
  if (data.size() != total)
    return InvalidArgumentError("mask rle runs do not add up to width*height");
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
  if (j.is_discarded() || !j.is_object())
    return InvalidArgumentError("result is not a JSON object");
  try {
    if (IntegerFieldOr(j, "schema_version", 0) != kResultSchemaVersion) {
      return InvalidArgumentError("unsupported result schema_version");
    }
    DetectionResult r;
    r.model = j.at("model").get<std::string>();
    r.image_width = IntField(j.at("image"), "width");
    r.image_height = IntField(j.at("image"), "height");
    if (r.image_width < 0 || r.image_height < 0) {
      return InvalidArgumentError("result image has a negative size");
    }
    const std::int64_t image_area = static_cast<std::int64_t>(r.image_width) * r.image_height;
    // An image of unknown size (0x0) has only the absolute bound.
    // (image_area is below 2^62; the factor applies only where it cannot overflow.)
    const std::int64_t mask_budget =
        image_area > 0 && image_area <= kMaxResultMaskPixels / kMaskAreaFactor
            ? kMaskAreaFactor * image_area
            : kMaxResultMaskPixels;
    std::int64_t mask_pixels = 0;
    if (j.contains("timings_ms"))
      r.timings_ms = j["timings_ms"].get<std::map<std::string, double>>();
    for (const auto& jd : j.at("detections")) {
      Detection d;
      d.class_id = IntField(jd, "class_id");
      d.label = jd.at("label").get<std::string>();
      d.score = FloatField(jd, "score");
      const auto& b = jd.at("box");
      d.box = {FloatField(b, "x"), FloatField(b, "y"), FloatField(b, "width"),
               FloatField(b, "height")};
      if (jd.contains("track_id") && !jd["track_id"].is_null()) {
        const json& t = jd["track_id"];
        if (!t.is_number_integer() || JsonInteger(t, "track_id") < 1) {
          return InvalidArgumentError("detection track_id must be an integer >= 1");
        }
        d.track_id = t.get<std::int64_t>();
      }
      if (jd.contains("mask")) {
        const auto& jm = jd["mask"];
        Mask m;
        m.x = IntField(jm, "x");
        m.y = IntField(jm, "y");
        m.width = IntField(jm, "width");
        m.height = IntField(jm, "height");
        if (m.width < 0 || m.height < 0) return InvalidArgumentError("mask has a negative size");
        const std::int64_t pixels = static_cast<std::int64_t>(m.width) * m.height;
        if (pixels > kMaxMaskPixels) {
          return InvalidArgumentError("mask is larger than " + std::to_string(kMaxMaskPixels) +
                                      " pixels");
        }
        mask_pixels += pixels;
        if (mask_pixels > mask_budget) {
          return InvalidArgumentError("the result's masks exceed " + std::to_string(mask_budget) +
                                      " pixels in all (4x its " + std::to_string(r.image_width) +
                                      "x" + std::to_string(r.image_height) + " image, at most " +
                                      std::to_string(kMaxResultMaskPixels) + ")");
        }
        // Each run through JsonInteger: a run written as 4.5e26 would be UB to convert (found
        // by the result_json fuzzer).
        const json& rle = jm.at("rle");
        if (!rle.is_array()) return InvalidArgumentError("mask rle must be an array of integers");
        std::vector<std::int64_t> runs;
        runs.reserve(rle.size());
        for (const json& run : rle) runs.push_back(JsonInteger(run, "mask rle run"));
        ASSIGN_OR_RETURN(m.data, DecodeMaskRle(runs, static_cast<std::size_t>(m.width) * m.height));
        d.mask = std::move(m);
      }
      r.detections.push_back(std::move(d));
    }
    return r;
  } catch (const json::exception& e) {
    return InvalidArgumentError(std::string("malformed result JSON: ") + e.what());
  }
}

void ScaleToSize(DetectionResult& result, int width, int height) {
  if (result.image_width <= 0 || result.image_height <= 0 || width <= 0 || height <= 0 ||
      (result.image_width == width && result.image_height == height)) {
    return;
  }
  const double sx = static_cast<double>(width) / result.image_width;
  const double sy = static_cast<double>(height) / result.image_height;
  for (Detection& d : result.detections) {
    d.box.x = static_cast<float>(d.box.x * sx);
    d.box.y = static_cast<float>(d.box.y * sy);
    d.box.width = static_cast<float>(d.box.width * sx);
    d.box.height = static_cast<float>(d.box.height * sy);
    if (!d.mask || d.mask->width <= 0 || d.mask->height <= 0) continue;
    const Mask& from = *d.mask;
    Mask to;
    to.x = static_cast<int>(std::floor(from.x * sx));
    to.y = static_cast<int>(std::floor(from.y * sy));
    const int right = std::min(width, static_cast<int>(std::ceil((from.x + from.width) * sx)));
    const int bottom = std::min(height, static_cast<int>(std::ceil((from.y + from.height) * sy)));
    to.width = std::max(1, right - to.x);
    to.height = std::max(1, bottom - to.y);
    to.data.resize(static_cast<std::size_t>(to.width) * static_cast<std::size_t>(to.height));
    for (int y = 0; y < to.height; ++y) {
      const int src_y =
          std::clamp(static_cast<int>((to.y + y + 0.5) / sy) - from.y, 0, from.height - 1);
      for (int x = 0; x < to.width; ++x) {
        const int src_x =
            std::clamp(static_cast<int>((to.x + x + 0.5) / sx) - from.x, 0, from.width - 1);
        to.data[static_cast<std::size_t>(y) * to.width + x] =
            from.data[static_cast<std::size_t>(src_y) * from.width + src_x];
      }
    }
    d.mask = std::move(to);
  }
  result.image_width = width;
  result.image_height = height;
}

}  // namespace kadr::protocol
