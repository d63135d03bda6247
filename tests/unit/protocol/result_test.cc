#include "protocol/result.h"

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protocol/frame.h"

namespace kadr::protocol {
namespace {

using nlohmann::json;

DetectionResult SampleResult(bool with_mask) {
  DetectionResult r;
  r.model = "yolox-s";
  r.image_width = 640;
  r.image_height = 480;
  Detection person;
  person.class_id = 0;
  person.label = "person";
  person.score = 0.87f;
  person.box = {10.5f, 20.25f, 100.f, 200.f};
  if (with_mask) person.mask = Mask{10, 20, 4, 3, {0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0}};
  Detection dog;
  dog.class_id = 16;
  dog.label = "dog";
  dog.score = 0.31f;
  dog.box = {300.f, 310.f, 40.f, 30.f};
  r.detections = {person, dog};
  r.timings_ms = {{"decode", 1.5}, {"inference", 18.25}};
  return r;
}

void ExpectSameResult(const DetectionResult& a, const DetectionResult& b) {
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.image_width, b.image_width);
  EXPECT_EQ(a.image_height, b.image_height);
  EXPECT_EQ(a.timings_ms, b.timings_ms);
  ASSERT_EQ(a.detections.size(), b.detections.size());
  for (std::size_t i = 0; i < a.detections.size(); ++i) {
    const Detection& x = a.detections[i];
    const Detection& y = b.detections[i];
    EXPECT_EQ(x.class_id, y.class_id) << i;
    EXPECT_EQ(x.label, y.label) << i;
    EXPECT_EQ(x.score, y.score) << i;
    EXPECT_EQ(x.box, y.box) << i;
    EXPECT_EQ(x.mask, y.mask) << i;
    EXPECT_EQ(x.track_id, y.track_id) << i;
  }
}

std::set<std::string> Keys(const json& object) {
  std::set<std::string> keys;
  for (const auto& [key, value] : object.items()) keys.insert(key);
  return keys;
}

TEST(ResultJsonTest, RoundTripsWithoutMasks) {
  const DetectionResult r = SampleResult(/*with_mask=*/false);
  auto decoded = ResultFromJson(ToJson(r));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  ExpectSameResult(*decoded, r);
}

TEST(ResultJsonTest, RoundTripsWithMasks) {
  const DetectionResult r = SampleResult(/*with_mask=*/true);
  auto decoded = ResultFromJson(ToJson(r));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  ExpectSameResult(*decoded, r);
  ASSERT_TRUE(decoded->detections[0].mask.has_value());
  EXPECT_FALSE(decoded->detections[1].mask.has_value());
}

TEST(ResultJsonTest, RoundTripsPrettyPrintedJson) {
  const DetectionResult r = SampleResult(/*with_mask=*/true);
  const std::string pretty = ToJson(r, 2);
  EXPECT_NE(pretty.find('\n'), std::string::npos);
  EXPECT_EQ(ToJson(r).find('\n'), std::string::npos);
  auto decoded = ResultFromJson(pretty);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  ExpectSameResult(*decoded, r);
}

TEST(ResultJsonTest, RoundTripsAnEmptyResult) {
  DetectionResult r;
  r.model = "m";
  auto decoded = ResultFromJson(ToJson(r));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  ExpectSameResult(*decoded, r);
}

TEST(ResultJsonTest, EncodesInvalidUtf8LabelsWithoutFailing) {
  DetectionResult r = SampleResult(false);
  r.detections[0].label = "bad\xff";
  const std::string text = ToJson(r);
  EXPECT_TRUE(json::accept(text));
}

// The JSON layout is a public contract (docs/protocol.md): renaming a field breaks consumers.
TEST(ResultJsonTest, UsesTheDocumentedFieldNames) {
  const json j = json::parse(ToJson(SampleResult(/*with_mask=*/true)));
  EXPECT_EQ(Keys(j), (std::set<std::string>{"schema_version", "model", "image", "detections",
                                            "timings_ms"}));
  EXPECT_EQ(j["schema_version"], kResultSchemaVersion);
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["model"], "yolox-s");
  EXPECT_EQ(Keys(j["image"]), (std::set<std::string>{"width", "height"}));
  EXPECT_EQ(j["image"]["width"], 640);
  EXPECT_EQ(j["image"]["height"], 480);
  EXPECT_EQ(j["timings_ms"]["inference"], 18.25);

