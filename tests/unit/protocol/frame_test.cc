#include "protocol/frame.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace kadr::protocol {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Topics

TEST(FramesTopicTest, KeepsNamesKafkaAllows) {
  EXPECT_EQ(FramesTopic("yolov8n-seg_320"), "kadr.frames.yolov8n-seg_320");
  EXPECT_EQ(FramesTopic("YOLOX.s"), "kadr.frames.YOLOX.s");
  EXPECT_EQ(WorkerGroup("yolov8n-seg_320"), "kadr.worker.yolov8n-seg_320");
}

TEST(FramesTopicTest, ReplacesCharactersKafkaRejectsWithUnderscore) {
  EXPECT_EQ(FramesTopic("my model/v2"), "kadr.frames.my_model_v2");
  EXPECT_EQ(FramesTopic("a:b@c#d"), "kadr.frames.a_b_c_d");
  EXPECT_EQ(FramesTopic("caf\xc3\xa9"), "kadr.frames.caf__") << "each non-ASCII byte";
  EXPECT_EQ(WorkerGroup("my model/v2"), "kadr.worker.my_model_v2");
}

// ---------------------------------------------------------------------------------------------
// Frame headers

FrameMeta FullMeta() {
  FrameMeta m;
  m.frame_id = "frame-7";
  m.stream_id = "cam1";
  m.sequence = 42;
  m.capture_ms = 1'700'000'000'123;
  m.deadline_ms = 1'700'000'000'623;
  m.model = "yolox-s";
  m.reply_to = "replies.gateway-3";
  m.annotated_to = "replies.gateway-3";
  m.source = "bus.jpg";
  m.correlation_id = "req-9";
  m.options.confidence = 0.35f;
  m.options.iou = 0.6f;
  m.options.classes = {0, 2, 16};
  m.draw = false;
  m.kind = "live";
  return m;
}

Result<FrameMeta> RoundTrip(const FrameMeta& m) {
  bus::Headers h;
  EncodeFrameHeaders(m, h);
  return DecodeFrameHeaders(h);
}

TEST(FrameHeadersTest, RoundTripsEveryField) {
  const FrameMeta in = FullMeta();
  auto out = RoundTrip(in);
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(out->frame_id, in.frame_id);
  EXPECT_EQ(out->stream_id, in.stream_id);
  EXPECT_EQ(out->sequence, in.sequence);
  EXPECT_EQ(out->capture_ms, in.capture_ms);
  EXPECT_EQ(out->deadline_ms, in.deadline_ms);
  EXPECT_EQ(out->model, in.model);
  EXPECT_EQ(out->reply_to, in.reply_to);
  EXPECT_EQ(out->annotated_to, in.annotated_to);
  EXPECT_EQ(out->source, in.source);
  EXPECT_EQ(out->correlation_id, in.correlation_id);
  ASSERT_TRUE(out->options.confidence.has_value());
  EXPECT_FLOAT_EQ(*out->options.confidence, 0.35f);
  ASSERT_TRUE(out->options.iou.has_value());
  EXPECT_FLOAT_EQ(*out->options.iou, 0.6f);
  EXPECT_EQ(out->options.classes, (std::vector<int>{0, 2, 16}));
  EXPECT_FALSE(out->draw);
  EXPECT_EQ(out->kind, "live");
}

TEST(FrameHeadersTest, RoundTripsThresholdBounds) {
  FrameMeta in = FullMeta();
  in.options.confidence = 0.f;
  in.options.iou = 1.f;
  auto out = RoundTrip(in);
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(out->options.confidence, 0.f);
  EXPECT_EQ(out->options.iou, 1.f);
}

TEST(FrameHeadersTest, EncodesTheDocumentedHeaderNames) {
  bus::Headers h;
  EncodeFrameHeaders(FullMeta(), h);
  EXPECT_EQ(h.Get("kadr-schema"), "1");
  EXPECT_EQ(h.Get("kadr-frame-id"), "frame-7");
  EXPECT_EQ(h.Get("kadr-stream-id"), "cam1");
  EXPECT_EQ(h.Get("kadr-seq"), "42");
  EXPECT_EQ(h.Get("kadr-capture-ms"), "1700000000123");
  EXPECT_EQ(h.Get("kadr-deadline-ms"), "1700000000623");
  EXPECT_EQ(h.Get("kadr-model"), "yolox-s");
  EXPECT_EQ(h.Get("kadr-reply-to"), "replies.gateway-3");
  EXPECT_EQ(h.Get("kadr-correlation-id"), "req-9");
  EXPECT_EQ(h.Get("content-type"), "image/jpeg");
  EXPECT_EQ(h.Get("kadr-classes"), "0,2,16");
  EXPECT_EQ(h.Get("kadr-draw"), "0");
  EXPECT_EQ(h.Get("kadr-kind"), "live");
  EXPECT_TRUE(h.Get("kadr-conf").has_value());
  EXPECT_TRUE(h.Get("kadr-iou").has_value());
}

