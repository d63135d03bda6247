#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace kadr {
namespace {

enum Type { kCounter = 0, kGauge = 1, kHistogram = 2 };
constexpr const char* kTypeNames[] = {"counter", "gauge", "histogram"};

[[noreturn]] void Fatal(const std::string& message) {
  std::fprintf(stderr, "kadr metrics: %s\n", message.c_str());
  std::abort();
}

bool IsMetricName(std::string_view s, bool allow_colon) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string FormatDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void ValidateBounds(std::span<const double> bounds) {
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
      Fatal("histogram bounds must be finite and strictly increasing");
    }
  }
}

}  // namespace

std::string EscapePrometheusLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {
  ValidateBounds(bounds_);
}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  // First bound >= v: buckets are inclusive upper bounds ("le").
  auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                    bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.cumulative.reserve(bounds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  // Count is derived from the buckets so that +Inf and _count always agree.
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

struct MetricsRegistry::Family {
  int type = kCounter;
  std::string help;
  std::vector<std::string> label_names;  // sorted
  std::vector<double> bounds;
  struct Series {
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  // Keyed by the label values in label_names order.
  std::map<std::vector<std::string>, Series> series;

  // Sorted (name, value) pairs -> values; aborts when the names differ from the family's.
  std::vector<std::string> Key(std::string_view name, const MetricLabels& labels) const {
    MetricLabels sorted = labels;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::string> values;
    bool same = sorted.size() == label_names.size();
    for (std::size_t i = 0; same && i < sorted.size(); ++i) {
      same = sorted[i].first == label_names[i];
      values.push_back(sorted[i].second);
    }
    if (!same) Fatal("metric " + std::string(name) + " used with different label names");
    return values;
  }
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

std::size_t MetricsRegistry::RemoveSeries(std::string_view name, std::string_view value) {
  std::lock_guard lock(mu_);
  std::size_t removed = 0;
  for (auto& [family_name, family] : families_) {
    const auto at = std::find(family->label_names.begin(), family->label_names.end(), name);
    if (at == family->label_names.end()) continue;
    const auto index = static_cast<std::size_t>(at - family->label_names.begin());
    removed += std::erase_if(family->series,
                             [&](const auto& entry) { return entry.first[index] == value; });
  }
  return removed;
}

MetricsRegistry::Family& MetricsRegistry::FamilyFor(std::string_view name, std::string_view help,
                                                    int type, const MetricLabels& labels,
                                                    std::span<const double> bounds) {
  auto it = families_.find(name);
  if (it != families_.end()) {
    Family& f = *it->second;
    if (f.type != type || f.help != help ||
        !std::equal(f.bounds.begin(), f.bounds.end(), bounds.begin(), bounds.end())) {
      Fatal("metric " + std::string(name) + " registered twice with different type/help/buckets");
    }
    return f;
  }
  if (!IsMetricName(name, /*allow_colon=*/true)) Fatal("invalid metric name: " + std::string(name));
  auto f = std::make_unique<Family>();
  f->type = type;
  f->help = help;
  f->bounds.assign(bounds.begin(), bounds.end());
  ValidateBounds(f->bounds);
  for (const auto& [label, value] : labels) {
    if (!IsMetricName(label, /*allow_colon=*/false) || label.starts_with("__") ||
        (type == kHistogram && label == "le")) {
      Fatal("invalid label name " + label + " for metric " + std::string(name));
    }
    f->label_names.push_back(label);
  }
  std::sort(f->label_names.begin(), f->label_names.end());
  if (std::adjacent_find(f->label_names.begin(), f->label_names.end()) != f->label_names.end()) {
    Fatal("repeated label name for metric " + std::string(name));
  }
  return *families_.emplace(std::string(name), std::move(f)).first->second;
}

Counter& MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     const MetricLabels& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyFor(name, help, kCounter, labels, {});
  auto& series = f.series[f.Key(name, labels)];
  if (!series.counter) series.counter = std::make_unique<Counter>();
  return *series.counter;
}

Gauge& MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 const MetricLabels& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyFor(name, help, kGauge, labels, {});
  auto& series = f.series[f.Key(name, labels)];
  if (!series.gauge) series.gauge = std::make_unique<Gauge>();
  return *series.gauge;
}

Histogram& MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         std::span<const double> bounds,
                                         const MetricLabels& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyFor(name, help, kHistogram, labels, bounds);
  auto& series = f.series[f.Key(name, labels)];
  if (!series.histogram) series.histogram = std::make_unique<Histogram>(f.bounds);
  return *series.histogram;
}

std::string MetricsRegistry::RenderPrometheus() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    const Family& f = *family;
    out += "# HELP " + name + " " + EscapeHelp(f.help) + "\n";
    out += "# TYPE " + name + " " + kTypeNames[f.type] + "\n";
    for (const auto& [values, series] : f.series) {
      // `name="value",...` without braces, so that histograms can append le.
      std::string labels;
      for (std::size_t i = 0; i < values.size(); ++i) {
        if (i > 0) labels += ',';
        labels += f.label_names[i] + "=\"" + EscapePrometheusLabelValue(values[i]) + "\"";
      }
      const std::string braced = labels.empty() ? "" : "{" + labels + "}";
      // One sample line: name, suffix, {labels}, value.
      auto line = [&out](const std::string& metric, std::string_view suffix,
                         const std::string& label_block, const std::string& value) {
        out.append(metric)
            .append(suffix)
            .append(label_block)
            .append(" ")
            .append(value)
            .append("\n");
      };
      if (f.type == kCounter) {
        line(name, "", braced, std::to_string(series.counter->value()));
      } else if (f.type == kGauge) {
        line(name, "", braced, FormatDouble(series.gauge->value()));
      } else {
        Histogram::Snapshot s = series.histogram->Read();
        std::string prefix = "{";
        if (!labels.empty()) prefix.append(labels).append(",");
        for (std::size_t i = 0; i <= f.bounds.size(); ++i) {
          std::string block = prefix;
          block.append("le=\"")
              .append(i < f.bounds.size() ? FormatDouble(f.bounds[i]) : "+Inf")
              .append("\"}");
          line(name, "_bucket", block, std::to_string(s.cumulative[i]));
        }
        line(name, "_sum", braced, FormatDouble(s.sum));
        line(name, "_count", braced, std::to_string(s.count));
      }
    }
  }
  return out;
}

}  // namespace kadr
