// The Kafka pipeline end to end, on the real protocol, against both brokers kadr runs on
// (the suite is parametrised; the assertions are the same):
//   Embedded  librdkafka's mock cluster in this process (what `kadr up` runs), whose fault API
//             also injects request errors (EmbeddedBrokerPipelineTest);
//   Apache    a real Apache Kafka node (support/apache_kafka.h: scripts/kafka.sh with
//             deploy/kafka/broker.properties), killed and restarted as a process.
// `kadr worker` and `kadr gateway` run as separate processes; frames are published with
// kafka::KafkaPublisher, kcat or Python; results are read back from kadr.results.
//
// Every wait is bounded; a failure names what was still missing and prints the workers' logs.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
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
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "kafka/embedded_broker.h"
#include "kafka/kafka_bus.h"
#include "protocol/frame.h"
#include "protocol/topics.h"
#include "support/apache_kafka.h"
#include "support/child_process.h"
#include "support/kadr_up.h"
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

  // Rebalances that took partitions from this worker ("partitions revoked" log lines).
  int Revocations() const {
    const std::string text = Log();
    int count = 0;
    for (std::size_t at = text.find("partitions revoked"); at != std::string::npos;
         at = text.find("partitions revoked", at + 1)) {
      ++count;
    }
    return count;
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
  // The most results any one frame has.
  std::size_t MaxResultsPerFrame() const {
    std::lock_guard lock(mu_);
    std::size_t most = 0;
    for (const auto& [id, results] : results_) most = std::max(most, results.size());
    return most;
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

enum class BrokerKind { kEmbedded, kApache };

std::string BrokerName(const ::testing::TestParamInfo<BrokerKind>& info) {
  return info.param == BrokerKind::kEmbedded ? "Embedded" : "Apache";
}

class KafkaPipelineTest : public ::testing::TestWithParam<BrokerKind> {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    std::filesystem::create_directories(dir_ / "models");
    std::filesystem::copy_file(KADR_TINY_ONNX, dir_ / "models" / (kModel + ".onnx"));
    const std::vector<std::string> topics = {
        std::string(protocol::kResultsTopic), std::string(protocol::kAnnotatedTopic),
        std::string(protocol::kDeadLetterTopic), FramesTopic()};
    if (GetParam() == BrokerKind::kApache) {
      if (const std::string why = testing::ApacheKafka::Unavailable(); !why.empty()) {
        GTEST_SKIP() << why;
      }
      std::string error;
      apache_ = testing::ApacheKafka::Start({.dir = dir_}, &error);
      ASSERT_NE(apache_, nullptr) << error;
      bootstrap_ = apache_->bootstrap();
    } else {
      kafka::EmbeddedBrokerOptions o;
      o.partitions = 4;
      o.topics = topics;
      auto broker = kafka::EmbeddedBroker::Create(o);
      ASSERT_TRUE(broker.has_value()) << broker.error().ToString();
      embedded_ = std::move(*broker);
      bootstrap_ = embedded_->bootstrap();
    }
    kafka::KafkaOptions ko;
    ko.brokers = bootstrap_;
    ko.fetch_wait_max_ms = 10;
    ko.properties[kMaxInFlight] = "1";  // see RetriableRequestErrorsLoseNoFrame
    ko.properties[kReconnectBackoffMax] = "1000";
    auto publisher = kafka::KafkaPublisher::Create(ko);
    ASSERT_TRUE(publisher.has_value()) << publisher.error().ToString();
    publisher_ = std::move(*publisher);
    if (apache_) {
      // As `kadr topics` creates them: 4 partitions, the protocol's configs.
      for (const auto& t : topics) {
        kafka::KafkaPublisher::TopicSettings settings;
        settings.partitions = 4;
        settings.configs = protocol::TopicConfigs(t);
        auto made = publisher_->EnsureTopic(t, settings, 30s);
        ASSERT_TRUE(made.has_value()) << t << ": " << made.error().ToString();
      }
    }
  }

  const std::string& bootstrap() const { return bootstrap_; }

  // The broker goes away (the embedded one stops answering; Apache Kafka's process is
  // killed with SIGKILL) and comes back with what it had stored.
  void BrokerDown() {
    if (embedded_) {
      ASSERT_TRUE(embedded_->SetBrokerDown(1).ok());
    } else {
      apache_->Kill(1);
    }
  }
  void BrokerUp() {
    if (embedded_) {
      ASSERT_TRUE(embedded_->SetBrokerUp(1).ok());
    } else {
      std::string error;
      ASSERT_TRUE(apache_->Restart(1, &error)) << error;
    }
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
    embedded_.reset();
    if (apache_ && HasFailure()) std::cerr << "---- Apache Kafka ----\n" << apache_->Log(1) << "\n";
    apache_.reset();
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
                                     bootstrap_};
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

  // Waits until `a` and `b` hold the frames topic's 4 partitions between them, some each.
  ::testing::AssertionResult WaitShared(WorkerProcess& a, WorkerProcess& b) {
    if (WaitUntil(
            [&] {
              return a.CurrentPartitions() > 0 && b.CurrentPartitions() > 0 &&
                     a.CurrentPartitions() + b.CurrentPartitions() == 4;
            },
            kWait)) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "partitions not shared: a=" << a.CurrentPartitions()
                                         << " b=" << b.CurrentPartitions();
  }

  void StartCollector(std::vector<std::string> topics = {std::string(protocol::kResultsTopic)}) {
    collector_ = std::make_unique<Collector>(bootstrap_, std::move(topics));
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
    Status s =
        publisher_->Publish(std::move(message), [this](const Status& st, const bus::AckToken&) {
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
    const std::string consume =
        "timeout 30 kcat -q -C -e -b " + bootstrap_ + " -X fetch.wait.max.ms=10 -o beginning ";
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
  std::unique_ptr<kafka::EmbeddedBroker> embedded_;
  std::unique_ptr<testing::ApacheKafka> apache_;
  std::string bootstrap_;
  std::unique_ptr<kafka::KafkaPublisher> publisher_;
  std::unique_ptr<Collector> collector_;
  std::deque<WorkerProcess> workers_;  // a deque: StartWorker's references stay valid
  std::jthread feeder_;
  std::atomic<int> published_{0};
  std::atomic<int> failed_deliveries_{0};
  std::atomic<std::int64_t> next_sequence_{0};
};

// Tests that need the embedded broker's fault API (injected request errors).
class EmbeddedBrokerPipelineTest : public KafkaPipelineTest {};
// Tests of what only a real Apache Kafka has (topic configs, the broker's own size limit).
class ApacheKafkaPipelineTest : public KafkaPipelineTest {};

TEST_P(KafkaPipelineTest, FrameProducedByKcatIsAnsweredAndReadBackByKcat) {
  StartWorker("w1");
  const auto image = dir_ / "white.jpg";
  ASSERT_TRUE(cv::imwrite(image.string(), cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(255))));
  const std::string b = bootstrap();
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

TEST_P(KafkaPipelineTest, TwoWorkersShareTheFramesAndNoFrameIsLostWhenOneIsKilled) {
  const std::vector<std::string> flags = {"--session-timeout-ms", "6000"};
  WorkerProcess& a = StartWorker("a", flags);
  ASSERT_TRUE(WaitAssigned(a));
  WorkerProcess& b = StartWorker("b", flags);
  // The frames topic is tapped too, to tell which partition each answered frame came from.
  StartCollector({std::string(protocol::kResultsTopic), FramesTopic()});
  ASSERT_TRUE(WaitShared(a, b));

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

TEST_P(KafkaPipelineTest, WorkerRecoversFromABrokerOutageWithoutLosingFrames) {
  WorkerProcess& w = StartWorker("w1");
  StartCollector();
  ASSERT_TRUE(WaitAssigned(w));
  auto ids = FeedFrames("before", 60, 40ms);
  ASSERT_TRUE(WaitUntil([&] { return collector_->Distinct() >= 10; }, kWait));

  BrokerDown();
  ASSERT_LT(published_.load(), 60) << "the outage must start while frames flow";
  std::this_thread::sleep_for(3s);  // the outage itself, not a wait for a condition
  BrokerUp();
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

TEST_P(EmbeddedBrokerPipelineTest, RetriableRequestErrorsLoseNoFrame) {
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
  embedded_->PushRequestErrors(kProduce, 5, kNotLeaderOrFollower);
  embedded_->PushRequestErrors(kFetch, 5, kRequestTimedOut);
  ASSERT_TRUE(WaitUntil([&] { return collector_->Distinct() >= 30; }, kWait));
  embedded_->PushRequestErrors(kProduce, 5, kRequestTimedOut);
  embedded_->PushRequestErrors(kFetch, 5, kNotLeaderOrFollower);

  ExpectAllAnswered(ids);
  EXPECT_TRUE(w.Running());
}

std::vector<std::uint8_t> NoiseJpegOfAbout(std::size_t bytes);  // below

// A worker stopped (SIGSTOP) while a producer outside kadr overfills its partition: the
// embedded broker deletes the frames before the worker reads them. The loss is not silent:
// the worker logs it as an error and counts it in kadr_frames_lost_total.
// A frame the broker deletes before a worker reads it (the worker stopped while a producer
// outside kadr overfills every partition past the embedded broker's 5 MiB) is never a silent
// timeout: the worker logs and counts the loss and announces its offsets; the gateway whose
// request it was sends the frame again, so the request is answered 200 long before its
// timeout; /readyz says frames are being lost.
TEST_P(EmbeddedBrokerPipelineTest, AFrameDeletedBeforeItWasReadIsSentAgainLoggedAndCounted) {
  WorkerProcess& w = StartWorker("w1", {"--http-port", "0"});
  const auto worker_port = w.WaitForLog(R"(health and metrics on http://[^:]+:(\d+)/)", kWait);
  ASSERT_TRUE(worker_port.has_value()) << w.LogTail();
  ASSERT_TRUE(WaitAssigned(w));
  testing::ChildProcess gateway(
      {KADR_BINARY, "--models-dir", (dir_ / "models").string(), "gateway", "--models", kModel,
       "--brokers", bootstrap(), "--http-port", "0", "--instance-id", "gw-loss"},
      dir_ / "gw-loss.log");
  const int port = testing::WaitForHttpPort(gateway, kWait);
  ASSERT_GT(port, 0) << gateway.LogTail();
  ASSERT_TRUE(testing::WaitReady(port, kWait)) << gateway.LogTail();
  const auto white = EncodeImage(true, ".jpg");
  const std::string image(white.begin(), white.end());
  {
    auto c = testing::LoopbackClient(port);
    auto r = c.Post("/api/v1/detect?model=tiny", image, "image/jpeg");
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no answer") << gateway.LogTail();
  }

  ASSERT_EQ(kill(w.pid(), SIGSTOP), 0);
  const auto sent = Clock::now();
  auto request = std::async(std::launch::async, [&] {
    auto c = testing::LoopbackClient(port);
    c.set_read_timeout(150s);
    return c.Post("/api/v1/detect?model=tiny&timeout_ms=120000", image, "image/jpeg");
  });
  // The request's frame is on the broker (its reply-to names this gateway)...
  const std::string consume = "timeout 30 kcat -q -C -e -b " + bootstrap() +
                              " -X fetch.wait.max.ms=10 -o beginning -t " + FramesTopic();
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string h = testing::Shell(consume + " -f '%h\\n'").out;
        std::size_t n = 0;
        for (auto at = h.find("kadr.replies.gw-loss"); at != std::string::npos;
             at = h.find("kadr.replies.gw-loss", at + 1)) {
          ++n;
        }
        return n >= 2;
      },
      kWait));
  // ...then ~7 MB more on every partition: the broker deletes it unread.
  const auto flood = dir_ / "flood.txt";
  {
    std::ofstream out(flood);
    for (int i = 0; i < 8; ++i) out << std::string(900u << 10, static_cast<char>('a' + i)) << "\n";
  }
  for (int p = 0; p < 4; ++p) {
    const auto produced =
        testing::Shell("timeout 60 kcat -q -P -b " + bootstrap() + " -t " + FramesTopic() + " -p " +
                       std::to_string(p) + " -l " + flood.string() + " 2>&1");
    ASSERT_EQ(produced.exit_code, 0) << produced.out;
  }
  ASSERT_EQ(kill(w.pid(), SIGCONT), 0);

  const auto r = request.get();
  ASSERT_TRUE(r) << gateway.LogTail();
  EXPECT_EQ(r->status, 200) << r->body << "\n" << gateway.LogTail();
  EXPECT_LT(Clock::now() - sent, 100s) << "answered by its timeout, not by a resend";
  const auto body = nlohmann::json::parse(r->body, nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << r->body;
  ASSERT_FALSE(body["detections"].empty()) << r->body;
  EXPECT_EQ(body["detections"][0]["label"], "bright");

  EXPECT_NE(w.Log().find("messages lost: deleted by the broker before they were read"),
            std::string::npos)
      << w.LogTail();
  EXPECT_TRUE(std::regex_search(
      gateway.Log(), std::regex("frames deleted by the broker before a worker read them .*"
                                "requests_hit=1")))
      << gateway.LogTail();
  auto gw = testing::LoopbackClient(port);
  const auto ready = gw.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503) << ready->body;
  EXPECT_NE(ready->body.find("\"losing_frames\""), std::string::npos) << ready->body;

  auto client = testing::LoopbackClient(std::stoi(*worker_port));
  std::string metrics;
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto m = client.Get("/metrics");
        metrics = m ? m->body : "";
        return metrics.find(
                   "kadr_frames_lost_total{model=\"tiny\",reason=\"deleted_before_read\"}") !=
                   std::string::npos &&
               metrics.find("deleted_before_read\"} 0") == std::string::npos;
      },
      kWait))
      << metrics;
  EXPECT_TRUE(w.Running()) << "the worker goes on after a loss";
  EXPECT_EQ(gateway.Stop(30s), 0) << gateway.LogTail();
}