  ASSERT_TRUE(j["detections"].is_array());
  ASSERT_EQ(j["detections"].size(), 2u);
  const json& with_mask = j["detections"][0];
  EXPECT_EQ(Keys(with_mask), (std::set<std::string>{"class_id", "label", "score", "box", "mask"}));
  EXPECT_EQ(with_mask["class_id"], 0);
  EXPECT_EQ(with_mask["label"], "person");
  EXPECT_NEAR(with_mask["score"].get<double>(), 0.87, 1e-6);
  EXPECT_EQ(Keys(with_mask["box"]), (std::set<std::string>{"x", "y", "width", "height"}));
  EXPECT_EQ(with_mask["box"]["x"], 10.5);
  EXPECT_EQ(with_mask["box"]["y"], 20.25);
  EXPECT_EQ(with_mask["box"]["width"], 100.0);
  EXPECT_EQ(with_mask["box"]["height"], 200.0);
  EXPECT_EQ(Keys(with_mask["mask"]), (std::set<std::string>{"x", "y", "width", "height", "rle"}));
  EXPECT_EQ(with_mask["mask"]["x"], 10);
  EXPECT_EQ(with_mask["mask"]["y"], 20);
  EXPECT_EQ(with_mask["mask"]["width"], 4);
  EXPECT_EQ(with_mask["mask"]["height"], 3);
  EXPECT_EQ(with_mask["mask"]["rle"], (std::vector<std::int64_t>{1, 2, 1, 4, 2, 1, 1}));

  // A detection without a mask has no "mask" key at all (not null).
  EXPECT_EQ(Keys(j["detections"][1]), (std::set<std::string>{"class_id", "label", "score", "box"}));
}

TEST(ResultJsonTest, RoundTripsTrackIds) {
  DetectionResult r = SampleResult(/*with_mask=*/true);
  r.detections[0].track_id = 1;
  r.detections[1].track_id = 9'000'000'000;  // beyond 32 bits
  const json j = json::parse(ToJson(r));
  EXPECT_EQ(j["detections"][0]["track_id"], 1);
  EXPECT_EQ(j["detections"][1]["track_id"], 9'000'000'000);
  auto decoded = ResultFromJson(j.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  ExpectSameResult(*decoded, r);
}

TEST(ResultJsonTest, UntrackedDetectionsHaveNoTrackId) {
  json j = json::parse(ToJson(SampleResult(/*with_mask=*/false)));
  EXPECT_FALSE(j["detections"][0].contains("track_id"));
  j["detections"][0]["track_id"] = nullptr;  // null reads as absent
  auto decoded = ResultFromJson(j.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_FALSE(decoded->detections[0].track_id.has_value());
}

TEST(ResultJsonTest, RejectsTrackIdsThatAreNotPositiveIntegers) {
  for (const json& bad : {json(0), json(-3), json(1.5), json("7"), json(true)}) {
    json j = json::parse(ToJson(SampleResult(/*with_mask=*/false)));
    j["detections"][1]["track_id"] = bad;
    auto decoded = ResultFromJson(j.dump());
    ASSERT_FALSE(decoded.has_value()) << bad.dump();
    EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument) << bad.dump();
    EXPECT_NE(decoded.error().message().find("track_id"), std::string::npos)
        << decoded.error().message();
  }
}

TEST(ResultJsonTest, AcceptsAMissingTimingsObject) {
  auto decoded = ResultFromJson(
      R"({"schema_version":1,"model":"m","image":{"width":2,"height":3},"detections":[]})");
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_TRUE(decoded->timings_ms.empty());
  EXPECT_EQ(decoded->image_width, 2);
  EXPECT_EQ(decoded->image_height, 3);
}

TEST(ResultJsonTest, RejectsMalformedJson) {
  for (const char* text : {"", "{", "not json", "[]", "42", "null", R"("a string")",
                           R"({"schema_version":1,"model":"m")"}) {
    auto decoded = ResultFromJson(text);
    ASSERT_FALSE(decoded.has_value()) << text;
    EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ResultJsonTest, RejectsMissingOrMistypedFields) {
  const char* cases[] = {
      R"({"schema_version":1})",
      R"({"schema_version":1,"image":{"width":2,"height":3},"detections":[]})",
      R"({"schema_version":1,"model":5,"image":{"width":2,"height":3},"detections":[]})",
      R"({"schema_version":1,"model":"m","image":{"width":2},"detections":[]})",
      R"({"schema_version":1,"model":"m","image":{"width":2,"height":3}})",
      R"({"schema_version":1,"model":"m","image":{"width":2,"height":3},"detections":[{}]})",
      R"({"schema_version":1,"model":"m","image":{"width":2,"height":3},"detections":[)"
      R"({"class_id":0,"label":"a","score":0.5,"box":{"x":0,"y":0,"width":1}}]})",
      R"({"schema_version":1,"model":"m","image":{"width":2,"height":3},"detections":[)"
      R"({"class_id":"zero","label":"a","score":0.5,"box":{"x":0,"y":0,"width":1,"height":1}}]})",
      R"({"schema_version":1,"model":"m","image":{"width":2,"height":3},"detections":[],)"
      R"("timings_ms":{"inference":"fast"}})",
      R"({"schema_version":"1","model":"m","image":{"width":2,"height":3},"detections":[]})",
  };
  for (const char* text : cases) {
    auto decoded = ResultFromJson(text);
    ASSERT_FALSE(decoded.has_value()) << text;
    EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ResultJsonTest, NamesTheMissingField) {
  auto decoded =
      ResultFromJson(R"({"schema_version":1,"image":{"width":2,"height":3},"detections":[]})");
  ASSERT_FALSE(decoded.has_value());
  EXPECT_NE(decoded.error().message().find("model"), std::string::npos)
      << decoded.error().message();
}

TEST(ResultJsonTest, RejectsOtherSchemaVersions) {
  json j = json::parse(ToJson(SampleResult(false)));
  for (int version : {0, 2, -1, 100}) {
    j["schema_version"] = version;
    auto decoded = ResultFromJson(j.dump());
    ASSERT_FALSE(decoded.has_value()) << version;
    EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument) << version;
  }
  j.erase("schema_version");
  auto decoded = ResultFromJson(j.dump());
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument);
}

TEST(ResultJsonTest, RejectsMaskRunsThatDoNotAddUp) {
  json j = json::parse(ToJson(SampleResult(/*with_mask=*/true)));
  for (const auto& rle :
       {json::array({1, 2, 1}), json::array({12, 1}), json::array({-1, 13}), json::array()}) {
    j["detections"][0]["mask"]["rle"] = rle;
    auto decoded = ResultFromJson(j.dump());
    ASSERT_FALSE(decoded.has_value()) << rle.dump();
    EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument) << rle.dump();
  }
}

TEST(ResultJsonTest, RejectsMasksWithNegativeSize) {
  json j = json::parse(ToJson(SampleResult(/*with_mask=*/true)));
  j["detections"][0]["mask"]["width"] = -4;
  j["detections"][0]["mask"]["rle"] = json::array({0});
  auto decoded = ResultFromJson(j.dump());
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument);
}

