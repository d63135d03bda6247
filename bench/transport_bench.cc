// transport_bench: kadr's Kafka transport against plain librdkafka, in one process, on one
// embedded broker (librdkafka's mock cluster, kafka::EmbeddedBroker).
//
//   1. raw       M frames (~100 KB JPEG) produced with the librdkafka C API (acks=all,
//                idempotent, linger.ms 1) and consumed back by a plain consumer
//                (fetch.wait.max.ms 10); first produce -> last consume.
//   2. kadr      the same M frames with kadr headers: KafkaPublisher -> kadr.frames.null ->
//                worker::WorkerService (null model, no drawing; its own KafkaSubscriber and
//                KafkaPublisher, on a thread of this process) -> kadr.results -> a
//                KafkaSubscriber at the "requester" that matches results by frame id;
//                first publish -> last result. Both move each frame once through the broker;
//                kadr also moves a small JSON result back.
//   3. latency   one frame at a time (publish, wait for its result, repeat) with the null
//                model, and with yolox_nano (drawing on, as a user gets it) when
//                $KADR_TEST_DATA is set: round trip, and round trip minus the result's
//                timings_ms["inference"] (what kadr adds on top of the forward pass).
//   1b. raw echo plain librdkafka in kadr's topology: a consumer+producer thread answers each
//                frame with 300 bytes on a reply topic, so it also makes two broker trips.
// The throughput phases alternate for --reps repetitions; the summary takes the median.
// Every path keeps at most --window frames in flight: librdkafka 2.0.2's mock broker keeps
// only the newest 5 MB of each partition, so a producer further ahead than that loses frames.
// Defaults (M=10000, 5 reps, N=200) take about 1.5 minutes on a 2-core machine.
//
// This is a load driver, not a Google Benchmark program: it measures whole-pipeline
// throughput. It is also the one place outside src/kafka/ that calls librdkafka directly,
// because the baseline must be plain librdkafka. See docs/performance.md.

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <CLI/CLI.hpp>
#include <librdkafka/rdkafka.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "bench_stats.h"
#include "bus/bus.h"
#include "common/clock.h"
#include "inference/detail/builtin_detectors.h"
#include "inference/model_registry.h"
#include "kafka/embedded_broker.h"
#include "kafka/kafka_bus.h"
#include "protocol/frame.h"
#include "worker/worker_service.h"

namespace kadr::bench {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

struct Config {
  std::string brokers;  // empty: an embedded broker in this process
  int frames = 10000;   // M: frames per throughput repetition
  int reps = 5;         // throughput repetitions (raw, raw echo, kadr alternate)
  int rtt = 200;        // N: sequential round trips with the null model
  int model_rtt = 200;
  std::string model = "yolox_nano";
  int payload_kb = 100;    // target JPEG size
  int partitions = 4;      // of every topic
  int fetch_wait_ms = 10;  // consumers' fetch.wait.max.ms, raw and kadr alike
  int linger_ms = -1;      // producers' linger.ms, raw and kadr alike; -1: kadr's default
  std::size_t worker_batch = worker::WorkerOptions{}.max_batch;
  int worker_linger_ms = static_cast<int>(worker::WorkerOptions{}.batch_linger.count());
  // Frames in flight (sent, not yet consumed / answered), both paths. The embedded broker
  // keeps only the newest 5 MB per partition (librdkafka 2.0.2's mock), so a producer that
  // runs further ahead of its consumer than that loses messages.
  int window = 100;
  int timeout_s = 30;  // per wait
};

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

// VmHWM from /proc/self/status, MB; -1 when unknown.
long PeakRssMb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6) / 1024;
  }
  return -1;
}

