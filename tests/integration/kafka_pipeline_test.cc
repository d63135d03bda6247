// The Kafka pipeline end to end, on the real protocol: an embedded broker in this process
// (so faults can be injected through its API), `kadr worker` as separate processes, frames
// published with kafka::KafkaPublisher (or kcat), results read back from kadr.results.
//
// Every wait is bounded; a failure names what was still missing and prints the workers' logs.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "kafka/embedded_broker.h"
#include "kafka/kafka_publisher.h"
#include "kafka/kafka_subscriber.h"
#include "protocol/frame.h"
#include "support/child_process.h"
#include "support/shell.h"
#include "support/test_data.h"
#include "support/wait.h"

namespace kadr {
namespace {

using namespace std::chrono_literals;
using protocol::FrameResult;
using protocol::FrameStatus;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 60s;  // bound for every wait on the pipeline
const std::string kModel = "tiny";
constexpr char kMaxInFlight[] = "max.in.flight.requests.per.connection";
// The test's own clients reconnect quickly after a broker outage (librdkafka backs off up to
// 10 s by default), so recovery time is the worker's; the workers keep the defaults.
constexpr char kReconnectBackoffMax[] = "reconnect.backoff.max.ms";

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Polls `done` every 20 ms until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  return testing::WaitUntil(done, timeout, 20ms);
}

std::vector<std::uint8_t> EncodeImage(bool white, const std::string& ext) {
  const cv::Mat img(64, 64, CV_8UC3, cv::Scalar::all(white ? 255 : 0));
  std::vector<std::uint8_t> bytes;
  cv::imencode(ext, img, bytes);
  return bytes;
}

std::vector<std::uint8_t> CorruptJpeg() {
  const std::string s = "\xFF\xD8\xFF\xE0 definitely not a jpeg";
  return {s.begin(), s.end()};
}

// A `kadr worker` child process, named for the logs; its stdout and stderr go to `log`.
struct WorkerProcess : testing::ChildProcess {
  WorkerProcess(std::string worker_name, const std::vector<std::string>& argv,
                std::filesystem::path log)
      : ChildProcess(argv, std::move(log)), name(std::move(worker_name)) {}

  const std::string name;

  // Partitions held now, from the "partitions assigned/revoked count=N" log lines (the
  // default assignors are eager: every rebalance revokes all, then assigns).
  int CurrentPartitions() const {
    static const std::regex kEvent("partitions (assigned|revoked) count=(\\d+)");
    const std::string text = Log();
    int held = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), kEvent);
         it != std::sregex_iterator(); ++it) {
      held = (*it)[1] == "assigned" ? std::stoi((*it)[2]) : 0;
    }
    return held;
  }
};

// Reads results (and, optionally, the frames and dead-letter topics) on its own thread, in
// its own consumer group, and indexes them by frame id.
class Collector {
 public:
  struct DeadLetter {
    bus::Headers headers;
    std::vector<std::uint8_t> value;
  };

  Collector(const std::string& brokers, std::vector<std::string> topics) {
    kafka::KafkaOptions o;
    o.brokers = brokers;
    o.fetch_wait_max_ms = 10;
    o.properties[kReconnectBackoffMax] = "1000";
    kafka::SubscriberOptions sub;
    sub.group_id = "kadr.test.collector";
    sub.topics = std::move(topics);
    auto s = kafka::KafkaSubscriber::Create(o, sub);
    if (!s) {
      ADD_FAILURE() << "collector: " << s.error().ToString();
      return;
    }
    subscriber_ = std::move(*s);
    thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
  }

