// ModelInputs and WireSide: how large a video job's frames travel, from what the workers of its
// model announce.
#include "camera/detail/model_inputs.h"

#include <string>

#include <gtest/gtest.h>

namespace kadr::camera::detail {
namespace {

protocol::WorkerHeartbeat Heartbeat(const std::string& worker, const std::string& model, int w,
                                    int h) {
  protocol::WorkerHeartbeat hb;
  hb.worker_id = worker;
  hb.model = model;
  hb.input_width = w;
  hb.input_height = h;
  hb.interval_ms = 2000;
  return hb;
}

TEST(ModelInputsTest, TheLongestInputSideOfTheLiveWorkersOfAModel) {
  ModelInputs inputs;
  EXPECT_EQ(inputs.LongSide("yolox", 0), 0) << "nothing heard yet";
  inputs.Note(Heartbeat("w1", "yolox", 416, 416), 1000);
  inputs.Note(Heartbeat("w2", "yolox", 640, 384), 1000);
  inputs.Note(Heartbeat("w3", "other", 1280, 1280), 1000);
  EXPECT_EQ(inputs.LongSide("yolox", 1000), 640);
  EXPECT_EQ(inputs.LongSide("other", 1000), 1280);
  EXPECT_EQ(inputs.LongSide("unknown", 1000), 0);

  // A worker that announces again replaces what it said before.
  inputs.Note(Heartbeat("w2", "yolox", 320, 320), 2000);
  EXPECT_EQ(inputs.LongSide("yolox", 2000), 416);
}

TEST(ModelInputsTest, WorkersAreForgottenWhenTheyStopOrFallSilent) {
  ModelInputs inputs;
  inputs.Note(Heartbeat("w1", "yolox", 416, 416), 1000);
  auto stopping = Heartbeat("w1", "yolox", 416, 416);
  stopping.state = "stopping";
  inputs.Note(stopping, 1500);
  EXPECT_EQ(inputs.LongSide("yolox", 1500), 0);

  inputs.Note(Heartbeat("w2", "yolox", 416, 416), 1000);  // every 2 s: dead after 3 missed
  EXPECT_EQ(inputs.LongSide("yolox", 6999), 416);
  EXPECT_EQ(inputs.LongSide("yolox", 7000), 0);

  // An interval claimed absurdly long still expires within 3 minutes.
  auto lazy = Heartbeat("w3", "yolox", 416, 416);
  lazy.interval_ms = std::int64_t{1} << 40;
  inputs.Note(lazy, 0);
  EXPECT_EQ(inputs.LongSide("yolox", 180000), 0);
}

TEST(ModelInputsTest, DynamicInputsAndSegmentationKeepFramesAtTheirWireSize) {
  ModelInputs inputs;
  inputs.Note(Heartbeat("w1", "yolox", 416, 416), 0);
  inputs.Note(Heartbeat("w2", "yolox", 0, 0), 0);  // takes any size
  EXPECT_EQ(inputs.LongSide("yolox", 0), 0);

  auto seg = Heartbeat("w3", "seg", 320, 320);
  seg.task = "segment";
  inputs.Note(seg, 0);
  EXPECT_EQ(inputs.LongSide("seg", 0), 0);
}

TEST(ModelInputsTest, HowManyWorkersItRemembersIsBounded) {
  ModelInputs inputs;
  for (std::size_t i = 0; i < ModelInputs::kMaxWorkers; ++i) {
    inputs.Note(Heartbeat("w" + std::to_string(i), "flood", 16, 16), 0);
  }
  inputs.Note(Heartbeat("late", "yolox", 416, 416), 0);
  EXPECT_EQ(inputs.LongSide("yolox", 0), 0) << "full: a new worker is not noted";
  // Once the flood has expired, room is made again.
  inputs.Note(Heartbeat("late", "yolox", 416, 416), 10000);
  EXPECT_EQ(inputs.LongSide("yolox", 10000), 416);
}

TEST(WireSideTest, TheModelsInputSideCapsTheFramesButNeverBelowAFloor) {
  EXPECT_EQ(WireSide(1280, 0), 1280) << "unknown model input";
  EXPECT_EQ(WireSide(1280, 416), 416);
  EXPECT_EQ(WireSide(1280, 1920), 1280) << "never above the configured side";
  EXPECT_EQ(WireSide(1280, 16), kMinWireSide) << "an announcement cannot starve the model";
  EXPECT_EQ(WireSide(0, 640), 640) << "no configured side";
  EXPECT_EQ(WireSide(0, 0), 0);
}

}  // namespace
}  // namespace kadr::camera::detail