TEST(FrameHeadersTest, MinimalMetaEncodesOnlyWhatIsSet) {
  FrameMeta in;
  in.frame_id = "f1";
  bus::Headers h;
  EncodeFrameHeaders(in, h);
  for (const char* absent :
       {"kadr-stream-id", "kadr-capture-ms", "kadr-deadline-ms", "kadr-model", "kadr-reply-to",
        "kadr-correlation-id", "kadr-conf", "kadr-iou", "kadr-classes", "kadr-draw", "kadr-kind"}) {
    EXPECT_FALSE(h.Get(absent).has_value()) << absent;
  }
}

TEST(FrameHeadersTest, DecodesDefaultsFromOnlyAFrameId) {
  bus::Headers h;
  h.Set("kadr-frame-id", "f1");
  auto m = DecodeFrameHeaders(h);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->frame_id, "f1");
  EXPECT_EQ(m->stream_id, "f1") << "stream id defaults to the frame id";
  EXPECT_EQ(m->reply_to, "kadr.results");
  EXPECT_EQ(m->reply_to, kResultsTopic);
  EXPECT_EQ(m->sequence, 0);
  EXPECT_EQ(m->capture_ms, 0);
  EXPECT_FALSE(m->deadline_ms.has_value());
  EXPECT_EQ(m->model, "");
  EXPECT_EQ(m->correlation_id, "");
  EXPECT_FALSE(m->options.confidence.has_value());
  EXPECT_FALSE(m->options.iou.has_value());
  EXPECT_TRUE(m->options.classes.empty());
  EXPECT_TRUE(m->draw);
  EXPECT_EQ(m->kind, "") << "no kadr-kind: an uploaded image";
}

TEST(FrameHeadersTest, RoundTripsEveryKind) {
  for (const char* kind : {"", "image", "video", "live"}) {
    SCOPED_TRACE(kind);
    FrameMeta in = FullMeta();
    in.kind = kind;
    auto out = RoundTrip(in);
    ASSERT_TRUE(out.has_value()) << out.error().ToString();
    EXPECT_EQ(out->kind, kind);
  }
  EXPECT_TRUE(IsTrackedKind("video"));
  EXPECT_TRUE(IsTrackedKind("live"));
  EXPECT_FALSE(IsTrackedKind("image"));
  EXPECT_FALSE(IsTrackedKind(""));
}

TEST(FrameHeadersTest, EmptyKindHeaderReadsAsAbsent) {
  bus::Headers h;
  h.Set("kadr-frame-id", "f1");
  h.Set("kadr-kind", "");
  auto m = DecodeFrameHeaders(h);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->kind, "");
}

TEST(FrameHeadersTest, EmptyReplyToFallsBackToTheResultsTopic) {
  bus::Headers h;
  h.Set("kadr-frame-id", "f1");
  h.Set("kadr-reply-to", "");
  auto m = DecodeFrameHeaders(h);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->reply_to, "kadr.results");
}

TEST(FrameHeadersTest, AnnotatedToMustBeATopicNameAndDefaultsToEmpty) {
  bus::Headers h;
  h.Set("kadr-frame-id", "f1");
  auto m = DecodeFrameHeaders(h);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->annotated_to, "");
  h.Set("kadr-annotated-to", "bad topic!");
  auto bad = DecodeFrameHeaders(h);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("kadr-annotated-to"), std::string::npos);
}

TEST(FrameHeadersTest, DrawAcceptsZeroAndFalse) {
  for (const auto& [value, draw] : std::vector<std::pair<std::string, bool>>{
           {"0", false}, {"false", false}, {"1", true}, {"true", true}}) {
    bus::Headers h;
    h.Set("kadr-frame-id", "f1");
    h.Set("kadr-draw", value);
    auto m = DecodeFrameHeaders(h);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->draw, draw) << value;
  }
}