std::vector<std::uint8_t> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A real JPEG of about `target` bytes: street.jpg (else bus.jpg) from $KADR_TEST_DATA/media,
// else a noisy generated image, resized to 1024 px wide and encoded at the quality that
// comes closest. The null model probes the header, so the bytes must be a JPEG.
std::vector<std::uint8_t> MakePayload(const char* test_data, std::size_t target) {
  cv::Mat source;
  if (test_data != nullptr) {
    for (const char* name : {"street.jpg", "bus.jpg"}) {
      const fs::path path = fs::path(test_data) / "media" / name;
      if (!fs::exists(path)) continue;
      source = cv::imdecode(ReadFile(path), cv::IMREAD_COLOR);
      if (!source.empty()) {
        std::printf("payload source: %s (%dx%d)\n", path.c_str(), source.cols, source.rows);
        break;
      }
    }
  }
  if (source.empty()) {
    source = cv::Mat(720, 1280, CV_8UC3);
    cv::randu(source, cv::Scalar::all(0), cv::Scalar::all(255));
    cv::GaussianBlur(source, source, {9, 9}, 3);
    std::printf("payload source: generated 1280x720 noise image\n");
  }
  cv::Mat resized;
  const int width = 1024;
  cv::resize(source, resized, {width, source.rows * width / source.cols}, 0, 0, cv::INTER_AREA);
  std::vector<std::uint8_t> best;
  int best_quality = 0;
  for (int q = 30; q <= 98; q += 2) {
    std::vector<std::uint8_t> jpeg;
    cv::imencode(".jpg", resized, jpeg, {cv::IMWRITE_JPEG_QUALITY, q});
    const auto dist = [&](const std::vector<std::uint8_t>& v) {
      return v.size() > target ? v.size() - target : target - v.size();
    };
    if (best.empty() || dist(jpeg) < dist(best)) {
      best = std::move(jpeg);
      best_quality = q;
    }
  }
  std::printf("payload: %dx%d JPEG, quality %d, %zu bytes\n", resized.cols, resized.rows,
              best_quality, best.size());
  return best;
}

struct Throughput {
  double seconds = 0;          // first produce -> last consume (or last result)
  double produce_seconds = 0;  // first produce -> last delivery report
  double frames_per_s = 0;
  double mb_per_s = 0;          // input bytes (frame values), MB = 1e6 bytes
  double cpu_us_per_frame = 0;  // this process's CPU time (all threads, broker included)
};

Throughput MakeThroughput(int frames, std::size_t bytes, double seconds, double produce_seconds,
                          double cpu_seconds) {
  return {seconds, produce_seconds, frames / seconds,
          static_cast<double>(bytes) * frames / 1e6 / seconds, cpu_seconds * 1e6 / frames};
}

// CPU time of the whole process (user + system) since construction.
class CpuClock {
 public:
  CpuClock() : start_(Now()) {}
  double Seconds() const { return Now() - start_; }

 private:
  static double Now() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  }
  double start_;
};

// ---------------------------------------------------------------------------------------
// 1. Plain librdkafka.

struct RdKafka {
  rd_kafka_t* rk = nullptr;
  ~RdKafka() {
    if (rk != nullptr) rd_kafka_destroy(rk);
  }
};

bool Set(rd_kafka_conf_t* conf, const char* key, const std::string& value) {
  char err[256];
  if (rd_kafka_conf_set(conf, key, value.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
    std::fprintf(stderr, "raw: %s: %s\n", key, err);
    return false;
  }
  return true;
}

std::atomic<int> g_raw_failed{0};

void RawDelivery(rd_kafka_t*, const rd_kafka_message_t* msg, void*) {
  if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) ++g_raw_failed;
}

rd_kafka_t* NewRawProducer(const Config& cfg, const std::string& bootstrap) {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (!Set(conf, "bootstrap.servers", bootstrap) || !Set(conf, "acks", "all") ||
      !Set(conf, "enable.idempotence", "true") ||
      !Set(conf, "linger.ms", std::to_string(cfg.linger_ms))) {
    rd_kafka_conf_destroy(conf);
    return nullptr;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, &RawDelivery);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (rk == nullptr) std::fprintf(stderr, "raw producer: %s\n", err);
  return rk;
}

rd_kafka_t* NewRawConsumer(const Config& cfg, const std::string& bootstrap,
                           const std::string& group, const std::string& topic) {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (!Set(conf, "bootstrap.servers", bootstrap) || !Set(conf, "group.id", group) ||
      !Set(conf, "auto.offset.reset", "earliest") ||
      !Set(conf, "fetch.wait.max.ms", std::to_string(cfg.fetch_wait_ms))) {
    rd_kafka_conf_destroy(conf);
    return nullptr;
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (rk == nullptr) {
    std::fprintf(stderr, "raw consumer: %s\n", err);
    return nullptr;
  }
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  return rk;
}

// Queues one message, waiting while the producer's queue is full.
bool RawProduce(rd_kafka_t* rk, const std::string& topic, const void* key, std::size_t key_len,
                const void* value, std::size_t len) {
  while (true) {
    const rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key, key_len),
                          RD_KAFKA_V_VALUE(const_cast<void*>(value), len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      std::fprintf(stderr, "raw produce: %s\n", rd_kafka_err2str(e));
      return false;
    }
    rd_kafka_poll(rk, 5);
  }
  rd_kafka_poll(rk, 0);
  return true;
}