TEST_P(KafkaPipelineTest, CorruptJpegGoesToDeadLetterTopicAndFramesBehindItAreProcessed) {
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

// A frame cannot make a worker write to a topic of the operator's cluster outside kadr's
// (issue 16): a kadr-reply-to or kadr-annotated-to outside the allowed prefixes (kadr.) is
// answered with an error on kadr.results and dead-lettered; nothing reaches that topic.
TEST_P(KafkaPipelineTest, AFrameNamingAForeignReplyTopicIsRefused) {
  WorkerProcess& w = StartWorker("w1");
  StartCollector({std::string(protocol::kResultsTopic), std::string(protocol::kDeadLetterTopic)});
  ASSERT_TRUE(WaitAssigned(w));
  bus::Message reply = Frame("foreign-reply", EncodeImage(true, ".jpg"));
  reply.headers.Set(protocol::header::kReplyTo, "victim.events");
  bus::Message image = Frame("foreign-image", EncodeImage(true, ".jpg"));
  image.headers.Set(protocol::header::kAnnotatedTo, "victim.images");
  Publish(std::move(reply));
  Publish(std::move(image));
  Publish(Frame("fine", EncodeImage(true, ".jpg")));
  ASSERT_TRUE(WaitUntil(
      [&] {
        return collector_->Has("foreign-reply") && collector_->Has("foreign-image") &&
               collector_->Has("fine") && collector_->DeadLetters().size() >= 2;
      },
      kWait))
      << "results=" << collector_->Distinct()
      << " dead letters=" << collector_->DeadLetters().size();
  for (const std::string id : {"foreign-reply", "foreign-image"}) {
    const auto r = collector_->ResultsOf(id);
    ASSERT_FALSE(r.empty()) << id;
    EXPECT_EQ(r[0].status, FrameStatus::kError) << id;
    EXPECT_EQ(r[0].error.code(), StatusCode::kInvalidArgument) << id;
    EXPECT_NE(r[0].error.message().find("only to topics starting with kadr."), std::string::npos)
        << r[0].error.ToString();
  }
  EXPECT_EQ(collector_->ResultsOf("fine")[0].status, FrameStatus::kOk);
  for (const std::string topic : {"victim.events", "victim.images"}) {
    const auto read = testing::Shell("timeout 20 kcat -q -C -e -b " + bootstrap() +
                                     " -X fetch.wait.max.ms=10 -o beginning -t " + topic +
                                     " -f '%k\\n' 2>/dev/null");
    EXPECT_EQ(read.out, "") << topic << " got messages";
  }
}

TEST_P(KafkaPipelineTest, FramePastItsDeadlineGetsSkippedResult) {
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

TEST_P(KafkaPipelineTest, SigtermDrainsAndExitsZeroAndTheNextWorkerLosesNothing) {
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

TEST_P(KafkaPipelineTest, PublisherRefusesFrameOverMaxMessageBytes) {
  kafka::KafkaOptions o;
  o.brokers = bootstrap();
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
  const Status s =
      (*publisher)->Publish(frame, [&](const Status&, const bus::AckToken&) { ++called; });
  EXPECT_EQ(s.code(), StatusCode::kTooLarge) << s.ToString();

  // A frame within the limit still goes through the same publisher.
  std::atomic<int> delivered{0};
  ASSERT_TRUE(
      (*publisher)
          ->Publish(Frame("small", EncodeImage(true, ".png")),
                    [&](const Status& st, const bus::AckToken&) { delivered += st.ok() ? 1 : 0; })
          .ok());
  EXPECT_TRUE((*publisher)->Flush(30s).ok());
  EXPECT_EQ(delivered.load(), 1);
  EXPECT_EQ(called.load(), 0) << "a refused message's callback must never run";
}

TEST_P(KafkaPipelineTest, BrokerCheckAnswersOkWhileUpAndUnavailableWhileDown) {
  EXPECT_TRUE(publisher_->CheckBroker(5s).ok());
  BrokerDown();
  const Status down = publisher_->CheckBroker(1s);
  BrokerUp();
  EXPECT_EQ(down.code(), StatusCode::kUnavailable) << down.ToString();
  EXPECT_TRUE(WaitUntil([&] { return publisher_->CheckBroker(1s).ok(); }, kWait))
      << "the check recovers once the broker is back";
}

TEST(KafkaPublisherTest, BrokerCheckNamesAnAddressWhereNothingListens) {
  kafka::KafkaOptions o;
  o.brokers = "127.0.0.1:1";  // nothing listens on port 1
  auto publisher = kafka::KafkaPublisher::Create(o);
  ASSERT_TRUE(publisher.has_value());
  const Status s = (*publisher)->CheckBroker(500ms);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("127.0.0.1:1"), std::string::npos) << s.ToString();
}

TEST_P(KafkaPipelineTest, EnsureTopicCreatesATopicThatARegexSubscriberThenReads) {
  kafka::KafkaOptions ko;
  ko.brokers = bootstrap();
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
  ASSERT_TRUE(
      publisher_->Publish(m, [&](const Status& st, const bus::AckToken&) { delivered = st.ok(); })
          .ok());
  ASSERT_TRUE(publisher_->Flush(10s).ok());
  ASSERT_TRUE(delivered.load());

  // Usually 3 to 6 s (a metadata refresh, then a rebalance). A pattern that matched no topic
  // when the consumer joined can delay its next join by ~20 s on librdkafka 2.0.2 (see
  // cli/stack_commands.cc), and more on a loaded machine (CI measured over 30 s once).
  std::vector<bus::InboundMessage> got;
  const auto deadline = Clock::now() + kWait;
  while (got.empty() && Clock::now() < deadline) got = (*sub)->Poll(10, 200ms, 0ms);
  ASSERT_EQ(got.size(), 1u) << "the regex subscriber never saw the new topic";
  EXPECT_EQ(got[0].message.topic, "kadr.replies.gw-test");
  EXPECT_EQ(got[0].message.key, "k");
  EXPECT_TRUE((*sub)->Close().ok());
}

// A frame from another language: Java, with Apache Kafka's own client (kafka-clients, from the
// broker's jars), a single-file program that publishes the frame by the documented contract
// (docs/protocol.md) and reads its result back. Apache Kafka only: the 4.x Java client gets
// no topic metadata from the embedded broker (librdkafka 2.0.2's mock cluster), measured.
TEST_P(ApacheKafkaPipelineTest, FrameFromAJavaProducerIsAnsweredToAJavaConsumer) {
  StartWorker("w1");
  const auto image = dir_ / "white.jpg";
  ASSERT_TRUE(cv::imwrite(image.string(), cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(255))));
  const std::string cmd = "timeout 120 java -cp '" + testing::ApacheKafka::Home() +
                          "/libs/*' -Dlog4j2.configurationFile=" + KADR_SOURCE_DIR +
                          "/deploy/kafka/log4j2.properties " + KADR_SOURCE_DIR +
                          "/tests/integration/foreign/ForeignClient.java " + bootstrap() + " " +
                          FramesTopic() + " java-frame-1 " + image.string() + " 2>&1";
  const auto [code, out] = testing::Shell(cmd);
  ASSERT_EQ(code, 0) << out;
  const std::string json_text = out.substr(out.find("result: ") + 8);
  const auto j = nlohmann::json::parse(json_text.substr(0, json_text.find('\n')), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["status"], "ok") << out;
  EXPECT_EQ(j["frame"]["id"], "java-frame-1");
  EXPECT_EQ(j["frame"]["stream"], "java-cam");
  ASSERT_FALSE(j["detections"].empty()) << out;
  EXPECT_EQ(j["detections"][0]["label"], "bright");
}

TEST_P(KafkaPipelineTest, FramesStoredBeforeABrokerRestartAreProcessedAfterIt) {
  // No worker yet: the frames wait in the broker (on disk, for Apache Kafka) through a
  // restart, and a worker that starts after it answers every one.
  std::vector<std::string> ids;
  const auto white = EncodeImage(true, ".jpg");
  for (int i = 0; i < 40; ++i) {
    ids.push_back("stored-" + std::to_string(i));
    Publish(Frame(ids.back(), white));
  }
  ASSERT_TRUE(publisher_->Flush(30s).ok());
  ASSERT_EQ(failed_deliveries_.load(), 0);
  BrokerDown();
  std::this_thread::sleep_for(1s);  // the broker is gone for a moment, not a wait
  BrokerUp();
  StartWorker("w1");
  StartCollector();
  ExpectAllAnswered(ids);
  EXPECT_EQ(collector_->Total(), ids.size()) << "each stored frame answered once";
}

TEST_P(KafkaPipelineTest, AWorkerThatJoinsTakesPartitionsWithoutLoss) {
  const std::vector<std::string> flags = {"--session-timeout-ms", "6000"};
  WorkerProcess& a = StartWorker("a", flags);
  ASSERT_TRUE(WaitAssigned(a));
  StartCollector({std::string(protocol::kResultsTopic), FramesTopic()});
  const auto ids = FeedFrames("f", 1200, 20ms);
  ASSERT_TRUE(WaitUntil([&] { return collector_->Distinct() >= 20; }, kWait));
  WorkerProcess& b = StartWorker("b", flags);
  ASSERT_TRUE(WaitShared(a, b));
  ASSERT_LT(published_.load(), 1200) << "the rebalance must happen while frames flow";
  ExpectAllAnswered(ids);
  EXPECT_TRUE(a.Running() && b.Running());
  // At-least-once: a frame is answered again only when its partition moved while the frame
  // was taken but not committed, so once more per rebalance at most. Apache Kafka's
  // coordinator rebalances once for the join and waits for the old owner to give its
  // partitions up (and commit) before the new one starts: no frame more than twice, at most
  // the worker's pipeline depth (16 by default) twice. The embedded broker's coordinator
  // does not wait and may rebalance twice for one join (measured: 26 to 175 frames answered
  // again of 1200, one of them three times after two rebalances).
  const std::size_t duplicates = collector_->Total() - collector_->Distinct();
  const int rebalances = std::max(a.Revocations(), 1);
  EXPECT_LE(collector_->MaxResultsPerFrame(), static_cast<std::size_t>(1 + rebalances))
      << "rebalances seen by the first worker: " << rebalances;
  if (GetParam() == BrokerKind::kApache) {
    EXPECT_LE(collector_->MaxResultsPerFrame(), 2u);
    EXPECT_LE(duplicates, 16u) << "results=" << collector_->Total();
  }
  std::cout << "results=" << collector_->Total() << " distinct=" << collector_->Distinct()
            << " duplicates=" << duplicates << "\n";
}

// A JPEG of noise just under kadr's frame limit (16 MiB): the largest frame a client may send.
std::vector<std::uint8_t> NoiseJpegOfAbout(std::size_t bytes) {
  cv::RNG rng(7);
  int side = 1500;
  std::vector<std::uint8_t> out;
  for (int attempt = 0; attempt < 6; ++attempt) {
    cv::Mat noise(side, side, CV_8UC3);
    rng.fill(noise, cv::RNG::UNIFORM, 0, 256);
    out.clear();
    cv::imencode(".jpg", noise, out, {cv::IMWRITE_JPEG_QUALITY, 95});
    const double ratio = static_cast<double>(bytes) / static_cast<double>(out.size());
    if (out.size() <= bytes && ratio < 1.03) break;
    side = static_cast<int>(side * std::sqrt(ratio) * 0.995);
  }
  return out;
}

TEST_P(KafkaPipelineTest, AFrameNearTheSizeLimitIsAnsweredAndOneOverItIsRefused) {
  StartWorker("w1");
  StartCollector();
  const std::size_t limit = kafka::KafkaOptions{}.max_message_bytes;
  const auto near = NoiseJpegOfAbout(limit - (256u << 10));
  ASSERT_GT(near.size(), limit - (1u << 20)) << "the test frame must be near the limit";
  ASSERT_LT(near.size(), limit);
  Publish(Frame("near-limit", near));
  ExpectAllAnswered({"near-limit"});

  // One over kadr's limit: refused by the publisher before it reaches the broker.
  std::vector<std::uint8_t> over = near;
  over.resize(limit + 1, 0);
  std::atomic<int> called{0};
  const Status s = publisher_->Publish(Frame("over-limit", over),
                                       [&](const Status&, const bus::AckToken&) { ++called; });
  EXPECT_EQ(s.code(), StatusCode::kTooLarge) << s.ToString();
  EXPECT_NE(s.message().find(std::to_string(limit)), std::string::npos) << s.ToString();
  EXPECT_EQ(called.load(), 0);
}

TEST_P(ApacheKafkaPipelineTest, TheBrokerRefusesAFrameOverTheTopicLimitWithAClearError) {
  // A client without kadr's own check (kcat, allowed 40 MB) sends a frame over the frames
  // topic's max.message.bytes (17 MiB): the broker refuses it and says why.
  const auto big = dir_ / "big.bin";
  {
    std::ofstream f(big, std::ios::binary);
    const std::string chunk(1 << 20, 'x');
    for (int i = 0; i < 18; ++i) f << chunk;
  }
  const auto [code, out] = testing::Shell(
      "timeout 60 kcat -P -b " + bootstrap() + " -t " + FramesTopic() +
      " -X message.max.bytes=40000000 -k big -H kadr-frame-id=big " + big.string() + " 2>&1");
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("too large"), std::string::npos) << out;
}