TEST(FrameHeadersTest, ClassesSkipEmptyItems) {
  bus::Headers h;
  h.Set("kadr-frame-id", "f1");
  h.Set("kadr-classes", "3,,5,");
  auto m = DecodeFrameHeaders(h);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->options.classes, (std::vector<int>{3, 5}));
}

TEST(FrameHeadersTest, CurrentSchemaVersionIsAccepted) {
  bus::Headers h;
  h.Set("kadr-frame-id", "f1");
  h.Set("kadr-schema", std::to_string(kProtocolVersion));
  EXPECT_TRUE(DecodeFrameHeaders(h).has_value());
}

// A frame with valid headers, then `name` set to `value`: decoding fails with
// kInvalidArgument and the message names `name`.
void ExpectRejected(const std::string& name, const std::string& value) {
  bus::Headers h;
  EncodeFrameHeaders(FullMeta(), h);
  h.Set(name, value);
  auto m = DecodeFrameHeaders(h);
  ASSERT_FALSE(m.has_value()) << name << "=" << value << " was accepted";
  EXPECT_EQ(m.error().code(), StatusCode::kInvalidArgument) << m.error().ToString();
  EXPECT_NE(m.error().message().find(name), std::string::npos)
      << "error does not name the header: " << m.error().ToString();
}

TEST(FrameHeadersTest, MissingFrameIdIsRejectedNamingTheHeader) {
  bus::Headers h;
  h.Set("kadr-stream-id", "cam1");
  auto m = DecodeFrameHeaders(h);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.error().message().find("kadr-frame-id"), std::string::npos) << m.error().message();
  ExpectRejected("kadr-frame-id", "");
}

TEST(FrameHeadersTest, NonNumericNumbersAreRejectedNamingTheHeader) {
  for (const char* bad : {"abc", "12x", "", " 1", "1.5", "99999999999999999999"}) {
    SCOPED_TRACE(bad);
    ExpectRejected("kadr-seq", bad);
    ExpectRejected("kadr-capture-ms", bad);
    ExpectRejected("kadr-deadline-ms", bad);
  }
}

TEST(FrameHeadersTest, ThresholdsOutsideUnitIntervalAreRejectedNamingTheHeader) {
  for (const char* bad : {"1.5", "-0.1", "abc", "0.5x", "nan", "inf", ""}) {
    SCOPED_TRACE(bad);
    ExpectRejected("kadr-conf", bad);
    ExpectRejected("kadr-iou", bad);
  }
}

TEST(FrameHeadersTest, BadClassesAreRejectedNamingTheHeader) {
  for (const char* bad : {"person", "1,x", "-1", "1;2", "2.5", "100001"}) {
    SCOPED_TRACE(bad);
    ExpectRejected("kadr-classes", bad);
  }
}

TEST(FrameHeadersTest, BestEffortMetaKeepsAKnownKindAndDropsAnUnknownOne) {
  bus::Headers h;
  h.Set("kadr-kind", "video");
  h.Set("kadr-seq", "not a number");
  FrameMeta m = BestEffortFrameMeta(h, "job1", "fallback");
  EXPECT_EQ(m.kind, "video");
  EXPECT_EQ(m.stream_id, "job1");
  h.Set("kadr-kind", "bogus");
  EXPECT_EQ(BestEffortFrameMeta(h, "job1", "fallback").kind, "");
}

TEST(FrameHeadersTest, UnknownKindIsRejectedNamingTheHeader) {
  for (const char* bad : {"Live", "stream", " video", "image,video", "1"}) {
    SCOPED_TRACE(bad);
    ExpectRejected("kadr-kind", bad);
  }
}

TEST(FrameHeadersTest, ReportSizeRoundTripsAndIsAbsentByDefault) {
  FrameMeta m;
  m.frame_id = "f";
  bus::Headers h;
  EncodeFrameHeaders(m, h);
  EXPECT_FALSE(h.Get("kadr-report-size").has_value());
  m.report_width = 4000;
  m.report_height = 3000;
  EncodeFrameHeaders(m, h);
  EXPECT_EQ(h.Get("kadr-report-size"), "4000x3000");
  auto back = DecodeFrameHeaders(h);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->report_width, 4000);
  EXPECT_EQ(back->report_height, 3000);
}

