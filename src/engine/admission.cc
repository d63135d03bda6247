// Admission (declared in engine/bus_dispatch.h): bytes on the broker per frames topic, and the
// queue of frames waiting for room.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <utility>

#include "engine/bus_dispatch.h"

namespace kadr::engine {

struct Admission::Ticket::State {
  struct Waiter {
    std::size_t bytes = 0;
    bool granted = false;
  };
  struct Topic {
    std::size_t in_use = 0;
    std::size_t waiting = 0;
    std::map<std::string, std::deque<Waiter*>, std::less<>> queues;  // by client, FIFO
    std::deque<std::string> turns;  // clients with frames waiting, the next one first
  };

  explicit State(std::size_t budget_bytes) : budget(budget_bytes) {}

  // Grants room to waiters in turn while the one whose turn it is fits.
  void GrantLocked(Topic& t) {
    bool granted = false;
    while (!t.turns.empty()) {
      const std::string client = t.turns.front();
      auto& queue = t.queues[client];
      Waiter* w = queue.front();
      if (t.in_use + w->bytes > budget) break;
      t.in_use += w->bytes;
      w->granted = true;
      granted = true;
      queue.pop_front();
      --t.waiting;
      t.turns.pop_front();
      if (queue.empty()) {
        t.queues.erase(client);
      } else {
        t.turns.push_back(client);  // its next frame waits for the others' turns
      }
    }
    if (granted) changed.notify_all();
  }

  // Takes a waiter that gave up out of its queue.
  void RemoveLocked(Topic& t, Waiter* w, const std::string& client) {
    auto it = t.queues.find(client);
    if (it == t.queues.end()) return;
    auto& queue = it->second;
    const bool was_head = !queue.empty() && queue.front() == w;
    queue.erase(std::remove(queue.begin(), queue.end(), w), queue.end());
    --t.waiting;
    if (queue.empty()) {
      t.queues.erase(it);
      t.turns.erase(std::remove(t.turns.begin(), t.turns.end(), client), t.turns.end());
    }
    if (was_head) GrantLocked(t);  // the frame behind it may fit
  }

  const std::size_t budget;
  std::mutex mu;
  std::condition_variable_any changed;
  std::map<std::string, Topic, std::less<>> topics;
};

Admission::Ticket::Ticket(std::shared_ptr<State> state, std::string topic, std::size_t bytes)
    : state_(std::move(state)), topic_(std::move(topic)), bytes_(bytes) {}

Admission::Ticket::~Ticket() {
  std::lock_guard lock(state_->mu);
  auto& t = state_->topics[topic_];
  t.in_use -= std::min(t.in_use, bytes_);
  state_->GrantLocked(t);
}

Admission::Admission(AdmissionOptions options)
    : options_(options), state_(std::make_shared<Ticket::State>(options.budget_bytes)) {}

Admission::~Admission() = default;

Result<std::shared_ptr<const Admission::Ticket>> Admission::Acquire(
    const std::string& topic, std::size_t bytes, const std::string& client,
    const std::stop_token& stop, std::optional<std::chrono::steady_clock::time_point> until) {
  if (options_.max_frame_bytes > 0 && bytes > options_.max_frame_bytes) {
    return TooLargeError("the frame is " + std::to_string(bytes) +
                         " bytes, more than the broker keeps safely in one message (" +
                         std::to_string(options_.max_frame_bytes) +
                         " bytes); send a smaller image, or let the gateway scale it down "
                         "(--max-frame-side)");
  }
  if (bytes > options_.budget_bytes) {
    return TooLargeError("the frame is " + std::to_string(bytes) +
                         " bytes, more than the broker may hold unanswered on " + topic + " (" +
                         std::to_string(options_.budget_bytes) + " bytes)");
  }
  std::unique_lock lock(state_->mu);
  auto& t = state_->topics[topic];
  auto ticket = [&] { return std::shared_ptr<const Ticket>(new Ticket(state_, topic, bytes)); };
  if (t.turns.empty() && t.in_use + bytes <= options_.budget_bytes) {
    t.in_use += bytes;
    return ticket();
  }
  if (t.waiting >= options_.max_waiting) {
    return ResourceExhaustedError(std::to_string(t.waiting) + " frames wait for room on " + topic +
                                  " already, the limit; retry later");
  }
  Ticket::State::Waiter w;
  w.bytes = bytes;
  auto& queue = t.queues[client];
  if (queue.empty()) t.turns.push_back(client);
  queue.push_back(&w);
  ++t.waiting;
  const auto granted = [&] { return w.granted; };
  if (until) {
    state_->changed.wait_until(lock, stop, *until, granted);
  } else {
    state_->changed.wait(lock, stop, granted);
  }
  if (w.granted) return ticket();
  state_->RemoveLocked(t, &w, client);
  if (stop.stop_requested()) return CancelledError("stopped while waiting for room on " + topic);
  return DeadlineExceededError(
      "no room on " + topic + " for the frame in time: " + std::to_string(t.in_use) +
      " bytes wait for answers there (" + std::to_string(options_.budget_bytes) + " at most)");
}

std::shared_ptr<const Admission::Ticket> Admission::TryAcquire(const std::string& topic,
                                                               std::size_t bytes) {
  if (options_.max_frame_bytes > 0 && bytes > options_.max_frame_bytes) return nullptr;
  std::lock_guard lock(state_->mu);
  auto& t = state_->topics[topic];
  if (!t.turns.empty() || t.in_use + bytes > options_.budget_bytes) return nullptr;
  t.in_use += bytes;
  return std::shared_ptr<const Ticket>(new Ticket(state_, topic, bytes));
}

Admission::Usage Admission::usage(const std::string& topic) const {
  std::lock_guard lock(state_->mu);
  const auto it = state_->topics.find(topic);
  if (it == state_->topics.end()) return {};
  return {it->second.in_use, it->second.waiting};
}

}  // namespace kadr::engine
