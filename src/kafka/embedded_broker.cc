#include "kafka/embedded_broker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <spdlog/spdlog.h>

#include "kafka/detail/rdkafka_util.h"

namespace kadr::kafka {
namespace {

// Relays TCP connections from a fixed port to the first mock broker. The mock cluster of
// librdkafka 2.0.2 binds ephemeral ports only; clients bootstrap through the relay and then
// talk to the brokers at the addresses the cluster advertises.
class PortRelay {
 public:
  static Result<std::unique_ptr<PortRelay>> Create(int port, const std::string& target) {
    const auto colon = target.rfind(':');
    if (colon == std::string::npos) return InternalError("bad mock bootstrap " + target);
    auto relay = std::unique_ptr<PortRelay>(new PortRelay());
    relay->target_port_ = std::stoi(target.substr(colon + 1));
    relay->listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    setsockopt(relay->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (bind(relay->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(relay->listen_fd_, 64) != 0) {
      return UnavailableError("cannot listen on 127.0.0.1:" + std::to_string(port) + ": " +
                              std::strerror(errno));
    }
    relay->acceptor_ = std::thread([r = relay.get()] { r->AcceptLoop(); });
    return relay;
  }

  ~PortRelay() {
    stop_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    acceptor_.join();
    std::lock_guard lock(mu_);
    for (auto& t : pipes_) t.join();
  }

 private:
  PortRelay() = default;

  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      const int client = accept(listen_fd_, nullptr, nullptr);
      if (client < 0) continue;
      const int upstream = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(target_port_));
      if (connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        close(client);
        close(upstream);
        continue;
      }
      std::lock_guard lock(mu_);
      pipes_.emplace_back([this, client, upstream] { Pipe(client, upstream); });
    }
  }

  void Pipe(int a, int b) {
    char buf[65536];
    pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    while (!stop_) {
      if (poll(fds, 2, 200) <= 0) continue;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (fds[i].revents == 0) continue;
        const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          done = true;
          break;
        }
        for (ssize_t off = 0; off < n;) {
          const ssize_t w = write(fds[1 - i].fd, buf + off, static_cast<size_t>(n - off));
          if (w <= 0) {
            done = true;
            break;
          }
          off += w;
        }
      }
      if (done) break;
    }
    close(a);
    close(b);
  }

  int listen_fd_ = -1;
  int target_port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::list<std::thread> pipes_;
};

}  // namespace

struct EmbeddedBroker::Impl {
  detail::HandlePtr rk;  // hosts the mock cluster
  rd_kafka_mock_cluster_t* cluster = nullptr;
  std::string bootstrap;
  std::unique_ptr<PortRelay> relay;
};

Result<std::unique_ptr<EmbeddedBroker>> EmbeddedBroker::Create(
    const EmbeddedBrokerOptions& options) {
  if (options.brokers < 1 || options.partitions < 1) {
    return InvalidArgumentError("broker and partition counts must be at least 1");
  }
  auto impl = std::make_unique<Impl>();
  detail::ConfBuilder b;
  b.Set("log_level", "3");
  ASSIGN_OR_RETURN(auto conf, b.Build());
  ASSIGN_OR_RETURN(impl->rk, detail::NewHandle(RD_KAFKA_PRODUCER, std::move(conf)));
  impl->cluster = rd_kafka_mock_cluster_new(impl->rk.get(), options.brokers);
  if (impl->cluster == nullptr) return UnavailableError("cannot start the embedded broker");
  impl->bootstrap = rd_kafka_mock_cluster_bootstraps(impl->cluster);
  if (options.port != 0) {
    const std::string first = impl->bootstrap.substr(0, impl->bootstrap.find(','));
    ASSIGN_OR_RETURN(impl->relay, PortRelay::Create(options.port, first));
    impl->bootstrap = "127.0.0.1:" + std::to_string(options.port);
  }
  auto broker = std::unique_ptr<EmbeddedBroker>(new EmbeddedBroker(std::move(impl)));
  for (const auto& t : options.topics) RETURN_IF_ERROR(broker->CreateTopic(t, options.partitions));
  spdlog::info("embedded broker started bootstrap={} brokers={}", broker->bootstrap(),
               options.brokers);
  return broker;
}

EmbeddedBroker::EmbeddedBroker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EmbeddedBroker::~EmbeddedBroker() {
  impl_->relay.reset();
  if (impl_->cluster != nullptr) rd_kafka_mock_cluster_destroy(impl_->cluster);
}

const std::string& EmbeddedBroker::bootstrap() const { return impl_->bootstrap; }

Status EmbeddedBroker::CreateTopic(const std::string& topic, int partitions) {
  return detail::FromKafkaError(
      rd_kafka_mock_topic_create(impl_->cluster, topic.c_str(), partitions, 1),
      "create topic " + topic);
}

Status EmbeddedBroker::SetBrokerDown(int broker_id) {
  return detail::FromKafkaError(rd_kafka_mock_broker_set_down(impl_->cluster, broker_id),
                                "broker down");
}

Status EmbeddedBroker::SetBrokerUp(int broker_id) {
  return detail::FromKafkaError(rd_kafka_mock_broker_set_up(impl_->cluster, broker_id),
                                "broker up");
}

void EmbeddedBroker::PushRequestErrors(int api_key, int count, int error_code) {
  std::vector<rd_kafka_resp_err_t> errs(static_cast<size_t>(count),
                                        static_cast<rd_kafka_resp_err_t>(error_code));
  rd_kafka_mock_push_request_errors_array(impl_->cluster, static_cast<int16_t>(api_key),
                                          errs.size(), errs.data());
}

}  // namespace kadr::kafka