TEST(FrameHeadersTest, BadReportSizeIsRejectedNamingTheHeader) {
  for (const char* bad :
       {"", "4000", "x3000", "4000x", "0x10", "10x-1", "70000x10", "16384x16384", "axb"}) {
    SCOPED_TRACE(bad);
    ExpectRejected("kadr-report-size", bad);
  }
}

TEST(FrameHeadersTest, UnsupportedSchemaVersionIsRejectedNamingTheHeader) {
  for (const char* bad : {"2", "0", "v1", ""}) {
    SCOPED_TRACE(bad);
    ExpectRejected("kadr-schema", bad);
  }
}

// ---------------------------------------------------------------------------------------------
// Frame result JSON

DetectionResult SampleDetections() {
  DetectionResult r;
  r.model = "yolox-s";
  r.image_width = 640;
  r.image_height = 480;
  Detection person;
  person.class_id = 0;
  person.label = "person";
  person.score = 0.875f;
  person.box = {10.5f, 20.25f, 100.f, 200.f};
  Detection dog;
  dog.class_id = 16;
  dog.label = "dog";
  dog.score = 0.25f;
  dog.box = {300.f, 310.f, 40.f, 30.f};
  dog.mask = Mask{300, 310, 2, 2, {0, 1, 1, 1}};
  r.detections = {person, dog};
  r.timings_ms = {{"decode", 1.5}, {"inference", 18.25}};
  return r;
}

FrameResult OkResult() {
  FrameResult r;
  r.frame_id = "frame-7";
  r.stream_id = "cam1";
  r.sequence = 42;
  r.correlation_id = "req-9";
  r.capture_ms = 1'700'000'000'123;
  r.status = FrameStatus::kOk;
  r.result = SampleDetections();
  r.annotated_topic = "kadr.annotated";
  return r;
}

void ExpectSameEnvelope(const FrameResult& a, const FrameResult& b) {
  EXPECT_EQ(a.frame_id, b.frame_id);
  EXPECT_EQ(a.stream_id, b.stream_id);
  EXPECT_EQ(a.sequence, b.sequence);
  EXPECT_EQ(a.correlation_id, b.correlation_id);
  EXPECT_EQ(a.capture_ms, b.capture_ms);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.annotated_topic, b.annotated_topic);
  EXPECT_EQ(a.result.model, b.result.model);
  EXPECT_EQ(a.result.image_width, b.result.image_width);
  EXPECT_EQ(a.result.image_height, b.result.image_height);
}

TEST(FrameResultJsonTest, OkResultRoundTripsWithDetections) {
  const FrameResult in = OkResult();
  auto out = FrameResultFromJson(FrameResultToJson(in));
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  ExpectSameEnvelope(*out, in);
  EXPECT_TRUE(out->error.ok());
  ASSERT_EQ(out->result.detections.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const Detection& a = out->result.detections[i];
    const Detection& b = in.result.detections[i];
    EXPECT_EQ(a.class_id, b.class_id);
    EXPECT_EQ(a.label, b.label);
    EXPECT_FLOAT_EQ(a.score, b.score);
    EXPECT_EQ(a.box, b.box);
    EXPECT_EQ(a.mask, b.mask);
  }
  EXPECT_EQ(out->result.timings_ms, in.result.timings_ms);
}

TEST(FrameResultJsonTest, ErrorResultKeepsCodeAndMessage) {
  FrameResult in = OkResult();
  in.status = FrameStatus::kError;
  in.error = InvalidArgumentError("corrupt PNG data: \"quoted\" \xc3\xa9");
  in.result = {};
  in.result.model = "yolox-s";
  in.annotated_topic.clear();
  auto out = FrameResultFromJson(FrameResultToJson(in));
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  ExpectSameEnvelope(*out, in);
  EXPECT_EQ(out->error.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out->error.message(), in.error.message());
  EXPECT_TRUE(out->result.detections.empty());
}

TEST(FrameResultJsonTest, EveryErrorCodeRoundTrips) {
  for (int c = 1; c <= static_cast<int>(StatusCode::kDeadlineExceeded); ++c) {
    const auto code = static_cast<StatusCode>(c);
    FrameResult in = OkResult();
    in.status = FrameStatus::kError;
    in.error = Status(code, "boom");
    auto out = FrameResultFromJson(FrameResultToJson(in));
    ASSERT_TRUE(out.has_value()) << out.error().ToString();
    EXPECT_EQ(out->error, in.error) << StatusCodeName(code);
  }
}

