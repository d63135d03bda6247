#include "jobs/job.h"

#include <regex>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "jobs/job_store.h"
#include "protocol/frame.h"

namespace kadr::jobs {
namespace {

constexpr JobState kAll[] = {JobState::kQueued, JobState::kRunning, JobState::kDone,
                             JobState::kFailed, JobState::kCancelled};

TEST(JobStateTest, NamesRoundTripAndUnknownNamesAreRefused) {
  for (JobState s : kAll) EXPECT_EQ(ParseJobState(JobStateName(s)), s);
  EXPECT_EQ(ParseJobState("DONE"), std::nullopt);
  EXPECT_EQ(ParseJobState(""), std::nullopt);
  for (JobKind k : {JobKind::kImage, JobKind::kVideo, JobKind::kStream}) {
    EXPECT_EQ(ParseJobKind(JobKindName(k)), k);
  }
  EXPECT_EQ(ParseJobKind("movie"), std::nullopt);
}

TEST(JobStateTest, JobsMoveOnlyForwardAndFinishedStatesAreFinal) {
  for (JobState s : kAll) EXPECT_TRUE(CanTransition(s, s)) << JobStateName(s);
  EXPECT_TRUE(CanTransition(JobState::kQueued, JobState::kRunning));
  EXPECT_TRUE(CanTransition(JobState::kQueued, JobState::kDone));
  EXPECT_TRUE(CanTransition(JobState::kQueued, JobState::kCancelled));
  EXPECT_TRUE(CanTransition(JobState::kRunning, JobState::kFailed));
  EXPECT_FALSE(CanTransition(JobState::kRunning, JobState::kQueued));
  for (JobState from : {JobState::kDone, JobState::kFailed, JobState::kCancelled}) {
    EXPECT_TRUE(IsFinished(from));
    for (JobState to : kAll) {
      if (to != from) {
        EXPECT_FALSE(CanTransition(from, to)) << JobStateName(from);
      }
    }
  }
  const Status refused = CheckTransition(JobState::kDone, JobState::kQueued);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("done"), std::string::npos);
  EXPECT_TRUE(CheckTransition(JobState::kQueued, JobState::kRunning).ok());
}

TEST(JobIdTest, NewIdsAreValidDistinctAndSayWhenTheyWereMade) {
  const std::regex pattern("j[0-9a-f]{24}");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewJobId(1'764'115'200'123);
    ASSERT_TRUE(std::regex_match(id, pattern)) << id;
    ASSERT_TRUE(IsValidJobId(id));
    EXPECT_EQ(JobIdTimeMs(id), 1'764'115'200'123);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000U);
  EXPECT_EQ(JobIdTimeMs("cam1"), std::nullopt);
  EXPECT_EQ(JobIdTimeMs("jXYZ456789abcdef012345678"), std::nullopt);
  EXPECT_FALSE(IsValidJobId(""));
  EXPECT_FALSE(IsValidJobId("a.b"));
  EXPECT_FALSE(IsValidJobId(std::string(65, 'a')));
}

TEST(JobIdTest, StreamIdsBecomeValidDistinctStableJobIds) {
  EXPECT_EQ(JobIdForStream("cam1"), "cam1");
  EXPECT_EQ(JobIdForStream(""), "");
  const std::string a = JobIdForStream("rtsp://cam/1");
  const std::string b = JobIdForStream("rtsp://cam/2");
  EXPECT_TRUE(IsValidJobId(a)) << a;
  EXPECT_NE(a, b);
  EXPECT_TRUE(a.starts_with("rtsp___cam_1-")) << a;
  EXPECT_EQ(a, JobIdForStream("rtsp://cam/1"));
  const std::string long_a = JobIdForStream(std::string(100, 'x') + "a");
  EXPECT_TRUE(IsValidJobId(long_a)) << long_a;
  EXPECT_NE(long_a, JobIdForStream(std::string(100, 'x') + "b"));
}