  ~Collector() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    if (subscriber_) (void)subscriber_->Close();
  }

  std::size_t Distinct() const {
    std::lock_guard lock(mu_);
    return results_.size();
  }
  std::size_t Total() const {
    std::lock_guard lock(mu_);
    return total_;
  }
  bool Has(const std::string& frame_id) const {
    std::lock_guard lock(mu_);
    return results_.contains(frame_id);
  }
  std::vector<FrameResult> ResultsOf(const std::string& frame_id) const {
    std::lock_guard lock(mu_);
    auto it = results_.find(frame_id);
    return it == results_.end() ? std::vector<FrameResult>{} : it->second;
  }
  // Frame ids in `ids` without a result yet.
  std::vector<std::string> Missing(const std::vector<std::string>& ids) const {
    std::lock_guard lock(mu_);
    std::vector<std::string> missing;
    for (const auto& id : ids) {
      if (!results_.contains(id)) missing.push_back(id);
    }
    return missing;
  }
  // Partitions of the frames topic whose frames have results (needs the frames topic tapped).
  std::set<int> AnsweredPartitions() const {
    std::lock_guard lock(mu_);
    std::set<int> out;
    for (const auto& [id, partition] : frame_partition_) {
      if (results_.contains(id)) out.insert(partition);
    }
    return out;
  }
  std::vector<DeadLetter> DeadLetters() const {
    std::lock_guard lock(mu_);
    return dead_letters_;
  }
  std::vector<std::string> ParseErrors() const {
    std::lock_guard lock(mu_);
    return parse_errors_;
  }

 private:
  void Loop(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      auto batch = subscriber_->Poll(64, 100ms, 5ms);
      for (auto& in : batch) {
        const auto& m = in.message;
        std::lock_guard lock(mu_);
        if (m.topic == protocol::kResultsTopic) {
          auto r = protocol::FrameResultFromJson(std::string(m.value.begin(), m.value.end()));
          if (r) {
            ++total_;
            results_[r->frame_id].push_back(std::move(*r));
          } else {
            parse_errors_.push_back(r.error().ToString());
          }
        } else if (m.topic == protocol::kDeadLetterTopic) {
          dead_letters_.push_back({m.headers, m.value});
        } else if (auto id = m.headers.Get(protocol::header::kFrameId)) {
          frame_partition_[*id] = in.token.partition;
        }
        subscriber_->Ack(in.token);
      }
    }
  }

  std::unique_ptr<kafka::KafkaSubscriber> subscriber_;
  mutable std::mutex mu_;
  std::map<std::string, std::vector<FrameResult>> results_;
  std::map<std::string, int> frame_partition_;
  std::vector<DeadLetter> dead_letters_;
  std::vector<std::string> parse_errors_;
  std::size_t total_ = 0;
  std::jthread thread_;
};

class KafkaPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    std::filesystem::create_directories(dir_ / "models");
    std::filesystem::copy_file(KADR_TINY_ONNX, dir_ / "models" / (kModel + ".onnx"));
    kafka::EmbeddedBrokerOptions o;
    o.partitions = 4;
    o.topics = {std::string(protocol::kResultsTopic), std::string(protocol::kAnnotatedTopic),
                std::string(protocol::kDeadLetterTopic), FramesTopic()};
    auto broker = kafka::EmbeddedBroker::Create(o);
    ASSERT_TRUE(broker.has_value()) << broker.error().ToString();
    broker_ = std::move(*broker);
    kafka::KafkaOptions ko;
    ko.brokers = broker_->bootstrap();
    ko.fetch_wait_max_ms = 10;
    ko.properties[kMaxInFlight] = "1";  // see RetriableRequestErrorsLoseNoFrame
    ko.properties[kReconnectBackoffMax] = "1000";
    auto publisher = kafka::KafkaPublisher::Create(ko);
    ASSERT_TRUE(publisher.has_value()) << publisher.error().ToString();
    publisher_ = std::move(*publisher);
  }

  void TearDown() override {
    feeder_ = {};  // joins
    for (auto& w : workers_) {
      w.Kill();
      if (HasFailure()) {
        std::cerr << "---- log of worker " << w.name << " (pid " << w.pid() << ") ----\n"
                  << w.Log() << "---- end of " << w.name << " ----\n";
      }
    }
    collector_.reset();
    publisher_.reset();
    broker_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  static std::string FramesTopic() { return protocol::FramesTopic(kModel); }

  // Starts `kadr worker -m tiny` against this test's broker.
  WorkerProcess& StartWorker(const std::string& name, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {KADR_BINARY,
                                     "--log-level",
                                     "info",
                                     "--threads",
                                     "1",
                                     "--models-dir",
                                     (dir_ / "models").string(),
                                     "worker",
                                     "-m",
                                     kModel,
                                     "--brokers",
                                     broker_->bootstrap()};
    args.insert(args.end(), extra.begin(), extra.end());
    WorkerProcess& w = workers_.emplace_back(name, args, dir_ / (name + ".log"));
    EXPECT_EQ(w.spawn_error(), 0) << "cannot start " << KADR_BINARY << ": "
                                  << std::strerror(w.spawn_error());
    return w;
  }

  // Waits until `w` holds at least one partition of the frames topic.
  ::testing::AssertionResult WaitAssigned(WorkerProcess& w) {
    if (WaitUntil([&] { return w.CurrentPartitions() > 0 || !w.Running(); }, kWait) &&
        w.Running()) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << "worker " << w.name << (w.Running() ? " got no partitions within 60 s" : " exited");
  }

  void StartCollector(std::vector<std::string> topics = {std::string(protocol::kResultsTopic)}) {
    collector_ = std::make_unique<Collector>(broker_->bootstrap(), std::move(topics));
  }

  bus::Message Frame(const std::string& frame_id, std::vector<std::uint8_t> bytes,
                     std::optional<std::int64_t> deadline_ms = std::nullopt) {
    protocol::FrameMeta meta;
    meta.frame_id = frame_id;
    meta.stream_id = frame_id;  // a key per frame: frames spread over all partitions
    meta.sequence = next_sequence_++;
    meta.capture_ms = NowMs();
    meta.deadline_ms = deadline_ms;
    meta.model = kModel;
    bus::Message m{FramesTopic(), meta.stream_id, std::move(bytes), {}};
    protocol::EncodeFrameHeaders(meta, m.headers);
    return m;
  }

  // Publishes one frame; a failed delivery is counted and fails the test at the end.
  void Publish(bus::Message message) {
    const std::string id = message.headers.Get(protocol::header::kFrameId).value_or("?");
    Status s = publisher_->Publish(std::move(message), [this](const Status& st) {
      if (!st.ok()) ++failed_deliveries_;
    });
    ASSERT_TRUE(s.ok()) << "publish " << id << ": " << s.ToString();
  }

  // Publishes `count` white frames "<prefix>-<i>", one every `interval`, on a thread, after
  // the previous feed has finished. Returns their ids; `published_` counts them as they go.
  std::vector<std::string> FeedFrames(const std::string& prefix, int count,
                                      std::chrono::milliseconds interval) {
    std::vector<std::string> ids;
    for (int i = 0; i < count; ++i) ids.push_back(prefix + "-" + std::to_string(i));
    const auto white = EncodeImage(true, ".jpg");
    if (feeder_.joinable()) feeder_.join();  // the previous feed runs to its end
    feeder_ = std::jthread([this, ids, white, interval](std::stop_token stop) {
      for (const auto& id : ids) {
        if (stop.stop_requested()) return;
        Publish(Frame(id, white));
        ++published_;
        std::this_thread::sleep_for(interval);
      }
    });
    return ids;
  }

  // Where a frame without a result got to, read with kcat: for failure messages.
  std::string Whereabouts(const std::string& frame_id) const {
    const std::string consume = "timeout 30 kcat -q -C -e -b " + broker_->bootstrap() +
                                " -X fetch.wait.max.ms=10 -o beginning ";
    const auto frames = testing::Shell(consume + "-t " + FramesTopic() + " -f '%p/%o %h\\n'").out;
    const auto results =
        testing::Shell(consume + "-t " + std::string(protocol::kResultsTopic) + " -f '%p/%o %s\\n'")
            .out;
    std::string out = "frame " + frame_id + " among the " +
                      std::to_string(std::count(frames.begin(), frames.end(), '\n')) +
                      " frames in " + FramesTopic() + ":";
    const std::string needle = "kadr-frame-id=" + frame_id + ",";
    std::stringstream in(frames);
    for (std::string line; std::getline(in, line);) {
      if (line.find(needle) != std::string::npos) out += " at " + line.substr(0, line.find(' '));
    }
    out += "; its results in " + std::string(protocol::kResultsTopic) + ":";
    std::stringstream rin(results);
    for (std::string line; std::getline(rin, line);) {
      if (line.find("\"id\":\"" + frame_id + "\"") != std::string::npos) {
        out += " at " + line.substr(0, line.find(' '));
      }
    }
    return out;
  }

  // Waits until every id in `ids` has a result; fails naming the missing ones.
  void ExpectAllAnswered(const std::vector<std::string>& ids) {
    const bool all = WaitUntil([&] { return collector_->Missing(ids).empty(); }, kWait);
    const auto missing = collector_->Missing(ids);
    EXPECT_TRUE(all) << missing.size() << " of " << ids.size()
                     << " frames got no result within 60 s, first: " << missing.front() << "\n"
                     << Whereabouts(missing.front());
    EXPECT_TRUE(publisher_->Flush(10s).ok());
    EXPECT_EQ(failed_deliveries_.load(), 0) << "frames the test could not publish";
    EXPECT_TRUE(collector_->ParseErrors().empty()) << collector_->ParseErrors().front();
    for (const auto& id : ids) {
      for (const auto& r : collector_->ResultsOf(id)) {
        EXPECT_EQ(r.status, FrameStatus::kOk) << id << ": " << r.error.ToString();
      }
    }
  }

  std::filesystem::path dir_;
  std::unique_ptr<kafka::EmbeddedBroker> broker_;
  std::unique_ptr<kafka::KafkaPublisher> publisher_;
  std::unique_ptr<Collector> collector_;
  std::deque<WorkerProcess> workers_;  // a deque: StartWorker's references stay valid
  std::jthread feeder_;
  std::atomic<int> published_{0};
  std::atomic<int> failed_deliveries_{0};
  std::atomic<std::int64_t> next_sequence_{0};
};

