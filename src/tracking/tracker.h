// Object tracking: gives the detections of one stream stable identities across frames.
//
// A ByteTrack-style IoU tracker (docs/adr/0004-streams-video-jobs-and-tracking.md): per class,
// detections are associated with the tracks of that class in two stages, greedily by highest
// IoU first — high-score detections against every live or lost track, then low-score detections
// against the tracks that were seen in the previous update and are still unmatched. Only an
// unmatched high-score detection starts a new track; a track that is not matched is kept as
// "lost" for `max_age` updates so the object can be re-acquired with the same id. There is no
// motion model on purpose: frames may be decimated, so a constant-velocity prediction is often
// wrong. Pure and deterministic: the same detections in the same order give the same ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "protocol/result.h"

namespace kadr::tracking {

struct TrackerOptions {
  float high_score = 0.5f;  // detections scoring at least this can start and re-acquire tracks
  float low_score = 0.1f;   // detections in [low_score, high_score) only extend live tracks;
                            // below low_score a detection is never tracked
  float match_iou = 0.3f;   // minimum IoU between a track's last box and a detection to match
  int max_age = 30;         // updates a lost (unmatched) track is kept before it is forgotten
  std::size_t max_tracks = 4096;  // bound on live + lost tracks; the longest-lost go first
};

// The tracks of one stream. Owns its tracks; not thread-safe (one per stream, fed in frame
// order by one thread). Never fails: bad input (negative sizes, NaN scores) simply does not match.
class Tracker {
 public:
  explicit Tracker(TrackerOptions options = {});

  // Associates `detections` (one frame, in any order) with the tracks and sets
  // detections[i].track_id (>= 1) on each detection that continues or starts a track; every
  // other detection (below low_score, or a low-score one matching no live track) gets no id.
  // Ids are unique per Tracker and never reused. Every call counts as one frame for max_age.
  void Update(std::vector<protocol::Detection>& detections);

  // Live + lost tracks currently held.
  std::size_t track_count() const { return tracks_.size(); }

 private:
  struct Track {
    std::int64_t id = 0;
    int class_id = 0;
    protocol::Box box;
    int lost = 0;  // consecutive updates without a match; 0 = seen in the last update
  };

  TrackerOptions options_;
  std::vector<Track> tracks_;
  std::int64_t next_id_ = 1;
};

// Trackers keyed by stream id, for a worker that sees many streams. A stream idle for more than
// `idle_ms` is forgotten (its next frame starts fresh ids), and beyond `max_streams` the least
// recently updated stream is evicted. Owns its trackers; not thread-safe (use from the one
// thread that sees each stream's frames in order).
class TrackerSet {
 public:
  TrackerSet(TrackerOptions options, std::int64_t idle_ms = 60000, std::size_t max_streams = 1024);

  // Runs the tracker of `stream_id` (created on first use) on `detections`; `now_ms` is any
  // monotonic-enough millisecond clock, used only for idle eviction.
  void Update(const std::string& stream_id, std::int64_t now_ms,
              std::vector<protocol::Detection>& detections);

  // Streams currently tracked.
  std::size_t size() const { return streams_.size(); }

 private:
  struct Entry {
    std::string stream_id;
    std::int64_t last_ms = 0;
    Tracker tracker;
  };

  void EvictIdle(std::int64_t now_ms);

  TrackerOptions options_;
  std::int64_t idle_ms_;
  std::size_t max_streams_;
  std::list<Entry> lru_;  // most recently updated first
  std::unordered_map<std::string, std::list<Entry>::iterator> streams_;
};

}  // namespace kadr::tracking
