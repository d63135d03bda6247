#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "jobs/job_store.h"

namespace kadr::jobs {
namespace {

namespace fs = std::filesystem;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::int64_t NowMs() {
  return duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

JobRecord MakeJob(std::string id, std::int64_t created_ms) {
  JobRecord job;
  job.id = std::move(id);
  job.kind = JobKind::kImage;
  job.model = "yolov8n";
  job.state = JobState::kDone;
  job.created_ms = created_ms;
  job.updated_ms = created_ms + 5;
  job.source_name = "street.jpg";
  return job;
}

std::vector<std::uint8_t> Bytes(std::size_t n, std::uint8_t fill) {
  return std::vector<std::uint8_t>(n, fill);
}

void WriteFile(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class SqliteJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("kadr-history-" + std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    options_.dir = dir_;
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  SqliteJobStore& Open() {
    store_.reset();
    auto created = SqliteJobStore::Create(options_);
    EXPECT_TRUE(created.has_value()) << created.status().ToString();
    if (!created.has_value()) throw std::runtime_error("cannot open store");
    store_ = std::move(created).value();
    return *store_;
  }

  fs::path ImagePath(const std::string& id) const { return dir_ / "images" / (id + ".jpg"); }
  fs::path ThumbPath(const std::string& id) const { return dir_ / "images" / (id + ".thumb.jpg"); }
  fs::path DbPath() const { return dir_ / "history.db"; }

  fs::path dir_;
  SqliteJobStoreOptions options_;
  std::unique_ptr<SqliteJobStore> store_;
};

TEST(JobIdTest, AcceptsOnlyShortIdsFromTheSafeAlphabet) {
  EXPECT_TRUE(IsValidJobId("a"));
  EXPECT_TRUE(IsValidJobId("Job_01-xyz"));
  EXPECT_TRUE(IsValidJobId(std::string(64, 'a')));
  EXPECT_FALSE(IsValidJobId(""));
  EXPECT_FALSE(IsValidJobId(std::string(65, 'a')));
  EXPECT_FALSE(IsValidJobId("../etc"));
  EXPECT_FALSE(IsValidJobId("a/b"));
  EXPECT_FALSE(IsValidJobId("a.jpg"));
  EXPECT_FALSE(IsValidJobId("a b"));
  EXPECT_FALSE(IsValidJobId(std::string("a\0b", 3)));
  EXPECT_FALSE(IsValidJobId("j\xc3\xa9"));
}

TEST_F(SqliteJobStoreTest, PutThenGetRoundTripsEveryField) {
  SqliteJobStore& store = Open();
  JobRecord job;
  job.id = "job-1_A";
  job.kind = JobKind::kVideo;
  job.model = "yolov8n-seg";
  job.state = JobState::kFailed;
  job.created_ms = 1'700'000'000'123;
  job.updated_ms = 1'700'000'004'567;
  job.frames_total = 250;
  job.frames_done = 17;
  job.source_name = "clip \"one\" \xc3\xa9.mp4";
  job.error = Status(StatusCode::kDeadlineExceeded, "frame 17 missed its deadline");
  job.result_json = R"({"frame_id":"f17","status":"ok","result":{"detections":[]}})";
  job.deadline_ms = 1'700'000'030'000;
  job.control_topic = "kadr.replies.gw-1";
  job.details_json = R"({"video":{"fps":25}})";
  ASSERT_TRUE(store.PutJob(job).ok());

  auto got = store.GetJob("job-1_A");
  ASSERT_TRUE(got.has_value()) << got.status().ToString();
  EXPECT_EQ(got->id, job.id);
  EXPECT_EQ(got->kind, job.kind);
  EXPECT_EQ(got->model, job.model);
  EXPECT_EQ(got->state, job.state);
  EXPECT_EQ(got->created_ms, job.created_ms);
  EXPECT_EQ(got->updated_ms, job.updated_ms);
  EXPECT_EQ(got->frames_total, job.frames_total);
  EXPECT_EQ(got->frames_done, job.frames_done);
  EXPECT_EQ(got->source_name, job.source_name);
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(*got->error, *job.error);
  EXPECT_EQ(got->result_json, job.result_json);
  EXPECT_EQ(got->deadline_ms, job.deadline_ms);
  EXPECT_EQ(got->control_topic, job.control_topic);
  EXPECT_EQ(got->details_json, job.details_json);
  EXPECT_FALSE(got->has_image);
}

TEST_F(SqliteJobStoreTest, OverdueJobsAreTheUnfinishedOnesPastTheirDeadlineOldestFirst) {
  SqliteJobStore& store = Open();
  const auto put = [&](const std::string& id, JobState state, std::int64_t deadline) {
    JobRecord job = MakeJob(id, 1000);
    job.state = state;
    job.deadline_ms = deadline;
    ASSERT_TRUE(store.PutJob(job).ok());
  };
  put("late2", JobState::kQueued, 200);
  put("late1", JobState::kRunning, 100);
  put("future", JobState::kQueued, 5000);
  put("finished", JobState::kDone, 100);
  put("none", JobState::kQueued, 0);
  auto overdue = store.ListOverdue(1000, 10);
  ASSERT_TRUE(overdue.has_value()) << overdue.error().ToString();
  ASSERT_EQ(overdue->size(), 2U);
  EXPECT_EQ((*overdue)[0].id, "late1");
  EXPECT_EQ((*overdue)[1].id, "late2");
  EXPECT_EQ(store.ListOverdue(1000, 1)->size(), 1U);
}

TEST_F(SqliteJobStoreTest, PutJobWithSameIdUpdatesEveryField) {
  SqliteJobStore& store = Open();
  JobRecord job = MakeJob("j1", 1000);
  job.state = JobState::kRunning;
  job.error = Status(StatusCode::kUnavailable, "broker down");
  ASSERT_TRUE(store.PutJob(job).ok());

  JobRecord updated = job;
  updated.kind = JobKind::kStream;
  updated.model = "other";
  updated.state = JobState::kDone;
  updated.created_ms = 2000;
  updated.updated_ms = 3000;
  updated.frames_total = 9;
  updated.frames_done = 9;
  updated.source_name = "rtsp://cam";
  updated.error.reset();
  updated.result_json = R"({"frame_id":"x"})";
  ASSERT_TRUE(store.PutJob(updated).ok());

  auto got = store.GetJob("j1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->kind, JobKind::kStream);
  EXPECT_EQ(got->model, "other");
  EXPECT_EQ(got->state, JobState::kDone);
  EXPECT_EQ(got->created_ms, 2000);
  EXPECT_EQ(got->updated_ms, 3000);
  EXPECT_EQ(got->frames_total, 9);
  EXPECT_EQ(got->frames_done, 9);
  EXPECT_EQ(got->source_name, "rtsp://cam");
  EXPECT_FALSE(got->error.has_value());
  EXPECT_EQ(got->result_json, updated.result_json);
  EXPECT_EQ(store.CountJobs().value(), 1u);
}

TEST_F(SqliteJobStoreTest, PutJobKeepsTheStoredImage) {
  SqliteJobStore& store = Open();
  JobRecord job = MakeJob("j1", 1000);
  ASSERT_TRUE(store.PutJob(job).ok());
  ASSERT_TRUE(store.SaveAnnotatedImage("j1", Bytes(10, 1)).ok());
  job.has_image = false;  // ignored by PutJob
  job.state = JobState::kDone;
  ASSERT_TRUE(store.PutJob(job).ok());
  EXPECT_TRUE(store.GetJob("j1")->has_image);
  EXPECT_TRUE(store.LoadAnnotatedImage("j1").has_value());
}

TEST_F(SqliteJobStoreTest, UnknownJobIsNotFound) {
  SqliteJobStore& store = Open();
  EXPECT_EQ(store.GetJob("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.LoadAnnotatedImage("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.LoadThumbnail("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.SaveAnnotatedImage("nope", Bytes(3, 1)).code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(ImagePath("nope")));
}

TEST_F(SqliteJobStoreTest, JobWithoutImageHasNoImageToLoad) {
  SqliteJobStore& store = Open();
  ASSERT_TRUE(store.PutJob(MakeJob("j1", 1)).ok());
  EXPECT_EQ(store.LoadAnnotatedImage("j1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.LoadThumbnail("j1").status().code(), StatusCode::kNotFound);
}

TEST_F(SqliteJobStoreTest, ListsNewestFirstAndPages) {
  SqliteJobStore& store = Open();
  // Inserted out of order; "c" and "d" share a timestamp and are ordered by id, descending.
  for (auto [id, t] : std::vector<std::pair<std::string, std::int64_t>>{
           {"a", 100}, {"e", 500}, {"c", 300}, {"b", 200}, {"d", 300}}) {
    ASSERT_TRUE(store.PutJob(MakeJob(id, t)).ok());
  }
  auto ids = [](const std::vector<JobRecord>& jobs) {
    std::vector<std::string> out;
    out.reserve(jobs.size());
    for (const auto& j : jobs) out.push_back(j.id);
    return out;
  };
  EXPECT_EQ(ids(store.ListJobs(10, 0).value()),
            (std::vector<std::string>{"e", "d", "c", "b", "a"}));
  EXPECT_EQ(ids(store.ListJobs(2, 0).value()), (std::vector<std::string>{"e", "d"}));
  EXPECT_EQ(ids(store.ListJobs(2, 2).value()), (std::vector<std::string>{"c", "b"}));
  EXPECT_EQ(ids(store.ListJobs(2, 4).value()), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(store.ListJobs(2, 5).value().empty());
  EXPECT_TRUE(store.ListJobs(0, 0).value().empty());
  EXPECT_EQ(store.ListJobs(SIZE_MAX, SIZE_MAX).value().size(), 0u);
  EXPECT_EQ(store.ListJobs(SIZE_MAX, 1).value().size(), 4u);
  EXPECT_EQ(store.ListJobs(1, 0).value()[0].model, "yolov8n");  // full records
  EXPECT_EQ(store.CountJobs().value(), 5u);
}

TEST_F(SqliteJobStoreTest, SavedImagesLoadBackAndReplaceEarlierOnes) {
  SqliteJobStore& store = Open();
  ASSERT_TRUE(store.PutJob(MakeJob("j1", 1)).ok());
  std::vector<std::uint8_t> jpeg = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFF, 0xD9};
  ASSERT_TRUE(store.SaveAnnotatedImage("j1", jpeg).ok());
  EXPECT_TRUE(store.GetJob("j1")->has_image);
  EXPECT_EQ(store.LoadAnnotatedImage("j1").value(), jpeg);
  EXPECT_EQ(ReadFile(ImagePath("j1")).size(), jpeg.size());

  auto bigger = Bytes(200 * 1024, 0xAB);  // larger than one read buffer
  ASSERT_TRUE(store.SaveAnnotatedImage("j1", bigger).ok());
  EXPECT_EQ(store.LoadAnnotatedImage("j1").value(), bigger);

  auto thumb = Bytes(32, 0x7);
  ASSERT_TRUE(store.SaveThumbnail("j1", thumb).ok());
  EXPECT_EQ(store.LoadThumbnail("j1").value(), thumb);
  EXPECT_EQ(store.LoadAnnotatedImage("j1").value(), bigger);

  // No temporary files are left behind.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_ / "images")) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"j1.jpg", "j1.thumb.jpg"}));
}

TEST_F(SqliteJobStoreTest, EmptyImageIsRejected) {
  SqliteJobStore& store = Open();
  ASSERT_TRUE(store.PutJob(MakeJob("j1", 1)).ok());
  EXPECT_EQ(store.SaveAnnotatedImage("j1", {}).code(), StatusCode::kInvalidArgument);
}

TEST_F(SqliteJobStoreTest, DataSurvivesClosingAndReopening) {
  {
    SqliteJobStore& store = Open();
    JobRecord job = MakeJob("persist", 42);
    job.error = Status(StatusCode::kInvalidArgument, "corrupt JPEG");
    job.result_json = "{}";
    ASSERT_TRUE(store.PutJob(job).ok());
    ASSERT_TRUE(store.PutJob(MakeJob("other", 43)).ok());
    ASSERT_TRUE(store.SaveAnnotatedImage("persist", Bytes(100, 9)).ok());
    ASSERT_TRUE(store.SaveThumbnail("persist", Bytes(10, 8)).ok());
  }
  SqliteJobStore& store = Open();  // closes the first store, then reopens the directory
  EXPECT_EQ(store.CountJobs().value(), 2u);
  auto got = store.GetJob("persist");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->created_ms, 42);
  EXPECT_EQ(got->error, Status(StatusCode::kInvalidArgument, "corrupt JPEG"));
  EXPECT_EQ(got->result_json, "{}");
  EXPECT_TRUE(got->has_image);
  EXPECT_EQ(store.LoadAnnotatedImage("persist").value(), Bytes(100, 9));
  EXPECT_EQ(store.LoadThumbnail("persist").value(), Bytes(10, 8));
  EXPECT_EQ(store.ListJobs(10, 0).value()[0].id, "other");
}

TEST_F(SqliteJobStoreTest, EnforceKeepsOnlyTheNewestMaxJobs) {
  options_.retention.max_jobs = 3;
  SqliteJobStore& store = Open();
  const std::int64_t now = NowMs();
  for (int i = 0; i < 5; ++i) {
    std::string id = "j" + std::to_string(i);
    ASSERT_TRUE(store.PutJob(MakeJob(id, now - 1000 + i)).ok());
    ASSERT_TRUE(store.SaveAnnotatedImage(id, Bytes(10, 1)).ok());
    ASSERT_TRUE(store.SaveThumbnail(id, Bytes(5, 1)).ok());
  }
  ASSERT_TRUE(store.Enforce().ok());
  EXPECT_EQ(store.CountJobs().value(), 3u);
  for (std::string gone : {"j0", "j1"}) {
    EXPECT_EQ(store.GetJob(gone).status().code(), StatusCode::kNotFound) << gone;
    EXPECT_FALSE(fs::exists(ImagePath(gone))) << gone;
    EXPECT_FALSE(fs::exists(ThumbPath(gone))) << gone;
  }
  for (std::string kept : {"j2", "j3", "j4"}) {
    EXPECT_TRUE(store.GetJob(kept).has_value()) << kept;
    EXPECT_TRUE(fs::exists(ImagePath(kept))) << kept;
  }
  ASSERT_TRUE(store.Enforce().ok());  // idempotent
  EXPECT_EQ(store.CountJobs().value(), 3u);
}

TEST_F(SqliteJobStoreTest, EnforceDeletesJobsOlderThanMaxAge) {
  options_.retention.max_age = std::chrono::hours(24);
  SqliteJobStore& store = Open();
  const std::int64_t now = NowMs();
  const std::int64_t day_ms = 24 * 3600 * 1000;
  ASSERT_TRUE(store.PutJob(MakeJob("ancient", now - 30 * day_ms)).ok());
  ASSERT_TRUE(store.PutJob(MakeJob("old", now - day_ms - 60'000)).ok());
  ASSERT_TRUE(store.PutJob(MakeJob("recent", now - day_ms + 60'000)).ok());
  ASSERT_TRUE(store.PutJob(MakeJob("fresh", now)).ok());
  ASSERT_TRUE(store.SaveAnnotatedImage("old", Bytes(10, 1)).ok());
  ASSERT_TRUE(store.SaveAnnotatedImage("recent", Bytes(10, 1)).ok());

  ASSERT_TRUE(store.Enforce().ok());
  EXPECT_EQ(store.CountJobs().value(), 2u);
  EXPECT_EQ(store.GetJob("ancient").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.GetJob("old").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(ImagePath("old")));
  EXPECT_TRUE(store.GetJob("recent").has_value());
  EXPECT_TRUE(fs::exists(ImagePath("recent")));
  EXPECT_TRUE(store.GetJob("fresh").has_value());
}

TEST_F(SqliteJobStoreTest, EnforceDeletesOldestImagesUntilUnderTheByteBudget) {
  options_.retention.max_image_bytes = 250;
  SqliteJobStore& store = Open();
  const std::int64_t now = NowMs();
  // j0 oldest. Sizes: j0 100, j1 no image, j2 80+20, j3 100 -> 300 bytes in all.
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(store.PutJob(MakeJob("j" + std::to_string(i), now + i)).ok());
  ASSERT_TRUE(store.SaveAnnotatedImage("j0", Bytes(100, 1)).ok());
  ASSERT_TRUE(store.SaveAnnotatedImage("j2", Bytes(80, 1)).ok());
  ASSERT_TRUE(store.SaveThumbnail("j2", Bytes(20, 1)).ok());
  ASSERT_TRUE(store.SaveAnnotatedImage("j3", Bytes(100, 1)).ok());

  ASSERT_TRUE(store.Enforce().ok());  // 300 > 250: only j0 must go
  EXPECT_EQ(store.GetJob("j0").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(ImagePath("j0")));
  EXPECT_TRUE(store.GetJob("j1").has_value());  // no image: costs nothing
  EXPECT_TRUE(store.GetJob("j2").has_value());
  EXPECT_TRUE(store.GetJob("j3").has_value());

  // Replacing an image updates the accounting: 80+20 + 200 = 300 > 250 again, j2 goes.
  ASSERT_TRUE(store.SaveAnnotatedImage("j3", Bytes(200, 1)).ok());
  ASSERT_TRUE(store.Enforce().ok());
  EXPECT_EQ(store.GetJob("j2").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(ImagePath("j2")));
  EXPECT_FALSE(fs::exists(ThumbPath("j2")));
  EXPECT_TRUE(fs::exists(ImagePath("j3")));
  EXPECT_EQ(store.CountJobs().value(), 2u);
}

TEST_F(SqliteJobStoreTest, RejectsInvalidJobIdsWithoutTouchingTheFileSystem) {
  SqliteJobStore& store = Open();
  for (const std::string& bad :
       std::vector<std::string>{"../etc", "", "a/b", "..", "x.jpg", std::string(65, 'a')}) {
    JobRecord job = MakeJob(bad, 1);
    EXPECT_EQ(store.PutJob(job).code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store.GetJob(bad).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store.SaveAnnotatedImage(bad, Bytes(3, 1)).code(), StatusCode::kInvalidArgument)
        << bad;
    EXPECT_EQ(store.SaveThumbnail(bad, Bytes(3, 1)).code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store.LoadAnnotatedImage(bad).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store.LoadThumbnail(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(store.CountJobs().value(), 0u);
  EXPECT_TRUE(fs::is_empty(dir_ / "images"));
  EXPECT_FALSE(fs::exists(dir_ / "etc.jpg"));
}

TEST_F(SqliteJobStoreTest, CorruptDatabaseFileGivesAnErrorNamingTheFile) {
  fs::create_directories(dir_);
  std::string garbage;
  for (int i = 0; i < 400; ++i) garbage += "this is not a database ";
  WriteFile(DbPath(), garbage);

  auto created = SqliteJobStore::Create(options_);
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.status().code(), StatusCode::kInternal);
  EXPECT_NE(created.status().message().find(DbPath().string()), std::string::npos)
      << created.status().message();
  EXPECT_NE(created.status().message().find("not a SQLite database"), std::string::npos)
      << created.status().message();
  EXPECT_EQ(ReadFile(DbPath()), garbage);  // left alone for the operator to inspect
}

TEST_F(SqliteJobStoreTest, DamagedDatabasePagesAreDetectedAtCreate) {
  {
    SqliteJobStore& store = Open();
    for (int i = 0; i < 200; ++i) {
      JobRecord job = MakeJob("j" + std::to_string(i), i);
      job.result_json = std::string(500, 'x');
      ASSERT_TRUE(store.PutJob(job).ok());
    }
  }
  store_.reset();
  std::string bytes = ReadFile(DbPath());
  ASSERT_GT(bytes.size(), 8192u);
  // Overwrite everything after the first page (the header and schema) with garbage.
  for (std::size_t i = 4096; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 131 % 251);
  WriteFile(DbPath(), bytes);

  auto created = SqliteJobStore::Create(options_);
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.status().code(), StatusCode::kInternal) << created.status().ToString();
  EXPECT_NE(created.status().message().find(DbPath().string()), std::string::npos)
      << created.status().message();
}

TEST_F(SqliteJobStoreTest, UnopenableDatabaseGivesAnErrorNamingTheFile) {
  fs::create_directories(DbPath());  // a directory where the file should be
  auto created = SqliteJobStore::Create(options_);
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.status().code(), StatusCode::kUnavailable) << created.status().ToString();
  EXPECT_NE(created.status().message().find(DbPath().string()), std::string::npos)
      << created.status().message();
}

TEST_F(SqliteJobStoreTest, DatabaseFromANewerSchemaIsRefused) {
  Open();
  store_.reset();
  // PRAGMA user_version is the big-endian 32-bit integer at offset 60 of the header.
  std::string bytes = ReadFile(DbPath());
  ASSERT_GT(bytes.size(), 64u);
  bytes[60] = 0;
  bytes[61] = 0;
  bytes[62] = 0;
  bytes[63] = 99;
  WriteFile(DbPath(), bytes);
  auto created = SqliteJobStore::Create(options_);
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(created.status().message().find("99"), std::string::npos);
}

TEST_F(SqliteJobStoreTest, CreateRemovesFilesACrashLeftBehind) {
  {
    SqliteJobStore& store = Open();
    ASSERT_TRUE(store.PutJob(MakeJob("kept", 1)).ok());
    ASSERT_TRUE(store.PutJob(MakeJob("noimage", 2)).ok());
    ASSERT_TRUE(store.SaveAnnotatedImage("kept", Bytes(4, 1)).ok());
  }
  store_.reset();
  WriteFile(dir_ / "images" / "kept.jpg.tmp", "half");
  WriteFile(dir_ / "images" / "gone.jpg", "orphan");
  WriteFile(dir_ / "images" / "gone.thumb.jpg", "orphan");
  WriteFile(dir_ / "images" / "noimage.jpg", "unrecorded");
  WriteFile(dir_ / "images" / "README", "not ours");

  SqliteJobStore& store = Open();
  EXPECT_FALSE(fs::exists(dir_ / "images" / "kept.jpg.tmp"));
  EXPECT_FALSE(fs::exists(ImagePath("gone")));
  EXPECT_FALSE(fs::exists(ThumbPath("gone")));
  EXPECT_FALSE(fs::exists(ImagePath("noimage")));
  EXPECT_TRUE(fs::exists(dir_ / "images" / "README"));
  EXPECT_EQ(store.LoadAnnotatedImage("kept").value(), Bytes(4, 1));
}

TEST_F(SqliteJobStoreTest, ConcurrentPutJobsAreAllStored) {
  SqliteJobStore& store = Open();
  constexpr int kThreads = 4;
  constexpr int kJobsPerThread = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJobsPerThread; ++i) {
        std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        JobRecord job = MakeJob(id, t * 1000 + i);
        job.state = JobState::kRunning;
        if (!store.PutJob(job).ok()) ++failures;
        job.state = JobState::kDone;
        if (!store.PutJob(job).ok()) ++failures;
        if (i % 10 == 0 && !store.ListJobs(5, 0).has_value()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store.CountJobs().value(), static_cast<std::size_t>(kThreads * kJobsPerThread));
  auto all = store.ListJobs(SIZE_MAX, 0);
  ASSERT_TRUE(all.has_value());
  for (const JobRecord& job : *all) EXPECT_EQ(job.state, JobState::kDone);
}

}  // namespace
}  // namespace kadr::jobs