TEST_F(KafkaPipelineTest, FrameProducedByKcatIsAnsweredAndReadBackByKcat) {
  StartWorker("w1");
  const auto image = dir_ / "white.jpg";
  ASSERT_TRUE(cv::imwrite(image.string(), cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(255))));
  const std::string b = broker_->bootstrap();
  const auto [produced, produce_out] =
      testing::Shell("timeout 30 kcat -q -P -b " + b + " -t " + FramesTopic() +
                     " -k cam-kcat -H kadr-frame-id=kcat-frame-1 -H kadr-seq=7 "
                     "-H content-type=image/jpeg " +
                     image.string() + " 2>&1");
  ASSERT_EQ(produced, 0) << produce_out;

  const auto [consumed, json_text] = testing::Shell(
      "timeout 60 kcat -q -C -b " + b + " -t " + std::string(protocol::kResultsTopic) +
      " -X fetch.wait.max.ms=10 -o beginning -c 1 -f '%s'");
  ASSERT_EQ(consumed, 0) << "no result read by kcat within 60 s: " << json_text;
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << json_text;
  EXPECT_EQ(j["status"], "ok") << json_text;
  EXPECT_EQ(j["frame"]["id"], "kcat-frame-1");
  EXPECT_EQ(j["frame"]["stream"], "cam-kcat");  // the key names the stream
  EXPECT_EQ(j["frame"]["sequence"], 7);
  ASSERT_FALSE(j["detections"].empty()) << json_text;
  EXPECT_EQ(j["detections"][0]["label"], "bright");
}

TEST_F(KafkaPipelineTest, TwoWorkersShareTheFramesAndNoFrameIsLostWhenOneIsKilled) {
  const std::vector<std::string> flags = {"--session-timeout-ms", "6000"};
  WorkerProcess& a = StartWorker("a", flags);
  ASSERT_TRUE(WaitAssigned(a));
  WorkerProcess& b = StartWorker("b", flags);
  // The frames topic is tapped too, to tell which partition each answered frame came from.
  StartCollector({std::string(protocol::kResultsTopic), FramesTopic()});
  ASSERT_TRUE(WaitUntil(
      [&] {
        return a.CurrentPartitions() > 0 && b.CurrentPartitions() > 0 &&
               a.CurrentPartitions() + b.CurrentPartitions() == 4;
      },
      kWait))
      << "partitions not shared: a=" << a.CurrentPartitions() << " b=" << b.CurrentPartitions();

  const auto ids = FeedFrames("f", 150, 25ms);
  // Each partition has one owner and each worker owns some, so results from all four
  // partitions mean both workers have processed frames.
  ASSERT_TRUE(WaitUntil([&] { return collector_->AnsweredPartitions().size() == 4; }, kWait))
      << "answered partitions: " << collector_->AnsweredPartitions().size();
  ASSERT_LT(published_.load(), 150) << "the kill must happen while frames flow";
  ASSERT_EQ(kill(a.pid(), SIGKILL), 0);
  ASSERT_TRUE(WaitUntil([&] { return !a.Running(); }, 10s));

  ExpectAllAnswered(ids);
  EXPECT_TRUE(b.Running()) << "the surviving worker must keep serving";
  EXPECT_EQ(b.CurrentPartitions(), 4) << "the survivor takes over the dead worker's partitions";
  std::cout << "results=" << collector_->Total() << " distinct=" << collector_->Distinct()
            << " (duplicates are redeliveries)\n";
}

