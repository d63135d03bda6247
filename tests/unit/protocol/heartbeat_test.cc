#include <cstdint>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "protocol/frame.h"

namespace kadr::protocol {
namespace {

WorkerHeartbeat Sample() {
  WorkerHeartbeat hb;
  hb.worker_id = "host-42-yolox_nano";
  hb.model = "yolox_nano";
  hb.ts_ms = 1764115200000;
  hb.interval_ms = 2000;
  hb.family = "yolox";
  hb.input_width = 416;
  hb.input_height = 416;
  hb.labels = {"person", "bicycle"};
  hb.frames = 10;
  hb.processed = 7;
  hb.skipped = 2;
  hb.failed = 1;
  hb.in_flight = 3;
  return hb;
}

TEST(HeartbeatTest, RoundTripsEveryField) {
  const WorkerHeartbeat hb = Sample();
  auto back = WorkerHeartbeatFromJson(WorkerHeartbeatToJson(hb));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->worker_id, hb.worker_id);
  EXPECT_EQ(back->model, hb.model);
  EXPECT_EQ(back->ts_ms, hb.ts_ms);
  EXPECT_EQ(back->interval_ms, 2000);
  EXPECT_EQ(back->state, "running");
  EXPECT_EQ(back->family, "yolox");
  EXPECT_EQ(back->task, "detect");
  EXPECT_EQ(back->input_width, 416);
  EXPECT_EQ(back->input_height, 416);
  EXPECT_EQ(back->labels, hb.labels);
  EXPECT_EQ(back->frames, 10u);
  EXPECT_EQ(back->processed, 7u);
  EXPECT_EQ(back->skipped, 2u);
  EXPECT_EQ(back->failed, 1u);
  EXPECT_EQ(back->in_flight, 3);
  EXPECT_EQ(back->lost, 0u);
  EXPECT_TRUE(back->losses.empty());
}

TEST(HeartbeatTest, RoundTripsLossesAndBoundsThem) {
  WorkerHeartbeat hb = Sample();
  hb.lost = 9;
  hb.losses = {{"kadr.frames.yolox_nano", 2, 40, 48}, {"kadr.frames.yolox_nano", 0, 3, -1}};
  auto back = WorkerHeartbeatFromJson(WorkerHeartbeatToJson(hb));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->lost, 9u);
  ASSERT_EQ(back->losses.size(), 2u);
  EXPECT_EQ(back->losses[0].topic, "kadr.frames.yolox_nano");
  EXPECT_EQ(back->losses[0].partition, 2);
  EXPECT_EQ(back->losses[0].from, 40);
  EXPECT_EQ(back->losses[0].to, 48);
  EXPECT_EQ(back->losses[1].to, -1);

  hb.losses.assign(kMaxLossesPerHeartbeat + 10, {"kadr.frames.m", 0, 1, 2});
  back = WorkerHeartbeatFromJson(WorkerHeartbeatToJson(hb));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->losses.size(), kMaxLossesPerHeartbeat) << "the rest is not read";

  for (const bus::Loss& bad :
       {bus::Loss{"", 0, 1, 2}, bus::Loss{"t", -1, 1, 2}, bus::Loss{"t", 0, -5, 2},
        bus::Loss{"t", 0, 9, 2}, bus::Loss{"t", 0, 1, -7}}) {
    hb.losses = {bad};
    EXPECT_EQ(WorkerHeartbeatFromJson(WorkerHeartbeatToJson(hb)).error().code(),
              StatusCode::kInvalidArgument)
        << bad.topic << " " << bad.partition << " " << bad.from << " " << bad.to;
  }
  EXPECT_FALSE(WorkerHeartbeatFromJson(
      R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":1,"losses":[{"topic":"t"}]})"));
}

TEST(HeartbeatTest, RejectsMalformedInput) {
  EXPECT_EQ(WorkerHeartbeatFromJson("not json").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WorkerHeartbeatFromJson("[1]").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WorkerHeartbeatFromJson(R"({"schema_version":2,"worker_id":"w","model":"m","ts_ms":1})")
                .error()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(WorkerHeartbeatFromJson(R"({"schema_version":1,"model":"m","ts_ms":1})"));
  EXPECT_FALSE(
      WorkerHeartbeatFromJson(R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":"x"})"));
  EXPECT_FALSE(WorkerHeartbeatFromJson(
      R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":1,"state":"dancing"})"));
  EXPECT_FALSE(WorkerHeartbeatFromJson(
      R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":1,"interval_ms":0})"));
  // The minimal valid announcement, as another language would write it.
  auto minimal =
      WorkerHeartbeatFromJson(R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":5})");
  ASSERT_TRUE(minimal.has_value());
  EXPECT_EQ(minimal->interval_ms, 2000);
}

// Announcements come from anyone who can write to kadr.workers: values a reader computes
// with are range-checked (IsAlive's arithmetic on int64 cannot overflow), lists are bounded.
TEST(HeartbeatTest, RefusesValuesOutOfRange) {
  const auto refused = [](const std::function<void(WorkerHeartbeat&)>& change) {
    WorkerHeartbeat hb = Sample();
    change(hb);
    const auto parsed = WorkerHeartbeatFromJson(WorkerHeartbeatToJson(hb));
    return !parsed.has_value() && parsed.error().code() == StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused([](auto& hb) { hb.ts_ms = INT64_MAX; }));
  EXPECT_TRUE(refused([](auto& hb) { hb.ts_ms = -5; }));
  EXPECT_TRUE(refused([](auto& hb) { hb.interval_ms = INT64_MAX / 2; }));
  EXPECT_TRUE(refused([](auto& hb) { hb.interval_ms = kMaxHeartbeatIntervalMs + 1; }));
  EXPECT_TRUE(refused([](auto& hb) { hb.in_flight = -1; }));
  EXPECT_TRUE(refused([](auto& hb) { hb.processed = UINT64_MAX; }));
  EXPECT_TRUE(refused([](auto& hb) { hb.worker_id.assign(kMaxHeartbeatText + 1, 'w'); }));
  EXPECT_TRUE(refused([](auto& hb) { hb.labels.assign(kMaxHeartbeatLabels + 1, "x"); }));
  EXPECT_TRUE(refused([](auto& hb) { hb.labels = {std::string(kMaxHeartbeatText + 1, 'l')}; }));
  EXPECT_TRUE(refused([](auto& hb) { hb.input_width = 1 << 20; }));
  EXPECT_FALSE(refused([](auto& hb) { hb.interval_ms = kMaxHeartbeatIntervalMs; }));
  EXPECT_FALSE(WorkerHeartbeatFromJson(
      R"({"schema_version":1,"worker_id":"w","model":"m","ts_ms":5,"stats":{"failed":-3}})"));
}

TEST(HeartbeatTest, AliveUntilThreeIntervalsLateOrStopping) {
  WorkerHeartbeat hb = Sample();
  EXPECT_TRUE(IsAlive(hb, hb.ts_ms));
  EXPECT_TRUE(IsAlive(hb, hb.ts_ms + 6000));
  EXPECT_FALSE(IsAlive(hb, hb.ts_ms + 6001));
  hb.state = "stopping";
  EXPECT_FALSE(IsAlive(hb, hb.ts_ms));
}

}  // namespace
}  // namespace kadr::protocol
