#include <algorithm>

#include "bus/bus.h"

namespace kadr::bus {

void Headers::Set(std::string name, std::string value) {
  std::erase_if(items_, [&](const auto& h) { return h.first == name; });
  items_.emplace_back(std::move(name), std::move(value));
}

void Headers::Add(std::string name, std::string value) {
  items_.emplace_back(std::move(name), std::move(value));
}

std::optional<std::string> Headers::Get(std::string_view name) const {
  for (auto it = items_.rbegin(); it != items_.rend(); ++it) {
    if (it->first == name) return it->second;
  }
  return std::nullopt;
}

std::string_view ValueText(const Message& message) {
  return {reinterpret_cast<const char*>(message.value.data()), message.value.size()};
}

std::string Describe(const AckToken& token) {
  return token.topic + "/" + std::to_string(token.partition) + "/" + std::to_string(token.offset);
}

bool Covers(const Loss& loss, const AckToken& at) {
  return at.offset >= 0 && loss.to >= 0 && at.topic == loss.topic &&
         at.partition == loss.partition && at.offset >= loss.from && at.offset < loss.to;
}

}  // namespace kadr::bus