TEST_F(KafkaPipelineTest, WorkerRecoversFromABrokerOutageWithoutLosingFrames) {
  WorkerProcess& w = StartWorker("w1");
  StartCollector();
  ASSERT_TRUE(WaitAssigned(w));
  auto ids = FeedFrames("before", 60, 40ms);
  ASSERT_TRUE(WaitUntil([&] { return collector_->Distinct() >= 10; }, kWait));

  ASSERT_TRUE(broker_->SetBrokerDown(1).ok());
  ASSERT_LT(published_.load(), 60) << "the outage must start while frames flow";
  std::this_thread::sleep_for(3s);  // the outage itself, not a wait for a condition
  ASSERT_TRUE(broker_->SetBrokerUp(1).ok());
  const auto up = Clock::now();

  // Frames published after the outage are answered by the same process.
  const auto after = FeedFrames("after", 30, 20ms);
  ids.insert(ids.end(), after.begin(), after.end());
  ExpectAllAnswered(ids);
  std::cout << "all answered "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - up).count()
            << " ms after the broker came back\n";
  EXPECT_TRUE(w.Running()) << "the worker must recover without a restart";
  EXPECT_EQ(w.Log().find("worker stopped"), std::string::npos);
}

TEST_F(KafkaPipelineTest, RetriableRequestErrorsLoseNoFrame) {
  // One produce request in flight per connection, for the worker as for the test's own
  // publisher. With more, the mock cluster of librdkafka 2.0.2 loses messages that Kafka
  // would not: it checks idempotent sequence numbers only for transactional producers, so
  // after a failed batch it accepts the next one, and librdkafka then counts the failed
  // batch as delivered ("implicitly acked by subsequent batch success"). Kafka would refuse
  // the next batch as out of sequence and the failed one would be retried.
  WorkerProcess& w = StartWorker("w1", {"--kafka-property", std::string(kMaxInFlight) + "=1"});
  StartCollector();
  ASSERT_TRUE(WaitAssigned(w));
  const auto ids = FeedFrames("f", 60, 30ms);
  ASSERT_TRUE(WaitUntil([&] { return collector_->Distinct() >= 5; }, kWait));
  constexpr int kProduce = 0, kFetch = 1;
  constexpr int kNotLeaderOrFollower = 6, kRequestTimedOut = 7;
  broker_->PushRequestErrors(kProduce, 5, kNotLeaderOrFollower);
  broker_->PushRequestErrors(kFetch, 5, kRequestTimedOut);
  ASSERT_TRUE(WaitUntil([&] { return collector_->Distinct() >= 30; }, kWait));
  broker_->PushRequestErrors(kProduce, 5, kRequestTimedOut);
  broker_->PushRequestErrors(kFetch, 5, kNotLeaderOrFollower);

  ExpectAllAnswered(ids);
  EXPECT_TRUE(w.Running());
}