TEST(FrameResultJsonTest, SkippedResultRoundTripsAsDeadlineExceeded) {
  FrameResult in = OkResult();
  in.status = FrameStatus::kSkipped;
  in.error = DeadlineExceededError("deadline passed 120 ms before processing");
  in.result = {};
  in.result.model = "yolox-s";
  in.annotated_topic.clear();
  in.correlation_id.clear();
  auto out = FrameResultFromJson(FrameResultToJson(in));
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  ExpectSameEnvelope(*out, in);
  EXPECT_EQ(out->status, FrameStatus::kSkipped);
  EXPECT_EQ(out->error.code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(out->error.message(), in.error.message());
}

TEST(FrameResultJsonTest, PinsTheEnvelopeFieldNames) {
  FrameResult in = OkResult();
  in.status = FrameStatus::kError;
  in.error = InvalidArgumentError("bad frame");
  const json j = json::parse(FrameResultToJson(in));

  ASSERT_TRUE(j.contains("frame"));
  EXPECT_EQ(j["frame"]["id"], "frame-7");
  EXPECT_EQ(j["frame"]["stream"], "cam1");
  EXPECT_EQ(j["frame"]["sequence"], 42);
  EXPECT_EQ(j["frame"]["capture_ms"], 1'700'000'000'123);
  EXPECT_EQ(j["status"], "error");
  EXPECT_EQ(j["error"]["code"], "invalid_argument");
  EXPECT_EQ(j["error"]["message"], "bad frame");
  EXPECT_EQ(j["correlation_id"], "req-9");
  EXPECT_EQ(j["annotated_topic"], "kadr.annotated");

  // The DetectionResult's own fields sit beside the envelope.
  EXPECT_EQ(j["schema_version"], kResultSchemaVersion);
  EXPECT_EQ(j["model"], "yolox-s");
  EXPECT_EQ(j["image"]["width"], 640);
  EXPECT_EQ(j["image"]["height"], 480);
  ASSERT_EQ(j["detections"].size(), 2u);
  const json& d = j["detections"][0];
  EXPECT_EQ(d["class_id"], 0);
  EXPECT_EQ(d["label"], "person");
  EXPECT_FLOAT_EQ(d["score"].get<float>(), 0.875f);
  EXPECT_FLOAT_EQ(d["box"]["x"].get<float>(), 10.5f);
  EXPECT_FLOAT_EQ(d["box"]["y"].get<float>(), 20.25f);
  EXPECT_FLOAT_EQ(d["box"]["width"].get<float>(), 100.f);
  EXPECT_FLOAT_EQ(d["box"]["height"].get<float>(), 200.f);
  const json& mask = j["detections"][1]["mask"];
  for (const char* k : {"x", "y", "width", "height", "rle"}) EXPECT_TRUE(mask.contains(k)) << k;
  EXPECT_EQ(j["timings_ms"]["inference"], 18.25);
}

TEST(FrameResultJsonTest, OkResultHasNoErrorAndOmitsEmptyOptionalFields) {
  FrameResult in = OkResult();
  in.correlation_id.clear();
  in.annotated_topic.clear();
  const json j = json::parse(FrameResultToJson(in));
  EXPECT_EQ(j["status"], "ok");
  EXPECT_FALSE(j.contains("error"));
  EXPECT_FALSE(j.contains("correlation_id"));
  EXPECT_FALSE(j.contains("annotated_topic"));
}

TEST(FrameResultJsonTest, RejectsMalformedEnvelopes) {
  const json good = json::parse(FrameResultToJson(OkResult()));
  auto without = [&](const char* key) {
    json j = good;
    j.erase(key);
    return j.dump();
  };
  for (const std::string& text : {std::string("not json"), without("frame"), without("status")}) {
    auto r = FrameResultFromJson(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  }
  json unknown = good;
  unknown["status"] = "maybe";
  auto r = FrameResultFromJson(unknown.dump());
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("maybe"), std::string::npos);

  json error_without_code = good;
  error_without_code["status"] = "error";
  EXPECT_FALSE(FrameResultFromJson(error_without_code.dump()).has_value());
}

TEST(FrameStatusTest, NamesAreTheWireValues) {
  EXPECT_EQ(FrameStatusName(FrameStatus::kOk), "ok");
  EXPECT_EQ(FrameStatusName(FrameStatus::kError), "error");
  EXPECT_EQ(FrameStatusName(FrameStatus::kSkipped), "skipped");
}

}  // namespace
}  // namespace kadr::protocol
