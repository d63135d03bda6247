// What the containers run, as plain processes: the config file's settings and their
// precedence, `kadr topics` against a real Kafka-protocol broker, a worker's own /healthz and
// /metrics, and `kadr health`, the containers' health check (deploy/).

#include <sched.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <opencv2/dnn.hpp>

#include "support/child_process.h"
#include "support/kadr_up.h"
#include "support/ports.h"
#include "support/shell.h"
#include "support/test_data.h"

namespace kadr {
namespace {

namespace fs = std::filesystem;

// Runs `env kadr args` through the shell (stdout and stderr together).
testing::ShellResult RunKadr(const std::string& env, const std::string& args) {
  return testing::Shell(env + " " + std::string(KADR_BINARY) + " " + args + " 2>&1");
}

fs::path WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

bool OpenCvHasCudaBackend() {
  for (const auto& [backend, target] : cv::dnn::getAvailableBackends()) {
    if (backend == cv::dnn::DNN_BACKEND_CUDA) return true;
  }
  return false;
}

// `kadr broker --port 0`, and its bootstrap address once it printed it.
struct Broker {
  testing::ChildProcess process;
  std::string bootstrap;

  explicit Broker(const fs::path& dir)
      : process({KADR_BINARY, "broker", "--port", "0"}, dir / "broker.log") {
    if (auto m = process.WaitForLog(R"(bootstrap: (\S+))", std::chrono::seconds(20))) {
      bootstrap = *m;
    }
  }
};

class DeployCommandsTest : public ::testing::Test {
 protected:
  fs::path dir_ = testing::MakeTempDir();
  fs::path models_ = dir_ / "models";

  void SetUp() override {
    fs::create_directories(models_);
    fs::copy_file(KADR_TINY_ONNX, models_ / "tiny.onnx");
  }
};

TEST_F(DeployCommandsTest, ConfigFileSettingsApplyAndTheEnvironmentAndFlagsOverrideThem) {
  if (OpenCvHasCudaBackend()) GTEST_SKIP() << "this OpenCV has CUDA: the fallback line differs";
  const fs::path config = WriteFile(dir_ / "kadr.json", R"({"settings": {
      "device": "cuda", "log_level": "info", "models_dir": ")" +
                                                            models_.string() + R"("}})");
  const std::string args = "--config " + config.string() + " models --json";

  // The file alone: its device and models folder are used, and the fallback is said.
  auto r = RunKadr("", args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("falling back from cuda"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("without the CUDA execution provider"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"tiny\""), std::string::npos) << "models_dir from the file: " << r.out;
  EXPECT_NE(r.out.find("onnxruntime/cpu"), std::string::npos) << r.out;

  // The engine: ONNX Runtime by default, OpenCV DNN when asked (with its own fallback line).
  r = RunKadr("KADR_ENGINE=opencv", args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("opencv-dnn/cpu"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("without the CUDA DNN backend"), std::string::npos) << r.out;

  // The environment beats the file; a flag beats both.
  r = RunKadr("KADR_DEVICE=cpu", args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("inference device: cpu (requested)"), std::string::npos) << r.out;
  r = RunKadr("KADR_DEVICE=cpu", "--device auto " + args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("inference device: cpu (auto:"), std::string::npos) << r.out;

  // KADR_CONFIG names the file as well as --config does.
  r = RunKadr("KADR_CONFIG=" + config.string(), "models --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("falling back from cuda"), std::string::npos) << r.out;
}

// `kadr up` shares its cores with everything else in its process: inference takes all but one
// by default, and consumers of the embedded broker (which holds every fetch for the full wait)
// wait 3 ms; flags and the environment still decide, and other commands keep 10 ms.
TEST_F(DeployCommandsTest, UpLeavesACoreToTheRestAndShortensTheEmbeddedFetchWait) {
  const auto up_log = [&](const std::string& name, const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {
        KADR_BINARY, "--models-dir", models_.string(), "up",         "--http-port",
        "0",         "--models",     "tiny",           "--data-dir", (dir_ / name).string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    testing::ChildProcess up(argv, dir_ / (name + ".log"));
    EXPECT_TRUE(up.WaitForLog(testing::kHttpReadyLine, std::chrono::seconds(60))) << up.LogTail();
    EXPECT_EQ(up.Stop(std::chrono::seconds(30)), 0) << up.LogTail();
    return up.Log();
  };
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int expected = std::max(1, CPU_COUNT(&set) - 1);

  std::string log = up_log("defaults", {});
  EXPECT_NE(log.find("inference threads per model: " + std::to_string(expected) + " "),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("fetch.wait.max.ms=3 linger.ms=1"), std::string::npos) << log;

  log = up_log("flags", {"--threads", "2", "--fetch-wait-ms", "7"});
  EXPECT_EQ(log.find("inference threads per model"), std::string::npos) << log;
  EXPECT_NE(log.find("fetch.wait.max.ms=7 "), std::string::npos) << log;

  // Another command on the same kind of broker keeps the Kafka default.
  Broker broker(dir_);
  ASSERT_FALSE(broker.bootstrap.empty()) << broker.process.LogTail();
  testing::ChildProcess worker({KADR_BINARY, "--models-dir", models_.string(), "worker", "--model",
                                "tiny", "--brokers", broker.bootstrap},
                               dir_ / "worker.log");
  EXPECT_TRUE(worker.WaitForLog(R"((fetch\.wait\.max\.ms=\d+))", std::chrono::seconds(30)))
      << worker.LogTail();
  EXPECT_NE(worker.Log().find("fetch.wait.max.ms=10 "), std::string::npos) << worker.LogTail();
}

TEST_F(DeployCommandsTest, BadConfigFilesExitTwoWithTheReason) {
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {R"({"settings": {"http_prot": 8080}})", "unknown setting 'http_prot'"},
      {R"({"settings": {"brokers": null}})", "setting 'brokers' must be"},
      {R"({"settings": ["brokers"]})", "\"settings\" must be an object"},
      {"not json", "not a JSON object"},
      {R"({"settings": {"models_dir": ["a", "b"]}})", "'models_dir' takes one value, not a list"},
      {R"({"modles": []})", "unknown key 'modles'"},
  };
  for (const auto& c : cases) {
    const fs::path config = WriteFile(dir_ / "bad.json", c.text);
    const auto r = RunKadr("", "--config " + config.string() + " models");
    EXPECT_EQ(r.exit_code, 2) << c.text << "\n" << r.out;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.text << "\n" << r.out;
    EXPECT_NE(r.out.find(config.string()), std::string::npos) << "names the file: " << r.out;
  }
  // A value of the wrong type is refused as the flag would be.
  const fs::path config = WriteFile(dir_ / "bad.json", R"({"settings": {"device": "tpu"}})");
  const auto r = RunKadr("", "--config " + config.string() + " models");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("tpu"), std::string::npos) << r.out;
}

TEST_F(DeployCommandsTest, TopicsCreatesEveryTopicOfTheProtocolOnTheBroker) {
  Broker broker(dir_);
  ASSERT_FALSE(broker.bootstrap.empty()) << broker.process.LogTail();
  // Settings from a config file, lists as JSON arrays: what the init container runs.
  const fs::path config =
      WriteFile(dir_ / "kadr.json", R"({"settings": {"brokers": ")" + broker.bootstrap + R"(",
      "models": ["tiny", "other"], "partitions": 3}})");
  const auto r = RunKadr("", "--config " + config.string() + " topics");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* topic :
       {"kadr.frames.tiny", "kadr.frames.other", "kadr.results", "kadr.annotated",
        "kadr.live.results", "kadr.live.annotated", "kadr.dlq", "kadr.workers"}) {
    EXPECT_NE(r.out.find(std::string(topic) + ": ready"), std::string::npos) << topic << r.out;
  }
  // Run again: idempotent.
  EXPECT_EQ(RunKadr("", "--config " + config.string() + " topics").exit_code, 0);
}