TEST_F(KafkaPipelineTest, CorruptJpegGoesToDeadLetterTopicAndFramesBehindItAreProcessed) {
  WorkerProcess& w = StartWorker("w1");
  StartCollector({std::string(protocol::kResultsTopic), std::string(protocol::kDeadLetterTopic)});
  ASSERT_TRUE(WaitAssigned(w));
  // One key for all: one partition, so the good frames are behind the corrupt one.
  const std::vector<std::pair<std::string, std::vector<std::uint8_t>>> frames = {
      {"before", EncodeImage(true, ".jpg")},
      {"corrupt", CorruptJpeg()},
      {"after-black", EncodeImage(false, ".png")},
      {"after-white", EncodeImage(true, ".jpg")}};
  for (const auto& [id, bytes] : frames) {
    bus::Message m = Frame(id, bytes);
    m.key = "cam1";
    Publish(std::move(m));
  }
  ASSERT_TRUE(WaitUntil(
      [&] { return collector_->Distinct() == 4 && !collector_->DeadLetters().empty(); }, kWait))
      << "results=" << collector_->Distinct()
      << " dead letters=" << collector_->DeadLetters().size();

  const auto corrupt = collector_->ResultsOf("corrupt");
  ASSERT_FALSE(corrupt.empty());
  EXPECT_EQ(corrupt[0].status, FrameStatus::kError);
  EXPECT_EQ(corrupt[0].error.code(), StatusCode::kInvalidArgument) << corrupt[0].error.ToString();
  const auto dead = collector_->DeadLetters();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].headers.Get(protocol::header::kFrameId), "corrupt");
  EXPECT_EQ(dead[0].headers.Get(protocol::header::kErrorCode), "invalid_argument");
  EXPECT_FALSE(dead[0].headers.Get(protocol::header::kErrorMessage).value_or("").empty());
  EXPECT_EQ(dead[0].value, CorruptJpeg()) << "the dead letter carries the original bytes";

  for (const auto& [id, label] : std::vector<std::pair<std::string, std::string>>{
           {"before", "bright"}, {"after-black", "dark"}, {"after-white", "bright"}}) {
    const auto r = collector_->ResultsOf(id);
    ASSERT_FALSE(r.empty()) << id;
    EXPECT_EQ(r[0].status, FrameStatus::kOk) << id << ": " << r[0].error.ToString();
    ASSERT_FALSE(r[0].result.detections.empty()) << id;
    EXPECT_EQ(r[0].result.detections[0].label, label) << id;
  }
}

TEST_F(KafkaPipelineTest, FramePastItsDeadlineGetsSkippedResult) {
  WorkerProcess& w = StartWorker("w1");
  StartCollector();
  ASSERT_TRUE(WaitAssigned(w));
  Publish(Frame("late", EncodeImage(true, ".jpg"), NowMs() - 60000));
  Publish(Frame("on-time", EncodeImage(true, ".jpg"), NowMs() + 600000));
  ASSERT_TRUE(
      WaitUntil([&] { return collector_->Has("late") && collector_->Has("on-time"); }, kWait))
      << "results=" << collector_->Distinct();
  const auto late = collector_->ResultsOf("late");
  EXPECT_EQ(late[0].status, FrameStatus::kSkipped);
  EXPECT_EQ(late[0].error.code(), StatusCode::kDeadlineExceeded) << late[0].error.ToString();
  EXPECT_TRUE(late[0].result.detections.empty());
  EXPECT_EQ(collector_->ResultsOf("on-time")[0].status, FrameStatus::kOk);
}

TEST_F(KafkaPipelineTest, SigtermDrainsAndExitsZeroAndTheNextWorkerLosesNothing) {
  WorkerProcess& a = StartWorker("a");
  StartCollector();
  ASSERT_TRUE(WaitAssigned(a));
  const auto ids = FeedFrames("f", 120, 25ms);
  ASSERT_TRUE(WaitUntil([&] { return collector_->Distinct() >= 20; }, kWait));
  ASSERT_EQ(kill(a.pid(), SIGTERM), 0);
  ASSERT_LT(published_.load(), 120) << "SIGTERM must arrive while frames flow";
  ASSERT_TRUE(WaitUntil([&] { return !a.Running(); }, 15s)) << "no exit within 15 s of SIGTERM";
  ASSERT_TRUE(WIFEXITED(a.wait_status())) << "killed by signal " << WTERMSIG(a.wait_status());
  EXPECT_EQ(WEXITSTATUS(a.wait_status()), 0);

  // Every frame it took was answered before it exited.
  std::smatch m;
  const std::string log = a.Log();
  ASSERT_TRUE(std::regex_search(log, m, std::regex("worker stopped frames=(\\d+).*undelivered=0")))
      << "no clean stop line";
  const std::size_t taken = std::stoul(m[1]);
  EXPECT_TRUE(WaitUntil([&] { return collector_->Distinct() >= taken; }, 10s))
      << "worker took " << taken << " frames, results for " << collector_->Distinct();

  WorkerProcess& b = StartWorker("b");
  ExpectAllAnswered(ids);
  EXPECT_EQ(collector_->Total(), ids.size())
      << "a clean stop commits what it answered: nothing is redelivered";
  EXPECT_TRUE(b.Running());
}