// Plain librdkafka. `echo` false: producer -> topic -> consumer (one trip through the
// broker). `echo` true: the same topology as kadr's, a plain consumer+producer thread in the
// middle that answers each message with a small reply on `topic`.reply.
std::optional<Throughput> RunRaw(const Config& cfg, const std::string& bootstrap,
                                 const std::string& topic, const std::vector<std::uint8_t>& payload,
                                 bool echo) {
  const std::string reply_topic = topic + ".reply";
  RdKafka producer{NewRawProducer(cfg, bootstrap)};
  RdKafka consumer{NewRawConsumer(cfg, bootstrap, "bench." + topic, echo ? reply_topic : topic)};
  if (producer.rk == nullptr || consumer.rk == nullptr) return std::nullopt;
  RdKafka echo_producer, echo_consumer;
  std::jthread echoer;
  if (echo) {
    echo_producer.rk = NewRawProducer(cfg, bootstrap);
    echo_consumer.rk = NewRawConsumer(cfg, bootstrap, "bench.echo." + topic, topic);
    if (echo_producer.rk == nullptr || echo_consumer.rk == nullptr) return std::nullopt;
    echoer = std::jthread([&](std::stop_token st) {
      const std::string reply(300, 'r');  // about a null-model result's JSON
      while (!st.stop_requested()) {
        rd_kafka_message_t* msg = rd_kafka_consumer_poll(echo_consumer.rk, 50);
        if (msg == nullptr) continue;
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          (void)RawProduce(echo_producer.rk, reply_topic, msg->key, msg->key_len, reply.data(),
                           reply.size());
        }
        rd_kafka_message_destroy(msg);
      }
      rd_kafka_flush(echo_producer.rk, 10000);
      rd_kafka_consumer_close(echo_consumer.rk);
    });
  }

  // Consumes until `count` messages have arrived; the time of the last one. `consumed`
  // counts them for the producer's in-flight window.
  std::mutex mu;
  std::condition_variable cv;
  int consumed = 0;
  const auto consume = [&](int count) -> std::optional<SteadyClock::time_point> {
    const auto deadline = SteadyClock::now() + std::chrono::seconds(cfg.timeout_s);
    int got = 0;
    SteadyClock::time_point last;
    while (got < count && SteadyClock::now() < deadline) {
      rd_kafka_message_t* msg = rd_kafka_consumer_poll(consumer.rk, 100);
      if (msg == nullptr) continue;
      if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++got;
        last = SteadyClock::now();
        {
          std::lock_guard lock(mu);
          consumed = got;
        }
        cv.notify_one();
      }
      rd_kafka_message_destroy(msg);
    }
    if (got < count) return std::nullopt;
    return last;
  };
  const auto produce = [&](const std::string& key) {
    return RawProduce(producer.rk, topic, key.data(), key.size(), payload.data(), payload.size());
  };

  // Warm-up: one message end to end, so the groups are joined and connections are up.
  g_raw_failed = 0;
  if (!produce("warmup") || !consume(1)) {
    std::fprintf(stderr, "raw: warm-up message did not come back\n");
    return std::nullopt;
  }
  rd_kafka_flush(producer.rk, 10000);

  // The consumer polls on its own thread, as a real consumer process would.
  std::optional<SteadyClock::time_point> last;
  consumed = 0;
  std::thread reader([&] { last = consume(cfg.frames); });
  const CpuClock cpu;
  const auto t0 = SteadyClock::now();
  for (int i = 0; i < cfg.frames; ++i) {
    {
      std::unique_lock lock(mu);
      if (!cv.wait_for(lock, std::chrono::seconds(cfg.timeout_s),
                       [&] { return i - consumed < cfg.window; })) {
        break;
      }
    }
    if (!produce("f" + std::to_string(i))) break;
  }
  rd_kafka_flush(producer.rk, cfg.timeout_s * 1000);
  const auto produced = SteadyClock::now();
  reader.join();
  const double cpu_s = cpu.Seconds();
  rd_kafka_consumer_close(consumer.rk);
  if (!last || g_raw_failed > 0) {
    std::fprintf(stderr, "raw: incomplete (failed deliveries %d)\n", g_raw_failed.load());
    return std::nullopt;
  }
  return MakeThroughput(cfg.frames, payload.size(), Seconds(*last - t0), Seconds(produced - t0),
                        cpu_s);
}

