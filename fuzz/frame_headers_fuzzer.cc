// Frame headers (protocol/frame.h): what a worker reads from every message on
// kadr.frames.<model>, which any producer on the cluster may write.
//
// Input: one header per line, `name=value` (names may repeat; a line without '=' is a header
// with an empty value); the bytes after an empty line are the message's value. So a corpus
// entry reads like `kcat -H` arguments.
// Properties: accepted headers name a valid reply topic (and annotated topic), thresholds in
// [0, 1], class ids in 0..100000 and a report size within an upload's bounds; what they
// decode to encodes to headers that decode again to the same frame; the best-effort reading
// of any headers (what a worker answers a bad frame with) names a valid reply topic.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bus/bus.h"
#include "check.h"
#include "protocol/frame.h"

namespace {

namespace protocol = kadr::protocol;

void CheckMeta(const protocol::FrameMeta& m) {
  KADR_FUZZ_CHECK(!m.frame_id.empty(), "accepted a frame without an id");
  KADR_FUZZ_CHECK(protocol::IsValidTopicName(m.reply_to), "reply_to is not a valid topic");
  KADR_FUZZ_CHECK(m.annotated_to.empty() || protocol::IsValidTopicName(m.annotated_to),
                  "annotated_to is not a valid topic");
  if (m.options.confidence) {
    KADR_FUZZ_CHECK(*m.options.confidence >= 0 && *m.options.confidence <= 1, "conf");
  }
  if (m.options.iou) KADR_FUZZ_CHECK(*m.options.iou >= 0 && *m.options.iou <= 1, "iou");
  for (const int c : m.options.classes) KADR_FUZZ_CHECK(c >= 0 && c <= 100000, "class id");
  KADR_FUZZ_CHECK(m.kind.empty() || m.kind == "image" || protocol::IsTrackedKind(m.kind),
                  "unknown kind accepted");
  KADR_FUZZ_CHECK((m.report_width == 0) == (m.report_height == 0), "half a report size");
  KADR_FUZZ_CHECK(m.report_width >= 0 && m.report_width <= 16384 && m.report_height >= 0 &&
                      m.report_height <= 16384 &&
                      static_cast<std::int64_t>(m.report_width) * m.report_height <= 50'000'000,
                  "report size over an upload's bounds");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  kadr::bus::Message message;
  message.topic = "kadr.frames.fuzz";
  std::size_t pos = 0;
  while (pos < input.size()) {
    std::size_t eol = input.find('\n', pos);
    if (eol == std::string_view::npos) eol = input.size();
    const std::string_view line = input.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.empty()) break;
    const std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      message.headers.Add(std::string(line), "");
    } else {
      message.headers.Add(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
    }
  }
  if (pos < input.size()) {
    const std::string_view value = input.substr(pos);
    message.value.assign(value.begin(), value.end());
  }
  message.key = message.headers.Get("key").value_or("");

  auto meta = protocol::DecodeFrameHeaders(message.headers);
  if (meta) {
    CheckMeta(*meta);
    kadr::bus::Headers again;
    protocol::EncodeFrameHeaders(*meta, again);
    auto round = protocol::DecodeFrameHeaders(again);
    KADR_FUZZ_CHECK(round.has_value(), "encoded headers of an accepted frame do not decode");
    CheckMeta(*round);
    KADR_FUZZ_CHECK(
        round->frame_id == meta->frame_id && round->sequence == meta->sequence &&
            round->capture_ms == meta->capture_ms && round->deadline_ms == meta->deadline_ms &&
            round->reply_to == meta->reply_to && round->annotated_to == meta->annotated_to &&
            round->model == meta->model && round->kind == meta->kind && round->draw == meta->draw &&
            round->options.classes == meta->options.classes &&
            round->report_width == meta->report_width &&
            round->report_height == meta->report_height,
        "headers do not survive encode + decode");
  }
  const auto best = protocol::BestEffortFrameMeta(message.headers, message.key, "fallback-id");
  KADR_FUZZ_CHECK(protocol::IsValidTopicName(best.reply_to), "best-effort reply_to invalid");
  KADR_FUZZ_CHECK(!best.frame_id.empty(), "best-effort frame without an id");

  (void)protocol::IsImageMessage(message);
  (void)protocol::StreamIdOf(message);
  (void)protocol::FramesTopic(message.key);
  return 0;
}