TEST_F(DeployCommandsTest, TopicsFailsClearlyWhenTheBrokerNeverAnswers) {
  const int port = testing::UnusedLoopbackPort();
  const auto r =
      RunKadr("", "--log-level error topics --models tiny --wait-ms 1500 --brokers 127.0.0.1:" +
                      std::to_string(port));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("did not answer within 1500 ms"), std::string::npos) << r.out;
}

TEST_F(DeployCommandsTest, WorkerServesHealthAndMetricsAndTheHealthCommandChecksThem) {
  Broker broker(dir_);
  ASSERT_FALSE(broker.bootstrap.empty()) << broker.process.LogTail();
  // A list setting joins with its option's delimiter (';' for Kafka properties).
  const fs::path config = WriteFile(dir_ / "kadr.json", R"({"settings": {
      "kafka_properties": ["client.id=kadr-deploy-test", "socket.keepalive.enable=true"]}})");
  testing::ChildProcess worker(
      {KADR_BINARY, "--config", config.string(), "--models-dir", models_.string(), "worker",
       "--model", "tiny", "--brokers", broker.bootstrap, "--http-port", "0"},
      dir_ / "worker.log");
  const auto url = worker.WaitForLog(R"((http://\S+/healthz))", std::chrono::seconds(30));
  ASSERT_TRUE(url.has_value()) << worker.LogTail();
  EXPECT_NE(worker.Log().find("client.id=kadr-deploy-test socket.keepalive.enable=true"),
            std::string::npos)
      << worker.LogTail();

  auto r = RunKadr("", "health --url " + *url);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const std::string origin = url->substr(0, url->size() - std::string("/healthz").size());
  httplib::Client client(origin);
  const auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_NE(health->body.find(R"("model":"tiny")"), std::string::npos) << health->body;
  EXPECT_NE(health->body.find(R"("stalled_ms":0)"), std::string::npos) << health->body;
  EXPECT_NE(health->body.find(R"("status":"ok")"), std::string::npos) << health->body;
  const auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find(R"(kadr_worker_frames{model="tiny",outcome="ok"} 0)"),
            std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find(R"(kadr_worker_stalled_seconds{model="tiny"} 0)"), std::string::npos)
      << metrics->body;

  // SIGTERM: the worker exits 0 and the health check then fails, naming the URL.
  EXPECT_EQ(worker.Stop(std::chrono::seconds(15)), 0) << worker.LogTail();
  r = RunKadr("", "health --timeout-ms 1000 --url " + *url);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("unhealthy: " + *url), std::string::npos) << r.out;
  // KADR_HTTP_PORT is what the health check reads by default, as the service does.
  r = RunKadr("KADR_HTTP_PORT=" + std::to_string(testing::UnusedLoopbackPort()), "health");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("unhealthy: http://127.0.0.1:"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace kadr