// ---------------------------------------------------------------------------------------
// 2. and 3. kadr.

// The requester's side: a KafkaSubscriber on kadr.results, polled on its own thread, that
// records when each expected frame id's first result arrives.
class ResultCollector {
 public:
  explicit ResultCollector(std::unique_ptr<kafka::KafkaSubscriber> sub)
      : sub_(std::move(sub)), thread_([this](std::stop_token st) { Loop(st); }) {}
  ~ResultCollector() {
    thread_.request_stop();
    thread_.join();
    (void)sub_->Close();
  }

  void Expect(const std::vector<std::string>& ids) {
    std::lock_guard lock(mu_);
    expected_.clear();
    expected_.insert(ids.begin(), ids.end());
    arrived_.clear();
  }

  // Waits until every expected id has a result; false on timeout.
  bool WaitAll(milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return arrived_.size() == expected_.size(); });
  }
  // Waits until at least `n` expected ids have a result; false on timeout.
  bool WaitArrived(std::size_t n, milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return arrived_.size() >= n; });
  }

  struct Arrival {
    SteadyClock::time_point at;
    std::string json;
  };
  // The results of the last Expect() set that have arrived.
  std::unordered_map<std::string, Arrival> Take() {
    std::lock_guard lock(mu_);
    return std::move(arrived_);
  }

 private:
  void Loop(std::stop_token st) {
    while (!st.stop_requested()) {
      auto batch = sub_->Poll(256, milliseconds(50), milliseconds(0));
      const auto now = SteadyClock::now();
      bool progress = false;
      {
        std::lock_guard lock(mu_);
        for (auto& in : batch) {
          auto id = in.message.headers.Get(protocol::header::kFrameId);
          if (id && expected_.contains(*id) && !arrived_.contains(*id)) {
            arrived_.emplace(
                *id, Arrival{now, std::string(in.message.value.begin(), in.message.value.end())});
            progress = true;
          }
        }
      }
      for (auto& in : batch) sub_->Ack(in.token);
      if (progress) cv_.notify_all();
    }
  }

  std::unique_ptr<kafka::KafkaSubscriber> sub_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_set<std::string> expected_;
  std::unordered_map<std::string, Arrival> arrived_;
  std::jthread thread_;
};

// A worker of one model, on its own thread with its own Kafka clients, as `kadr worker` runs.
class InProcessWorker {
 public:
  static std::unique_ptr<InProcessWorker> Start(const kafka::KafkaOptions& kopts,
                                                std::shared_ptr<inference::Detector> detector,
                                                const std::string& model,
                                                worker::WorkerOptions wopts) {
    auto w = std::unique_ptr<InProcessWorker>(new InProcessWorker());
    auto pub = kafka::KafkaPublisher::Create(kopts);
    auto sub = kafka::KafkaSubscriber::Create(
        kopts, {protocol::WorkerGroup(model), {protocol::FramesTopic(model)}, "earliest"});
    if (!pub || !sub) {
      std::fprintf(stderr, "worker %s: cannot create Kafka clients\n", model.c_str());
      return nullptr;
    }
    w->pub_ = std::move(*pub);
    w->sub_ = std::move(*sub);
    w->service_ = std::make_unique<worker::WorkerService>(std::move(wopts), std::move(detector),
                                                          *w->pub_, *w->sub_);
    w->thread_ = std::jthread([s = w->service_.get()](std::stop_token st) {
      Status status = s->Run(st);
      if (!status.ok()) spdlog::warn("worker stopped error=\"{}\"", status.message());
    });
    return w;
  }
  ~InProcessWorker() {
    thread_.request_stop();
    thread_.join();
  }
  worker::WorkerStats stats() const { return service_->stats(); }