TEST_F(KafkaPipelineTest, PublisherRefusesFrameOverMaxMessageBytes) {
  kafka::KafkaOptions o;
  o.brokers = broker_->bootstrap();
  o.max_message_bytes = 1000;
  auto publisher = kafka::KafkaPublisher::Create(o);
  ASSERT_TRUE(publisher.has_value()) << publisher.error().ToString();
  cv::Mat noise(64, 64, CV_8UC3);
  cv::randu(noise, cv::Scalar::all(0), cv::Scalar::all(255));
  std::vector<std::uint8_t> big;
  ASSERT_TRUE(cv::imencode(".png", noise, big));
  ASSERT_GT(big.size(), o.max_message_bytes);

  std::atomic<int> called{0};
  bus::Message frame = Frame("big", big);
  const Status s = (*publisher)->Publish(frame, [&](const Status&) { ++called; });
  EXPECT_EQ(s.code(), StatusCode::kTooLarge) << s.ToString();

  // A frame within the limit still goes through the same publisher.
  std::atomic<int> delivered{0};
  ASSERT_TRUE((*publisher)
                  ->Publish(Frame("small", EncodeImage(true, ".png")),
                            [&](const Status& st) { delivered += st.ok() ? 1 : 0; })
                  .ok());
  EXPECT_TRUE((*publisher)->Flush(30s).ok());
  EXPECT_EQ(delivered.load(), 1);
  EXPECT_EQ(called.load(), 0) << "a refused message's callback must never run";
}

TEST_F(KafkaPipelineTest, BrokerCheckAnswersOkWhileUpAndUnavailableWhileDown) {
  EXPECT_TRUE(publisher_->CheckBroker(5s).ok());
  ASSERT_TRUE(broker_->SetBrokerDown(1).ok());
  const Status down = publisher_->CheckBroker(1s);
  ASSERT_TRUE(broker_->SetBrokerUp(1).ok());
  EXPECT_EQ(down.code(), StatusCode::kUnavailable) << down.ToString();
  EXPECT_TRUE(WaitUntil([&] { return publisher_->CheckBroker(1s).ok(); }, kWait))
      << "the check recovers once the broker is back";
}

TEST_F(KafkaPipelineTest, BrokerCheckNamesAnAddressWhereNothingListens) {
  kafka::KafkaOptions o;
  o.brokers = "127.0.0.1:1";  // nothing listens on port 1
  auto publisher = kafka::KafkaPublisher::Create(o);
  ASSERT_TRUE(publisher.has_value());
  const Status s = (*publisher)->CheckBroker(500ms);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("127.0.0.1:1"), std::string::npos) << s.ToString();
}

TEST_F(KafkaPipelineTest, EnsureTopicCreatesATopicThatARegexSubscriberThenReads) {
  kafka::KafkaOptions ko;
  ko.brokers = broker_->bootstrap();
  kafka::SubscriberOptions so;
  so.group_id = "regex-reader";
  so.topics = {"^kadr\\.replies\\..*"};
  so.metadata_refresh_ms = 500;
  auto sub = kafka::KafkaSubscriber::Create(ko, so);
  ASSERT_TRUE(sub.has_value()) << sub.error().ToString();

  // The topic appears after the subscription, as a gateway's reply topic does.
  const Status created = publisher_->EnsureTopic("kadr.replies.gw-test", 1, 10s);
  ASSERT_TRUE(created.ok()) << created.ToString();
  EXPECT_TRUE(publisher_->EnsureTopic("kadr.replies.gw-test", 1, 10s).ok()) << "idempotent";
  bus::Message m{"kadr.replies.gw-test", "k", {'h', 'i'}, {}};
  std::atomic<bool> delivered{false};
  ASSERT_TRUE(publisher_->Publish(m, [&](const Status& st) { delivered = st.ok(); }).ok());
  ASSERT_TRUE(publisher_->Flush(10s).ok());
  ASSERT_TRUE(delivered.load());

  std::vector<bus::InboundMessage> got;
  const auto deadline = Clock::now() + 30s;
  while (got.empty() && Clock::now() < deadline) got = (*sub)->Poll(10, 200ms, 0ms);
  ASSERT_EQ(got.size(), 1u) << "the regex subscriber never saw the new topic";
  EXPECT_EQ(got[0].message.topic, "kadr.replies.gw-test");
  EXPECT_EQ(got[0].message.key, "k");
  EXPECT_TRUE((*sub)->Close().ok());
}

}  // namespace
}  // namespace kadr
