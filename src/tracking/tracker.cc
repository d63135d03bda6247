#include "tracking/tracker.h"

#include <algorithm>
#include <utility>

namespace kadr::tracking {
namespace {

struct Pair {
  float iou;
  std::size_t track;
  std::size_t detection;
};

// Greedy assignment on the IoU matrix: highest IoU first; ties go to the older track, then to
// the earlier detection, so the result does not depend on sort stability.
void GreedyMatch(std::vector<Pair>& pairs, std::vector<int>& track_of_detection,
                 std::vector<bool>& track_matched) {
  std::sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) {
    if (a.iou != b.iou) return a.iou > b.iou;
    if (a.track != b.track) return a.track < b.track;
    return a.detection < b.detection;
  });
  for (const Pair& p : pairs) {
    if (track_matched[p.track] || track_of_detection[p.detection] >= 0) continue;
    track_matched[p.track] = true;
    track_of_detection[p.detection] = static_cast<int>(p.track);
  }
}

}  // namespace

Tracker::Tracker(TrackerOptions options) : options_(options) {}

void Tracker::Update(std::vector<protocol::Detection>& detections) {
  const std::size_t n_tracks = tracks_.size();
  std::vector<int> track_of_detection(detections.size(), -1);
  std::vector<bool> track_matched(n_tracks, false);
  auto is_high = [&](const protocol::Detection& d) { return d.score >= options_.high_score; };
  auto is_low = [&](const protocol::Detection& d) {
    return d.score >= options_.low_score && d.score < options_.high_score;
  };
  auto iou_if_match = [&](const Track& t, const protocol::Detection& d) {
    if (t.class_id != d.class_id) return 0.f;  // classes never mix
    const float iou = protocol::Iou(t.box, d.box);
    return iou > 0.f && iou >= options_.match_iou ? iou : 0.f;
  };

  // Stage 1: high-score detections against every track, live or lost.
  std::vector<Pair> pairs;
  for (std::size_t t = 0; t < n_tracks; ++t) {
    for (std::size_t d = 0; d < detections.size(); ++d) {
      if (!is_high(detections[d])) continue;
      if (const float iou = iou_if_match(tracks_[t], detections[d]); iou > 0.f) {
        pairs.push_back({iou, t, d});
      }
    }
  }
  GreedyMatch(pairs, track_of_detection, track_matched);

  // Stage 2: low-score detections against the tracks seen last update and still unmatched
  // (a lost track is only re-acquired by a confident detection, as in ByteTrack).
  pairs.clear();
  for (std::size_t t = 0; t < n_tracks; ++t) {
    if (track_matched[t] || tracks_[t].lost != 0) continue;
    for (std::size_t d = 0; d < detections.size(); ++d) {
      if (!is_low(detections[d])) continue;
      if (const float iou = iou_if_match(tracks_[t], detections[d]); iou > 0.f) {
        pairs.push_back({iou, t, d});
      }
    }
  }
  GreedyMatch(pairs, track_of_detection, track_matched);

  // Matched tracks follow their detection; the others age.
  for (std::size_t d = 0; d < detections.size(); ++d) {
    detections[d].track_id.reset();
    if (track_of_detection[d] < 0) continue;
    Track& t = tracks_[static_cast<std::size_t>(track_of_detection[d])];
    t.box = detections[d].box;
    t.lost = 0;
    detections[d].track_id = t.id;
  }
  for (std::size_t t = 0; t < n_tracks; ++t) {
    if (!track_matched[t]) ++tracks_[t].lost;
  }
  std::erase_if(tracks_, [&](const Track& t) { return t.lost > options_.max_age; });

  // New tracks from unmatched high-score detections, within max_tracks: make room by dropping
  // the longest-lost tracks, never a live one.
  std::size_t wanted = 0;
  for (std::size_t d = 0; d < detections.size(); ++d) {
    if (track_of_detection[d] < 0 && is_high(detections[d])) ++wanted;
  }
  if (tracks_.size() + wanted > options_.max_tracks) {
    std::stable_sort(tracks_.begin(), tracks_.end(),
                     [](const Track& a, const Track& b) { return a.lost > b.lost; });
    std::size_t excess = tracks_.size() + wanted - options_.max_tracks;
    std::size_t drop = 0;
    while (drop < excess && drop < tracks_.size() && tracks_[drop].lost > 0) ++drop;
    tracks_.erase(tracks_.begin(), tracks_.begin() + static_cast<std::ptrdiff_t>(drop));
    // Keep creation order (older first), which the greedy tie-break relies on.
    std::sort(tracks_.begin(), tracks_.end(),
              [](const Track& a, const Track& b) { return a.id < b.id; });
  }
  for (std::size_t d = 0; d < detections.size(); ++d) {
    if (track_of_detection[d] >= 0 || !is_high(detections[d])) continue;
    if (tracks_.size() >= options_.max_tracks) break;
    Track t;
    t.id = next_id_++;
    t.class_id = detections[d].class_id;
    t.box = detections[d].box;
    tracks_.push_back(t);
    detections[d].track_id = t.id;
  }
}

TrackerSet::TrackerSet(TrackerOptions options, std::int64_t idle_ms, std::size_t max_streams)
    : options_(options), idle_ms_(idle_ms), max_streams_(std::max<std::size_t>(1, max_streams)) {}

void TrackerSet::EvictIdle(std::int64_t now_ms) {
  while (!lru_.empty() && now_ms - lru_.back().last_ms > idle_ms_) {
    streams_.erase(lru_.back().stream_id);
    lru_.pop_back();
  }
}

void TrackerSet::Update(const std::string& stream_id, std::int64_t now_ms,
                        std::vector<protocol::Detection>& detections) {
  EvictIdle(now_ms);
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    while (lru_.size() >= max_streams_) {
      streams_.erase(lru_.back().stream_id);
      lru_.pop_back();
    }
    lru_.push_front(Entry{stream_id, now_ms, Tracker(options_)});
    it = streams_.emplace(stream_id, lru_.begin()).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second);  // iterators stay valid
  }
  Entry& entry = *it->second;
  entry.last_ms = std::max(entry.last_ms, now_ms);
  entry.tracker.Update(detections);
}

}  // namespace kadr::tracking