 private:
  InProcessWorker() = default;
  std::unique_ptr<kafka::KafkaPublisher> pub_;
  std::unique_ptr<kafka::KafkaSubscriber> sub_;
  std::unique_ptr<worker::WorkerService> service_;
  std::jthread thread_;  // last: stopped first
};

// The requester: publishes frames, collects results.
class Requester {
 public:
  Requester(std::unique_ptr<kafka::KafkaPublisher> pub, std::unique_ptr<ResultCollector> results)
      : pub_(std::move(pub)), results_(std::move(results)) {}

  ResultCollector& results() { return *results_; }

  bool Publish(const std::string& model, const std::string& frame_id, bool draw,
               const std::vector<std::uint8_t>& jpeg) {
    protocol::FrameMeta meta;
    meta.frame_id = frame_id;
    meta.stream_id = frame_id;
    meta.model = model;
    meta.reply_to = std::string(protocol::kResultsTopic);
    meta.capture_ms = std::chrono::duration_cast<milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    meta.draw = draw;
    bus::Message m{protocol::FramesTopic(model), frame_id, jpeg, {}};
    protocol::EncodeFrameHeaders(meta, m.headers);
    Status s = pub_->Publish(std::move(m), [this](const Status& st, const bus::AckToken&) {
      ++delivered_;
      if (!st.ok()) ++failed_;
    });
    if (!s.ok()) {
      std::fprintf(stderr, "publish: %s\n", s.ToString().c_str());
      return false;
    }
    return true;
  }
  Status Flush(milliseconds timeout) { return pub_->Flush(timeout); }
  int failed() const { return failed_.load(); }

 private:
  std::unique_ptr<kafka::KafkaPublisher> pub_;
  std::unique_ptr<ResultCollector> results_;
  std::atomic<int> delivered_{0}, failed_{0};
};

std::optional<Throughput> RunKadr(const Config& cfg, Requester& req, int rep,
                                  const std::vector<std::uint8_t>& payload) {
  const std::string model = inference::kNullModel;
  const std::string prefix = "tp" + std::to_string(rep) + "-";
  // Warm-up: one frame end to end (worker and requester joined, connections up).
  req.results().Expect({prefix + "warmup"});
  if (!req.Publish(model, prefix + "warmup", false, payload) ||
      !req.results().WaitAll(std::chrono::seconds(cfg.timeout_s))) {
    std::fprintf(stderr, "kadr: warm-up frame got no result\n");
    return std::nullopt;
  }
  (void)req.Flush(std::chrono::seconds(10));

  std::vector<std::string> ids;
  ids.reserve(static_cast<std::size_t>(cfg.frames));
  for (int i = 0; i < cfg.frames; ++i) ids.push_back(prefix + std::to_string(i));
  req.results().Expect(ids);
  const CpuClock cpu;
  const auto t0 = SteadyClock::now();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i >= static_cast<std::size_t>(cfg.window) &&
        !req.results().WaitArrived(i - static_cast<std::size_t>(cfg.window) + 1,
                                   std::chrono::seconds(cfg.timeout_s))) {
      break;
    }
    if (!req.Publish(model, ids[i], false, payload)) return std::nullopt;
  }
  (void)req.Flush(std::chrono::seconds(cfg.timeout_s));
  const auto produced = SteadyClock::now();
  const bool all = req.results().WaitAll(std::chrono::seconds(cfg.timeout_s));
  const double cpu_s = cpu.Seconds();
  auto arrived = req.results().Take();
  if (!all) {
    std::fprintf(stderr, "kadr: only %zu of %d results arrived\n", arrived.size(), cfg.frames);
    return std::nullopt;
  }
  SteadyClock::time_point last = t0;
  for (const auto& [id, a] : arrived) last = std::max(last, a.at);
  return MakeThroughput(cfg.frames, payload.size(), Seconds(last - t0), Seconds(produced - t0),
                        cpu_s);
}

struct Latency {
  std::vector<double> rtt_ms;
  std::vector<double> minus_inference_ms;
  std::vector<double> inference_ms;
};

