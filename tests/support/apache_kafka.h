// ApacheKafka: a real Apache Kafka on loopback for one test, one node or a KRaft cluster of
// three, each node a `scripts/kafka.sh` child process (the JVM itself: SIGKILL kills the
// broker) with the broker settings of deploy/kafka/broker.properties, on free ports, with its
// data in the test's folder. A stopped or killed node starts again on the same ports and data.
//
// The broker's jars come from scripts/setup-kafka.sh (the README's test command runs it);
// Unavailable() says when they are missing, and the test skips with that message.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/ports.h"
#include "support/shell.h"

namespace kadr::testing {

class ApacheKafka {
 public:
  struct Options {
    std::filesystem::path dir;  // one sub-folder per node
    int nodes = 1;
    std::vector<std::string> settings;  // key=value over broker.properties, every node
  };

  // The folder whose libs/ holds the broker's jars (scripts/setup-kafka.sh --home).
  static std::string Home() {
    std::string dir = Shell(std::string(KADR_SOURCE_DIR) + "/scripts/setup-kafka.sh --home").out;
    while (!dir.empty() && (dir.back() == '\n' || dir.back() == ' ')) dir.pop_back();
    return dir;
  }

  // Empty when the broker can run here; otherwise why not.
  static std::string Unavailable() {
    const std::string dir = Home();
    if (dir.empty() || !std::filesystem::is_directory(dir + "/libs")) {
      return "Apache Kafka is not installed in '" + dir + "': run scripts/setup-kafka.sh";
    }
    if (Shell("command -v java >/dev/null && command -v kcat >/dev/null").exit_code != 0) {
      return "java or kcat not found: run scripts/setup-debian.sh";
    }
    return "";
  }

  // Starts every node and waits until each answers; nullptr (and `error`) on failure. The
  // free ports are picked before the JVM binds them, so a test running beside this one can
  // take one first ("Address already in use"): then it starts again on other ports, twice
  // at most.
  static std::unique_ptr<ApacheKafka> Start(Options options, std::string* error) {
    for (int attempt = 0;; ++attempt) {
      std::string why;
      auto k = StartOnce(options, attempt, &why);
      if (k || attempt == 2 || why.find("Address already in use") == std::string::npos) {
        if (!k && error != nullptr) *error = why;
        return k;
      }
    }
  }

 private:
  static std::unique_ptr<ApacheKafka> StartOnce(Options options, int attempt, std::string* error) {
    std::unique_ptr<ApacheKafka> k(new ApacheKafka(std::move(options)));
    std::string voters;
    for (int i = 0; i < k->options_.nodes; ++i) {
      Node n;
      n.id = i + 1;
      n.port = UnusedLoopbackPort();
      n.controller_port = UnusedLoopbackPort();
      n.dir = k->options_.dir / ("kafka-" + std::to_string(n.id) +
                                 (attempt > 0 ? "-" + std::to_string(attempt) : ""));
      voters += (voters.empty() ? "" : ",") + std::to_string(n.id) +
                "@127.0.0.1:" + std::to_string(n.controller_port);
      k->nodes_.push_back(std::move(n));
    }
    k->voters_ = voters;
    if (k->options_.nodes > 1) {
      const int replicas = k->options_.nodes;
      const int isr = replicas > 2 ? 2 : 1;
      k->options_.settings.insert(
          k->options_.settings.begin(),
          {"default.replication.factor=" + std::to_string(replicas),
           "offsets.topic.replication.factor=" + std::to_string(replicas),
           "transaction.state.log.replication.factor=" + std::to_string(replicas),
           "transaction.state.log.min.isr=" + std::to_string(isr),
           "min.insync.replicas=" + std::to_string(isr)});
    }
    for (auto& n : k->nodes_) k->Spawn(n);
    for (auto& n : k->nodes_) {
      if (!k->WaitReady(n, error)) return nullptr;
    }
    return k;
  }

 public:
  ApacheKafka(const ApacheKafka&) = delete;
  ApacheKafka& operator=(const ApacheKafka&) = delete;

