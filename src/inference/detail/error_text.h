// The first line of a runtime's exception text: ONNX Runtime and OpenCV both put a location
// and a stack of context lines after it, which do not belong in an error message to a user.
#pragma once

#include <string>
#include <string_view>

namespace kadr::inference::detail {

inline std::string FirstLine(std::string_view s) { return std::string(s.substr(0, s.find('\n'))); }

}  // namespace kadr::inference::detail