std::optional<Latency> RunLatency(const Config& cfg, Requester& req, const std::string& model,
                                  int n, bool draw, const std::vector<std::uint8_t>& payload) {
  Latency out;
  const int warmup = 5;
  for (int i = -warmup; i < n; ++i) {
    const std::string id = "rt-" + model + "-" + std::to_string(i);
    req.results().Expect({id});
    const auto t0 = SteadyClock::now();
    if (!req.Publish(model, id, draw, payload)) return std::nullopt;
    if (!req.results().WaitAll(std::chrono::seconds(cfg.timeout_s))) {
      std::fprintf(stderr, "latency %s: no result for %s\n", model.c_str(), id.c_str());
      return std::nullopt;
    }
    auto arrived = req.results().Take();
    const auto& a = arrived.at(id);
    if (i < 0) continue;
    const double rtt = std::chrono::duration<double, std::milli>(a.at - t0).count();
    auto result = protocol::FrameResultFromJson(a.json);
    if (!result || result->status != protocol::FrameStatus::kOk) {
      std::fprintf(stderr, "latency %s: bad result %s\n", model.c_str(), a.json.c_str());
      return std::nullopt;
    }
    const auto it = result->result.timings_ms.find("inference");
    const double inference = it == result->result.timings_ms.end() ? 0.0 : it->second;
    out.rtt_ms.push_back(rtt);
    out.inference_ms.push_back(inference);
    out.minus_inference_ms.push_back(rtt - inference);
  }
  return out;
}

void PrintLatency(const char* name, const std::vector<double>& v) {
  std::printf("  %-34s p50 %7.2f ms   p99 %7.2f ms   mean %7.2f ms   max %7.2f ms\n", name,
              Percentile(v, 50), Percentile(v, 99), Mean(v),
              v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()));
}

