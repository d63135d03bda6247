// A small Prometheus metrics registry: counters, gauges and fixed-bucket histograms with
// labels, rendered in the text exposition format (version 0.0.4) for a /metrics endpoint.
//
//   MetricsRegistry registry;
//   Counter& ok = registry.GetCounter("kadr_http_requests_total", "HTTP requests served.",
//                                     {{"route", "/api/v1/detect"}, {"code", "200"}});
//   ok.Increment();                                  // a relaxed atomic add, no lock
//   std::string text = registry.RenderPrometheus();
//
// Ownership: the registry owns every metric; the references it returns stay valid for the
// registry's lifetime, so callers look a series up once and keep the reference.
// Thread-safety: everything is thread-safe. Get*() and RenderPrometheus() take one mutex;
// updating a metric is lock-free.
// Misuse is a programming error and aborts with a message: an invalid metric or label name,
// a name reused with another type, help, label names or buckets, unsorted buckets.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kadr {

// Label name -> value pairs; their order does not matter (series are keyed by sorted names).
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing count.
class Counter {
 public:
  void Increment(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Sub(double v) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into fixed buckets (upper bounds, inclusive) plus +Inf, with their sum.
class Histogram {
 public:
  // `bounds` must be finite and strictly increasing.
  explicit Histogram(std::vector<double> bounds);

  // Adds one observation; NaN is ignored.
  void Observe(double v);

  struct Snapshot {
    std::vector<std::uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    std::uint64_t count = 0;
  };
  // A copy of the current state; buckets are cumulative like the exposition format's.
  Snapshot Read() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0.0};
};

// Request latency in seconds: 5 ms .. 10 s.
inline constexpr double kLatencySecondsBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                    0.5,   1,    2.5,   5,    10};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // The series of metric `name` with `labels`, created on first use. Every series of a name
  // must have the same type, help text and set of label names.
  Counter& GetCounter(std::string_view name, std::string_view help,
                      const MetricLabels& labels = {});
  Gauge& GetGauge(std::string_view name, std::string_view help, const MetricLabels& labels = {});
  // `bounds` as for Histogram; "le" is reserved and cannot be a label name here.
  Histogram& GetHistogram(std::string_view name, std::string_view help,
                          std::span<const double> bounds = kLatencySecondsBuckets,
                          const MetricLabels& labels = {});

  // All metrics in the text exposition format, families sorted by name and series by labels:
  //   # HELP kadr_jobs_total Jobs accepted.
  //   # TYPE kadr_jobs_total counter
  //   kadr_jobs_total{model="yolo"} 3
  std::string RenderPrometheus() const;

  // Removes every series, of any metric, that has label `name` = `value` (a stream's series
  // when the stream is deleted, so that they do not pile up). References to those series
  // become invalid: call it only once their users are gone. Returns how many it removed.
  std::size_t RemoveSeries(std::string_view name, std::string_view value);

 private:
  struct Family;
  Family& FamilyFor(std::string_view name, std::string_view help, int type,
                    const MetricLabels& labels, std::span<const double> bounds);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
};

// Label value escaped for the exposition format: backslash, double quote and newline.
std::string EscapePrometheusLabelValue(std::string_view value);

}  // namespace kadr