  // Every running node's client address, comma-separated (librdkafka's bootstrap list).
  std::string bootstrap() const {
    std::string out;
    for (const auto& n : nodes_) {
      out += (out.empty() ? "" : ",") + Address(n);
    }
    return out;
  }
  int nodes() const { return static_cast<int>(nodes_.size()); }
  int port(int node_id) const { return At(node_id).port; }
  std::string Log(int node_id) const {
    const auto& p = At(node_id).process;
    return p ? p->LogTail() : "";
  }

  // SIGKILL: the node dies as in a crash or a power cut of its process.
  void Kill(int node_id) {
    if (auto& p = At(node_id).process) p->Kill();
  }
  // SIGTERM: a clean shutdown (the broker hands over its partitions). True on exit 0.
  bool Stop(int node_id) {
    auto& p = At(node_id).process;
    return p && p->Stop(std::chrono::seconds(60)) == 0;
  }
  // Starts a stopped or killed node again, on its ports and data; waits until it answers.
  bool Restart(int node_id, std::string* error) {
    Node& n = At(node_id);
    if (n.process) n.process->Kill();
    Spawn(n);
    return WaitReady(n, error);
  }

  // The node that leads `topic`'s `partition` now, from a metadata request (kcat -L) to any
  // running node; nullopt when none answers or the partition has no leader.
  std::optional<int> Leader(const std::string& topic, int partition) const {
    const std::regex re("partition " + std::to_string(partition) + ", leader (-?\\d+),");
    for (const auto& n : nodes_) {
      if (!n.process) continue;
      const auto r = Shell("timeout 10 kcat -L -m 5 -b " + Address(n) + " -t " + topic);
      std::smatch m;
      if (r.exit_code == 0 && std::regex_search(r.out, m, re)) {
        const int leader = std::stoi(m[1]);
        if (leader > 0) return leader;
        return std::nullopt;
      }
    }
    return std::nullopt;
  }

  // A topic's configs as the broker describes them (Kafka's own ConfigCommand): the lines
  // "key=value" of every config set on the topic; empty when the command fails.
  std::string DescribeTopicConfigs(const std::string& topic) const {
    const auto r = Shell("timeout 60 java -cp '" + Home() + "/libs/*' -Dlog4j2.configurationFile=" +
                         KADR_SOURCE_DIR + "/deploy/kafka/log4j2.properties " +
                         "kafka.admin.ConfigCommand --bootstrap-server " + bootstrap() +
                         " --entity-type topics --entity-name " + topic + " --describe 2>&1");
    return r.exit_code == 0 ? r.out : "";
  }

 private:
  struct Node {
    int id = 0;
    int port = 0;
    int controller_port = 0;
    std::filesystem::path dir;
    std::unique_ptr<ChildProcess> process;
    int starts = 0;
  };

  explicit ApacheKafka(Options options) : options_(std::move(options)) {}

  static std::string Address(const Node& n) { return "127.0.0.1:" + std::to_string(n.port); }

  Node& At(int node_id) { return nodes_.at(static_cast<std::size_t>(node_id - 1)); }
  const Node& At(int node_id) const { return nodes_.at(static_cast<std::size_t>(node_id - 1)); }

  void Spawn(Node& n) {
    std::vector<std::string> argv = {std::string(KADR_SOURCE_DIR) + "/scripts/kafka.sh",
                                     "--dir",
                                     n.dir.string(),
                                     "--node-id",
                                     std::to_string(n.id),
                                     "--port",
                                     std::to_string(n.port),
                                     "--controller-port",
                                     std::to_string(n.controller_port),
                                     "--voters",
                                     voters_};
    for (const auto& s : options_.settings) argv.insert(argv.end(), {"--set", s});
    ++n.starts;
    const auto log =
        options_.dir / ("kafka-" + std::to_string(n.id) + "." + std::to_string(n.starts) + ".log");
    n.process = std::make_unique<ChildProcess>(argv, log);
  }

  bool WaitReady(Node& n, std::string* error) {
    if (n.process->WaitForLog("bootstrap: (127\\.0\\.0\\.1:\\d+)", std::chrono::minutes(3))) {
      return true;
    }
    if (error) {
      *error =
          "Apache Kafka node " + std::to_string(n.id) + " did not start:\n" + n.process->LogTail();
    }
    return false;
  }

  Options options_;
  std::vector<Node> nodes_;
  std::string voters_;
};

}  // namespace kadr::testing