int Main(int argc, char** argv) {
  Config cfg;
  CLI::App app{
      "kadr transport benchmark: plain librdkafka vs kadr's pipeline on the embedded broker"};
  app.add_option("--brokers", cfg.brokers,
                 "Kafka bootstrap (e.g. from scripts/kafka.sh; default: an embedded broker)");
  app.add_option("--frames,-m", cfg.frames, "M: frames per throughput repetition")
      ->envname("KADR_BENCH_FRAMES")
      ->check(CLI::Range(10, 1000000))
      ->capture_default_str();
  app.add_option("--reps", cfg.reps, "throughput repetitions (raw and kadr alternate)")
      ->envname("KADR_BENCH_REPS")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--rtt,-n", cfg.rtt, "N: sequential round trips with the null model")
      ->envname("KADR_BENCH_RTT")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--model-rtt", cfg.model_rtt, "sequential round trips with --model (0: skip)")
      ->envname("KADR_BENCH_MODEL_RTT")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--model", cfg.model, "ONNX model from $KADR_TEST_DATA/models for latency")
      ->capture_default_str();
  app.add_option("--payload-kb", cfg.payload_kb, "target JPEG size, KB")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--window", cfg.window,
                 "frames in flight (sent, not yet consumed/answered); keep under ~5 MB per "
                 "partition, the embedded broker's log size")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--partitions", cfg.partitions, "partitions per topic")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--fetch-wait-ms", cfg.fetch_wait_ms, "consumers' fetch.wait.max.ms (both paths)")
      ->check(CLI::Range(1, 5000))
      ->capture_default_str();
  app.add_option("--linger-ms", cfg.linger_ms, "producers' linger.ms (both paths)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--worker-batch", cfg.worker_batch, "worker micro-batch size")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--worker-linger-ms", cfg.worker_linger_ms, "worker batch linger, ms")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  if (cfg.linger_ms < 0) cfg.linger_ms = cfg.brokers.empty() ? kafka::kEmbeddedLingerMs : 0;
  const char* test_data = std::getenv("KADR_TEST_DATA");
  const auto payload = MakePayload(test_data, static_cast<std::size_t>(cfg.payload_kb) * 1000);

  const std::vector<std::string> kadr_topics = {
      protocol::FramesTopic(inference::kNullModel), protocol::FramesTopic(cfg.model),
      std::string(protocol::kResultsTopic), std::string(protocol::kAnnotatedTopic),
      std::string(protocol::kDeadLetterTopic)};
  std::unique_ptr<kafka::EmbeddedBroker> embedded;
  kafka::KafkaOptions kopts;
  if (cfg.brokers.empty()) {
    kafka::EmbeddedBrokerOptions bopts;
    bopts.partitions = cfg.partitions;
    bopts.topics = kadr_topics;
    auto broker = kafka::EmbeddedBroker::Create(bopts);
    if (!broker) {
      std::fprintf(stderr, "embedded broker: %s\n", broker.error().ToString().c_str());
      return 1;
    }
    embedded = std::move(*broker);
    kopts.brokers = embedded->bootstrap();
  } else {
    kopts.brokers = cfg.brokers;
  }
  kopts.fetch_wait_max_ms = cfg.fetch_wait_ms;
  kopts.linger_ms = cfg.linger_ms;
  std::unique_ptr<kafka::KafkaPublisher> admin;  // creates the topics on Apache Kafka
  if (!embedded) {
    auto p = kafka::KafkaPublisher::Create(kopts);
    if (!p) {
      std::fprintf(stderr, "publisher: %s\n", p.error().ToString().c_str());
      return 1;
    }
    admin = std::move(*p);
  }
  // Topics of this run: on the embedded broker directly, on Apache Kafka with CreateTopics
  // (names made unique per run: an external broker keeps what earlier runs left).
  const std::string run_suffix = embedded ? "" : "." + std::to_string(getpid());
  const auto create_topic = [&](const std::string& t) -> Status {
    if (embedded) return embedded->CreateTopic(t, cfg.partitions);
    return admin->EnsureTopic(t, cfg.partitions, std::chrono::seconds(30));
  };
  if (!embedded) {
    for (const auto& t : kadr_topics) {
      if (Status s = create_topic(t); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
    }
  }
  std::printf(
      "%s %s, %d partitions per topic; M=%d frames x %d reps, N=%d (null), "
      "%d (%s); window=%d; fetch.wait.max.ms=%d linger.ms=%d worker batch=%zu linger=%d ms\n",
      embedded ? "embedded broker" : "Kafka", kopts.brokers.c_str(), cfg.partitions, cfg.frames,
      cfg.reps, cfg.rtt, cfg.model_rtt, cfg.model.c_str(), cfg.window, cfg.fetch_wait_ms,
      cfg.linger_ms, cfg.worker_batch, cfg.worker_linger_ms);

  inference::RegistryOptions ropts;
  if (test_data != nullptr) ropts.models_dirs = {fs::path(test_data) / "models"};
  auto registry = inference::ModelRegistry::Create(ropts);
  if (!registry) {
    std::fprintf(stderr, "registry: %s\n", registry.error().ToString().c_str());
    return 1;
  }
  auto null_detector = (*registry)->Get(inference::kNullModel);
  if (!null_detector) {
    std::fprintf(stderr, "null model: %s\n", null_detector.error().ToString().c_str());
    return 1;
  }

  worker::WorkerOptions wopts;
  wopts.max_batch = cfg.worker_batch;
  wopts.batch_linger = milliseconds(cfg.worker_linger_ms);
  wopts.processing.draw = false;  // `kadr worker --no-draw`
  auto null_worker = InProcessWorker::Start(kopts, *null_detector, inference::kNullModel, wopts);
  auto req_pub = kafka::KafkaPublisher::Create(kopts);
  auto req_sub = kafka::KafkaSubscriber::Create(
      kopts, {"bench.requester", {std::string(protocol::kResultsTopic)}, "earliest"});
  if (!null_worker || !req_pub || !req_sub) {
    std::fprintf(stderr, "cannot create the kadr clients\n");
    return 1;
  }
  Requester req(std::move(*req_pub), std::make_unique<ResultCollector>(std::move(*req_sub)));

  // Throughput: raw, raw echo and kadr, alternating.
  std::vector<Throughput> raw, echo, kadr;
  const auto print = [](const char* name, const Throughput& t) {
    std::printf("  %-16s %8.1f frames/s %7.1f MB/s  %6.1f us CPU/frame  (%.2f s; sent in %.2f s)\n",
                name, t.frames_per_s, t.mb_per_s, t.cpu_us_per_frame, t.seconds, t.produce_seconds);
  };
  for (int rep = 0; rep < cfg.reps; ++rep) {
    const std::string topic = "bench.raw." + std::to_string(rep) + run_suffix;
    const std::string echo_topic = "bench.echo." + std::to_string(rep) + run_suffix;
    for (const auto& t : {topic, echo_topic, echo_topic + ".reply"}) {
      if (Status s = create_topic(t); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
    }
    auto r = RunRaw(cfg, kopts.brokers, topic, payload, /*echo=*/false);
    auto e = RunRaw(cfg, kopts.brokers, echo_topic, payload, /*echo=*/true);
    auto k = RunKadr(cfg, req, rep, payload);
    if (!r || !e || !k) return 1;
    std::printf("rep %d\n", rep);
    print("raw", *r);
    print("raw echo", *e);
    print("kadr (null)", *k);
    std::fflush(stdout);
    raw.push_back(*r);
    echo.push_back(*e);
    kadr.push_back(*k);
  }
  const auto median = [](std::vector<Throughput> v) {
    std::sort(v.begin(), v.end(),
              [](const Throughput& a, const Throughput& b) { return a.seconds < b.seconds; });
    return v[v.size() / 2];
  };
  const Throughput raw_m = median(raw), echo_m = median(echo), kadr_m = median(kadr);

  std::optional<Latency> null_lat, model_lat;
  if (cfg.rtt > 0) {
    null_lat = RunLatency(cfg, req, inference::kNullModel, cfg.rtt, false, payload);
    if (!null_lat) return 1;
  }
  const auto null_stats = null_worker->stats();
  null_worker.reset();

  if (cfg.model_rtt > 0 && test_data != nullptr) {
    auto detector = (*registry)->Get(cfg.model);
    if (!detector) {
      std::fprintf(stderr, "model %s: %s (skipped)\n", cfg.model.c_str(),
                   detector.error().ToString().c_str());
    } else {
      worker::WorkerOptions mopts = wopts;
      mopts.processing.draw = true;  // as a user gets it
      auto model_worker = InProcessWorker::Start(kopts, *detector, cfg.model, mopts);
      if (!model_worker) return 1;
      model_lat = RunLatency(cfg, req, cfg.model, cfg.model_rtt, true, payload);
      if (!model_lat) return 1;
    }
  } else if (cfg.model_rtt > 0) {
    std::printf("KADR_TEST_DATA is not set: %s latency skipped\n", cfg.model.c_str());
  }

  std::printf("\n== Throughput (median of %d reps, M=%d frames of %zu bytes) ==\n", cfg.reps,
              cfg.frames, payload.size());
  print("raw", raw_m);
  print("raw echo", echo_m);
  print("kadr (null)", kadr_m);
  std::printf("  ratio kadr/raw       %.2f (goal >= 0.80)\n",
              kadr_m.frames_per_s / raw_m.frames_per_s);
  std::printf("  ratio kadr/raw echo  %.2f\n", kadr_m.frames_per_s / echo_m.frames_per_s);
  std::printf(
      "  raw: each frame goes through the broker once (produce + consume), first produce ->\n"
      "  last consume. kadr: the same, and the worker sends a small JSON result per frame back\n"
      "  (worker -> kadr.results -> requester), first publish -> last result: the same frame\n"
      "  bytes, but two trips through the broker. raw echo: plain librdkafka in kadr's\n"
      "  topology (a consumer+producer thread answers each frame with 300 bytes). MB/s counts\n"
      "  input frame bytes only; at most %d frames in flight on every path; CPU is the whole\n"
      "  process (broker included). worker: frames=%llu processed=%llu failed=%llu\n",
      cfg.window, static_cast<unsigned long long>(null_stats.frames),
      static_cast<unsigned long long>(null_stats.processed),
      static_cast<unsigned long long>(null_stats.failed));
  if (null_lat) {
    std::printf("\n== Round trip, one frame at a time, null model (N=%d) ==\n", cfg.rtt);
    PrintLatency("round trip", null_lat->rtt_ms);
  }
  if (model_lat) {
    std::printf("\n== Round trip, one frame at a time, %s, drawing on (N=%d) ==\n",
                cfg.model.c_str(), cfg.model_rtt);
    PrintLatency("round trip", model_lat->rtt_ms);
    PrintLatency("inference (result timings_ms)", model_lat->inference_ms);
    PrintLatency("round trip - inference", model_lat->minus_inference_ms);
  }
  std::printf("\npeak RSS of this process (broker's in-memory log included): %ld MB\n",
              PeakRssMb());
  return 0;
}

}  // namespace
}  // namespace kadr::bench

int main(int argc, char** argv) { return kadr::bench::Main(argc, argv); }