TEST_P(ApacheKafkaPipelineTest, TopicsCreatesEveryTopicWithItsConfigs) {
  const auto [code, out] = testing::Shell(std::string(KADR_BINARY) +
                                          " --log-level warn topics --models tiny,other "
                                          "--partitions 3 --brokers " +
                                          bootstrap() + " 2>&1");
  ASSERT_EQ(code, 0) << out;
  for (const auto& spec : protocol::TopicPlan({"tiny", "other"}, 3)) {
    EXPECT_NE(out.find(spec.name + ": ready"), std::string::npos) << spec.name << "\n" << out;
    const std::string described = apache_->DescribeTopicConfigs(spec.name);
    ASSERT_FALSE(described.empty()) << spec.name;
    for (const auto& [key, value] : spec.configs) {
      // Topics this test's SetUp made first keep their configs (the same ones).
      EXPECT_NE(described.find(key + "=" + value), std::string::npos)
          << spec.name << " " << key << "=" << value << "\n"
          << described;
    }
  }
  const auto partitions = testing::Shell("timeout 10 kcat -L -b " + bootstrap() +
                                         " -t kadr.frames.other | grep -c 'partition '");
  EXPECT_EQ(partitions.out.substr(0, 1), "3") << partitions.out;
  EXPECT_EQ(testing::Shell(std::string(KADR_BINARY) +
                           " --log-level warn topics --models tiny "
                           "--brokers " +
                           bootstrap())
                .exit_code,
            0)
      << "idempotent";
}

