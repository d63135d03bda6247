#include "bus/fake_bus.h"

#include <thread>
#include <utility>

namespace kadr::bus {

std::int64_t FakeBus::Append(Message m) {
  std::lock_guard lock(mu_);
  auto& topic = topics_[m.topic];
  topic.push_back(std::move(m));
  return static_cast<std::int64_t>(topic.size()) - 1;
}

std::vector<Message> FakeBus::Topic(const std::string& topic) const {
  std::lock_guard lock(mu_);
  auto it = topics_.find(topic);
  return it == topics_.end() ? std::vector<Message>{} : it->second;
}

std::size_t FakeBus::Size(const std::string& topic) const {
  std::lock_guard lock(mu_);
  auto it = topics_.find(topic);
  return it == topics_.end() ? 0 : it->second.size();
}

Status FakePublisher::Publish(Message message, DeliveryCallback on_delivery) {
  if (message.value.size() > max_message_bytes) return TooLargeError("message over the limit");
  Status result;
  {
    std::lock_guard lock(mu_);
    if (fail_next_ > 0) {
      --fail_next_;
      result = fail_status_;
    }
  }
  AckToken stored_at{message.topic, 0, -1};
  if (result.ok()) stored_at.offset = bus_.Append(std::move(message));
  if (on_delivery) on_delivery(result, stored_at);
  return Status::Ok();
}

void FakePublisher::FailNext(int n, Status status) {
  std::lock_guard lock(mu_);
  fail_next_ = n;
  fail_status_ = std::move(status);
}

FakeSubscriber::FakeSubscriber(FakeBus& bus, std::vector<std::string> topics)
    : bus_(bus), topics_(std::move(topics)), next_(topics_.size(), 0) {}

std::vector<InboundMessage> FakeSubscriber::Poll(std::size_t max_messages,
                                                 std::chrono::milliseconds timeout,
                                                 std::chrono::milliseconds) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<InboundMessage> out;
  while (true) {
    {
      std::lock_guard lock(bus_.mu_);
      for (std::size_t t = 0; t < topics_.size(); ++t) {
        const auto& msgs = bus_.topics_[topics_[t]];
        std::size_t& next = next_[t];
        while (next < msgs.size() && out.size() < max_messages) {
          InboundMessage in;
          in.message = msgs[next];
          in.token = {topics_[t], 0, static_cast<std::int64_t>(next)};
          out.push_back(std::move(in));
          ++next;
        }
      }
    }
    if (!out.empty() || std::chrono::steady_clock::now() >= deadline) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void FakeSubscriber::AddLoss(Loss loss) {
  std::lock_guard lock(mu_);
  losses_.push_back(std::move(loss));
}

std::vector<Loss> FakeSubscriber::TakeLosses() {
  std::lock_guard lock(mu_);
  return std::exchange(losses_, {});
}

void FakeSubscriber::Ack(const AckToken& token) {
  std::lock_guard lock(mu_);
  acked_[token.topic].insert(token.offset);
}

Status FakeSubscriber::Close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  return Status::Ok();
}

std::set<std::int64_t> FakeSubscriber::acked() const {
  return topics_.empty() ? std::set<std::int64_t>{} : acked(topics_.front());
}

std::set<std::int64_t> FakeSubscriber::acked(const std::string& topic) const {
  std::lock_guard lock(mu_);
  const auto it = acked_.find(topic);
  return it == acked_.end() ? std::set<std::int64_t>{} : it->second;
}

bool FakeSubscriber::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

}  // namespace kadr::bus
