// Publishing a message and waiting for the broker to take it: for the job snapshots that must
// be on the broker before a client is told the job exists.
#pragma once

#include <chrono>
#include <future>
#include <memory>

#include "bus/bus.h"
#include "common/status.h"

namespace kadr::gateway::detail {

// Publishes `message` and waits up to `timeout` for its delivery report. kUnavailable when
// the broker did not take it in time; the publisher's or the delivery's error otherwise.
inline Status PublishAndWait(bus::FramePublisher& publisher, bus::Message message,
                             std::chrono::milliseconds timeout) {
  // Shared with the callback, which may come after this returns.
  auto delivered = std::make_shared<std::promise<Status>>();
  std::future<Status> outcome = delivered->get_future();
  RETURN_IF_ERROR(publisher.Publish(
      std::move(message),
      [delivered](const Status& s, const bus::AckToken&) { delivered->set_value(s); }));
  if (outcome.wait_for(timeout) != std::future_status::ready) {
    return UnavailableError("the broker did not take the message within " +
                            std::to_string(timeout.count()) + " ms");
  }
  return outcome.get();
}

}  // namespace kadr::gateway::detail