TEST(JobEventsTest, ASnapshotCarriesTheWholeRecordButItsResult) {
  JobRecord job;
  job.id = "j1";
  job.kind = JobKind::kVideo;
  job.model = "yolox_nano";
  job.state = JobState::kFailed;
  job.created_ms = 10;
  job.updated_ms = 20;
  job.frames_total = 30;
  job.frames_done = 4;
  job.source_name = "clip.mp4";
  job.error = DeadlineExceededError("no result for frame 4");
  job.deadline_ms = 99;
  job.control_topic = "kadr.replies.gw";
  job.details_json = R"({"video":{"fps":25}})";
  job.result_json = "{}";
  const bus::Message m = JobEventMessage(job);
  EXPECT_EQ(m.topic, protocol::kJobsTopic);
  EXPECT_EQ(m.key, "j1");
  EXPECT_TRUE(IsJobEvent(m));
  auto back =
      JobFromEvent(std::string_view(reinterpret_cast<const char*>(m.value.data()), m.value.size()));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->kind, JobKind::kVideo);
  EXPECT_EQ(back->state, JobState::kFailed);
  EXPECT_EQ(back->frames_total, 30);
  EXPECT_EQ(back->frames_done, 4);
  EXPECT_EQ(back->deadline_ms, 99);
  EXPECT_EQ(back->control_topic, "kadr.replies.gw");
  EXPECT_EQ(back->error, job.error);
  EXPECT_EQ(back->details_json, R"({"video":{"fps":25}})");
  EXPECT_TRUE(back->result_json.empty());

  for (const char* bad :
       {"", "[]", R"({"job":{}})", R"({"job":{"id":"a.b","kind":"image","state":"done"}})",
        R"({"job":{"id":"j","kind":"image","state":"lost"}})",
        R"({"job":{"id":"j","kind":"image","state":"done","created_ms":"x"}})"}) {
    EXPECT_EQ(JobFromEvent(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(JobEventsTest, CancelRequestsGoToTheRunnerAndOnlyTheyAreRecognised) {
  JobRecord job;
  job.id = "v1";
  job.control_topic = "kadr.replies.gw";
  const bus::Message m = CancelRequestMessage(job);
  EXPECT_EQ(m.topic, "kadr.replies.gw");
  EXPECT_EQ(CancelRequestJobId(m), "v1");
  bus::Message other = m;
  other.headers.Set(protocol::header::kKind, protocol::kind::kVideo);
  EXPECT_EQ(CancelRequestJobId(other), std::nullopt);
  bus::Message bad = m;
  bad.value = {'{', '}'};
  EXPECT_EQ(CancelRequestJobId(bad), std::nullopt);
}

TEST(MemoryJobStoreTest, BehavesAsAJobStore) {
  std::int64_t now = 1'000'000;
  RetentionOptions retention;
  retention.max_jobs = 2;
  MemoryJobStore store(retention, [&] { return now; });
  for (int i = 0; i < 3; ++i) {
    JobRecord job;
    job.id = "m" + std::to_string(i);
    job.created_ms = now - 10 + i;
    job.deadline_ms = i == 1 ? now - 1 : 0;
    ASSERT_TRUE(store.PutJob(job).ok());
  }
  EXPECT_EQ(store.PutJob(JobRecord{}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.GetJob("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.SaveAnnotatedImage("nope", std::vector<std::uint8_t>{1}).code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(store.SaveAnnotatedImage("m2", std::vector<std::uint8_t>{1, 2}).ok());
  EXPECT_TRUE(store.GetJob("m2")->has_image);
  JobRecord again = *store.GetJob("m2");
  again.has_image = false;
  ASSERT_TRUE(store.PutJob(again).ok());
  EXPECT_TRUE(store.GetJob("m2")->has_image);  // kept by the store
  auto list = store.ListJobs(10, 0);
  ASSERT_EQ(list->size(), 3U);
  EXPECT_EQ((*list)[0].id, "m2");
  auto overdue = store.ListOverdue(now, 10);
  ASSERT_EQ(overdue->size(), 1U);
  EXPECT_EQ((*overdue)[0].id, "m1");
  ASSERT_TRUE(store.Enforce().ok());
  EXPECT_EQ(*store.CountJobs(), 2U);
  EXPECT_FALSE(store.GetJob("m0").has_value());
}

}  // namespace
}  // namespace kadr::jobs