TEST_P(KafkaPipelineTest, TwoGatewaysGetTheirOwnReplies) {
  StartWorker("w1");
  std::vector<std::unique_ptr<testing::ChildProcess>> gateways;
  std::vector<int> ports;
  for (const std::string id : {"gw-a", "gw-b"}) {
    gateways.push_back(std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{KADR_BINARY, "--models-dir", (dir_ / "models").string(), "gateway",
                                 "--models", kModel, "--brokers", bootstrap(), "--http-port", "0",
                                 "--instance-id", id},
        dir_ / (id + ".log")));
    ports.push_back(testing::WaitForHttpPort(*gateways.back(), kWait));
    ASSERT_NE(ports.back(), 0) << gateways.back()->LogTail();
  }
  for (std::size_t g = 0; g < gateways.size(); ++g) {
    ASSERT_TRUE(testing::WaitReady(ports[g], kWait)) << gateways[g]->LogTail();
  }
  std::vector<std::thread> threads;
  std::vector<std::string> failures(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto c = testing::LoopbackClient(ports[static_cast<std::size_t>(i % 2)]);
      const bool white = (i / 2) % 2 == 0;
      const auto img = EncodeImage(white, ".jpg");
      auto r =
          c.Post("/api/v1/detect?model=tiny", std::string(img.begin(), img.end()), "image/jpeg");
      const auto j = r ? nlohmann::json::parse(r->body, nullptr, false) : nlohmann::json();
      if (!r || r->status != 200 || j.is_discarded() || j["detections"].empty() ||
          j["detections"][0]["label"] != (white ? "bright" : "dark")) {
        failures[static_cast<std::size_t>(i)] =
            r ? std::to_string(r->status) + " " + r->body : "no response";
      }
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < failures.size(); ++i) {
    EXPECT_EQ(failures[i], "") << "request " << i << " to gateway " << i % 2 << "\n"
                               << gateways[i % 2]->LogTail();
  }
  // Each gateway has a reply topic of its own.
  const auto list = testing::Shell("timeout 10 kcat -L -b " + bootstrap());
  EXPECT_NE(list.out.find("kadr.replies.gw-a"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("kadr.replies.gw-b"), std::string::npos) << list.out;
  for (auto& g : gateways) EXPECT_EQ(g->Stop(30s), 0) << g->LogTail();
}

INSTANTIATE_TEST_SUITE_P(Brokers, KafkaPipelineTest,
                         ::testing::Values(BrokerKind::kEmbedded, BrokerKind::kApache), BrokerName);
INSTANTIATE_TEST_SUITE_P(Brokers, EmbeddedBrokerPipelineTest,
                         ::testing::Values(BrokerKind::kEmbedded), BrokerName);
INSTANTIATE_TEST_SUITE_P(Brokers, ApacheKafkaPipelineTest, ::testing::Values(BrokerKind::kApache),
                         BrokerName);

}  // namespace
}  // namespace kadr