// The mask bomb: a ~150-byte detection may declare a 50 MP mask (two runs), and a result
// may hold many such. The masks of one result together are bounded (4x the image, 100 MP at
// most), so that a small message cannot make a gateway, viewer or camera allocate gigabytes.
TEST(ResultJsonTest, RejectsAResultWhoseMasksTogetherExceedTheBudget) {
  json j = json::parse(ToJson(SampleResult(/*with_mask=*/false)));  // a 640x480 image
  const json big_mask = {
      {"x", 0}, {"y", 0}, {"width", 7000}, {"height", 7000}, {"rle", json::array({0, 49'000'000})}};
  json detection = j["detections"][0];
  detection["mask"] = big_mask;
  j["detections"] = json::array({detection});
  auto one = ResultFromJson(j.dump());
  ASSERT_FALSE(one.has_value()) << "49 MP of mask on a 640x480 image";
  EXPECT_NE(one.error().message().find("masks exceed 1228800 pixels"), std::string::npos)
      << one.error().ToString();

  j["image"] = {{"width", 16384}, {"height", 3000}};  // 49 MP: the absolute bound applies
  j["detections"] = json::array({detection, detection, detection});
  const std::string bomb = j.dump();
  EXPECT_LT(bomb.size(), 1000u) << "a small message";
  auto three = ResultFromJson(bomb);
  ASSERT_FALSE(three.has_value());
  EXPECT_EQ(three.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(three.error().message().find("at most 100000000"), std::string::npos)
      << three.error().ToString();

  j["detections"] = json::array({detection, detection});  // 98 MP: within both bounds
  EXPECT_TRUE(ResultFromJson(j.dump()).has_value());
}

// --- Mask run-length encoding -------------------------------------------------------------

Mask MaskOf(std::vector<std::uint8_t> data) {
  return Mask{0, 0, static_cast<int>(data.size()), 1, std::move(data)};
}

void ExpectRoundTrip(const std::vector<std::uint8_t>& data) {
  const auto counts = EncodeMaskRle(MaskOf(data));
  auto decoded = DecodeMaskRle(counts, data.size());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(*decoded, data);
}

TEST(MaskRleTest, EncodesAllZerosAsOneRun) {
  EXPECT_EQ(EncodeMaskRle(MaskOf({0, 0, 0, 0, 0})), (std::vector<std::int64_t>{5}));
  ExpectRoundTrip({0, 0, 0, 0, 0});
}

TEST(MaskRleTest, EncodesAllOnesAfterAnEmptyZeroRun) {
  EXPECT_EQ(EncodeMaskRle(MaskOf({1, 1, 1, 1})), (std::vector<std::int64_t>{0, 4}));
  ExpectRoundTrip({1, 1, 1, 1});
}

TEST(MaskRleTest, StartsWithAZeroLengthRunWhenTheFirstPixelIsSet) {
  EXPECT_EQ(EncodeMaskRle(MaskOf({1, 1, 0, 0, 0, 1})), (std::vector<std::int64_t>{0, 2, 3, 1}));
  ExpectRoundTrip({1, 1, 0, 0, 0, 1});
}

TEST(MaskRleTest, EncodesAlternatingPixelsAsRunsOfOne) {
  EXPECT_EQ(EncodeMaskRle(MaskOf({0, 1, 0, 1, 0, 1})),
            (std::vector<std::int64_t>{1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(EncodeMaskRle(MaskOf({1, 0, 1, 0})), (std::vector<std::int64_t>{0, 1, 1, 1, 1}));
  ExpectRoundTrip({0, 1, 0, 1, 0, 1});
  ExpectRoundTrip({1, 0, 1, 0});
}

TEST(MaskRleTest, EncodesAnEmptyMaskAsOneEmptyRun) {
  EXPECT_EQ(EncodeMaskRle(Mask{}), (std::vector<std::int64_t>{0}));
  auto decoded = DecodeMaskRle({0}, 0);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_TRUE(decoded->empty());
}

TEST(MaskRleTest, TreatsAnyNonZeroByteAsSet) {
  EXPECT_EQ(EncodeMaskRle(MaskOf({0, 255, 7, 0})), (std::vector<std::int64_t>{1, 2, 1}));
}

TEST(MaskRleTest, RoundTripsALargeMask) {
  std::vector<std::uint8_t> data(100 * 80);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = ((i / 7) % 3 == 0) ? 1 : 0;
  ExpectRoundTrip(data);
}

TEST(MaskRleTest, RejectsRunsThatDoNotAddUp) {
  struct Case {
    std::vector<std::int64_t> counts;
    std::size_t total;
  };
  const Case cases[] = {
      {{3}, 4},         // too few
      {{3, 2}, 4},      // too many
      {{0, 5}, 4},      // too many ones
      {{}, 4},          // nothing
      {{-1, 5}, 4},     // negative run
      {{2, -1, 3}, 4},  // negative run in the middle
      {{1}, 0},         // non-empty for an empty mask
  };
  for (const Case& c : cases) {
    auto decoded = DecodeMaskRle(c.counts, c.total);
    ASSERT_FALSE(decoded.has_value()) << ::testing::PrintToString(c.counts) << " total " << c.total;
    EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace kadr::protocol

namespace kadr::protocol {
namespace {

// A result seen on a 40x20 copy of an 80x40 image, put back into the image's pixels.
TEST(ScaleToSizeTest, ScalesBoxesAndResamplesMasksToTheOtherSize) {
  DetectionResult r;
  r.image_width = 40;
  r.image_height = 20;
  Detection d;
  d.box = {4, 2, 10, 6};
  Mask m;
  m.x = 4;
  m.y = 2;
  m.width = 2;
  m.height = 2;
  m.data = {1, 0, 0, 1};  // a diagonal
  d.mask = m;
  r.detections = {d};
  ScaleToSize(r, 80, 40);
  EXPECT_EQ(r.image_width, 80);
  EXPECT_EQ(r.image_height, 40);
  const Detection& out = r.detections[0];
  EXPECT_EQ(out.box, (Box{8, 4, 20, 12}));
  ASSERT_TRUE(out.mask.has_value());
  EXPECT_EQ(out.mask->x, 8);
  EXPECT_EQ(out.mask->y, 4);
  EXPECT_EQ(out.mask->width, 4);
  EXPECT_EQ(out.mask->height, 4);
  // Each source pixel became a 2x2 block.
  EXPECT_EQ(out.mask->data, (std::vector<std::uint8_t>{1, 1, 0, 0,  //
                                                       1, 1, 0, 0,  //
                                                       0, 0, 1, 1,  //
                                                       0, 0, 1, 1}));
  EXPECT_TRUE(out.mask->At(9, 5));
  EXPECT_FALSE(out.mask->At(11, 5));
}

TEST(ScaleToSizeTest, LeavesAResultOfTheSameOrUnknownSizeAlone) {
  DetectionResult r;
  r.image_width = 40;
  r.image_height = 20;
  Detection d;
  d.box = {4, 2, 10, 6};
  r.detections = {d};
  ScaleToSize(r, 40, 20);
  EXPECT_EQ(r.detections[0].box, (Box{4, 2, 10, 6}));
  DetectionResult unknown;
  unknown.detections = {d};
  ScaleToSize(unknown, 80, 40);
  EXPECT_EQ(unknown.detections[0].box, (Box{4, 2, 10, 6}));
  EXPECT_EQ(unknown.image_width, 0);
}

// Found by fuzz/result_json_fuzzer: integers written as huge floats reached nlohmann's
// float-to-int conversion (undefined behaviour), and a 2^31 x 2^31 image overflowed the mask
// budget. Each is refused or bounded now, deterministically.
TEST(ResultFuzzRegressionTest, FloatIntegersAreRefusedAndHugeImagesDoNotOverflow) {
  const auto refused = [](auto result) {
    return !result && result.error().code() == StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused(ResultFromJson(
      R"({"schema_version":1e300,"model":"m","image":{"width":1,"height":1},"detections":[]})")));
  EXPECT_TRUE(refused(FrameResultFromJson(
      R"({"schema_version":1,"frame":{"id":"f1","sequence":1e300},"status":"ok","model":"m",)"
      R"("image":{"width":1,"height":1},"detections":[]})")));
  EXPECT_TRUE(refused(WorkerHeartbeatFromJson(
      R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":1e300})")));
  EXPECT_TRUE(refused(WorkerHeartbeatFromJson(
      R"({"schema_version":-1e300,"worker_id":"w","model":"m","ts_ms":1})")));
  EXPECT_TRUE(refused(WorkerHeartbeatFromJson(
      R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":1,"losses":)"
      R"([{"topic":"t","partition":4294967296,"from":0}]})")));
  // A score or box beyond a float's range would be written back as null: refused.
  EXPECT_TRUE(refused(ResultFromJson(
      R"({"schema_version":1,"model":"m","image":{"width":1,"height":1},"detections":[)"
      R"({"class_id":0,"label":"x","score":1e300,"box":{"x":0,"y":0,"width":1,"height":1}}]})")));
  // A mask run written as a float beyond int64 (found later, 2026-12-07), and one that is
  // not a number.
  for (const char* rle :
       {"[2,3,455555555555555555555555555,3]", "[2,3,7.0,0]", "[2,\"3\"]", "{\"a\":12}"}) {
    const std::string text =
        std::string(R"({"schema_version":1,"model":"m","image":{"width":9,"height":6},)"
                    R"("detections":[{"class_id":0,"label":"x","score":0.5,)"
                    R"("box":{"x":1,"y":1,"width":4,"height":3},)"
                    R"("mask":{"x":1,"y":1,"width":4,"height":3,"rle":)") +
        rle + "}}]}";
    EXPECT_TRUE(refused(ResultFromJson(text))) << rle;
  }
  auto masked = ResultFromJson(
      R"({"schema_version":1,"model":"m","image":{"width":9,"height":6},"detections":[)"
      R"({"class_id":0,"label":"x","score":0.5,"box":{"x":1,"y":1,"width":4,"height":3},)"
      R"("mask":{"x":1,"y":1,"width":4,"height":3,"rle":[2,3,7]}}]})");
  ASSERT_TRUE(masked) << masked.error().ToString();
  EXPECT_EQ(masked->detections.at(0).mask->data,
            (std::vector<std::uint8_t>{0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0}));
  auto huge = ResultFromJson(
      R"({"schema_version":1,"model":"m","image":{"width":2147483647,"height":2147483647},)"
      R"("detections":[{"class_id":0,"label":"x","score":0.5,)"
      R"("box":{"x":0,"y":0,"width":1,"height":1}}]})");
  ASSERT_TRUE(huge) << huge.error().ToString();
  EXPECT_EQ(huge->image_width, 2147483647);
}

}  // namespace
}  // namespace kadr::protocol
