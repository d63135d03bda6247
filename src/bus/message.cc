#include "bus/message.h"

#include <algorithm>

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

}  // namespace kadr::bus
