#include "common/metrics.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kadr {
namespace {

TEST(MetricsTest, RendersCounterWithLabelsSortedByName) {
  MetricsRegistry registry;
  registry.GetCounter("kadr_requests_total", "Requests served.", {{"route", "/a"}, {"code", "200"}})
      .Increment(2);
  registry.GetCounter("kadr_requests_total", "Requests served.", {{"code", "404"}, {"route", "/b"}})
      .Increment();
  EXPECT_EQ(registry.RenderPrometheus(),
            "# HELP kadr_requests_total Requests served.\n"
            "# TYPE kadr_requests_total counter\n"
            "kadr_requests_total{code=\"200\",route=\"/a\"} 2\n"
            "kadr_requests_total{code=\"404\",route=\"/b\"} 1\n");
}

TEST(MetricsTest, RemoveSeriesDropsEverySeriesWithThatLabelValueOnly) {
  MetricsRegistry r;
  r.GetCounter("kadr_frames_total", "Frames.", {{"stream", "s1"}, {"outcome", "done"}}).Increment();
  r.GetCounter("kadr_frames_total", "Frames.", {{"stream", "s2"}, {"outcome", "done"}}).Increment();
  r.GetGauge("kadr_state", "State.", {{"stream", "s1"}}).Set(1);
  r.GetGauge("kadr_other", "Other.", {{"model", "s1"}}).Set(1);  // another label of that value
  EXPECT_EQ(r.RemoveSeries("stream", "s1"), 2u);
  const std::string text = r.RenderPrometheus();
  EXPECT_EQ(text.find(R"(stream="s1")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(kadr_frames_total{outcome="done",stream="s2"} 1)"), std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(kadr_other{model="s1"} 1)"), std::string::npos) << text;
  EXPECT_EQ(r.RemoveSeries("stream", "s1"), 0u);
  // The series can be made again, from zero.
  EXPECT_EQ(r.GetGauge("kadr_state", "State.", {{"stream", "s1"}}).value(), 0.0);
}

TEST(MetricsTest, SameLabelsReturnSameSeries) {
  MetricsRegistry registry;
  Counter& a = registry.GetCounter("c_total", "h", {{"x", "1"}, {"y", "2"}});
  Counter& b = registry.GetCounter("c_total", "h", {{"y", "2"}, {"x", "1"}});
  EXPECT_EQ(&a, &b);
}

TEST(MetricsTest, RendersGauge) {
  MetricsRegistry registry;
  Gauge& g = registry.GetGauge("kadr_in_flight", "Requests in flight.");
  g.Set(3);
  g.Add(1.5);
  g.Sub(2);
  EXPECT_EQ(registry.RenderPrometheus(),
            "# HELP kadr_in_flight Requests in flight.\n"
            "# TYPE kadr_in_flight gauge\n"
            "kadr_in_flight 2.5\n");
}

TEST(MetricsTest, RendersHistogramWithCumulativeBucketsSumAndCount) {
  MetricsRegistry registry;
  const double bounds[] = {0.1, 1, 10};
  Histogram& h =
      registry.GetHistogram("kadr_latency_seconds", "Latency.", bounds, {{"stage", "detect"}});
  h.Observe(0.05);
  h.Observe(0.1);  // upper bounds are inclusive
  h.Observe(2);
  h.Observe(20);
  EXPECT_EQ(registry.RenderPrometheus(),
            "# HELP kadr_latency_seconds Latency.\n"
            "# TYPE kadr_latency_seconds histogram\n"
            "kadr_latency_seconds_bucket{stage=\"detect\",le=\"0.1\"} 2\n"
            "kadr_latency_seconds_bucket{stage=\"detect\",le=\"1\"} 2\n"
            "kadr_latency_seconds_bucket{stage=\"detect\",le=\"10\"} 3\n"
            "kadr_latency_seconds_bucket{stage=\"detect\",le=\"+Inf\"} 4\n"
            "kadr_latency_seconds_sum{stage=\"detect\"} 22.15\n"
            "kadr_latency_seconds_count{stage=\"detect\"} 4\n");
}

TEST(MetricsTest, DefaultLatencyBucketsWithoutLabels) {
  MetricsRegistry registry;
  registry.GetHistogram("d_seconds", "D.").Observe(0.007);
  std::string text = registry.RenderPrometheus();
  EXPECT_NE(text.find("d_seconds_bucket{le=\"0.005\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"0.01\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"10\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"+Inf\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_count 1\n"), std::string::npos) << text;
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  MetricsRegistry registry;
  registry.GetCounter("e_total", "Line one\nback\\slash", {{"path", "a\"b\\c\nd"}}).Increment();
  EXPECT_EQ(registry.RenderPrometheus(),
            "# HELP e_total Line one\\nback\\\\slash\n"
            "# TYPE e_total counter\n"
            "e_total{path=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricsTest, FamiliesAreSortedByName) {
  MetricsRegistry registry;
  registry.GetGauge("b", "B.");
  registry.GetCounter("a_total", "A.");
  std::string text = registry.RenderPrometheus();
  EXPECT_LT(text.find("a_total"), text.find("# HELP b "));
}

TEST(MetricsTest, ConcurrentUpdatesFromSeveralThreadsAreAllCounted) {
  MetricsRegistry registry;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&registry] {
      // Looked up concurrently too: creation must be race-free.
      Counter& c = registry.GetCounter("n_total", "N.", {{"k", "v"}});
      Gauge& g = registry.GetGauge("g", "G.");
      const double bounds[] = {1};
      Histogram& h = registry.GetHistogram("h", "H.", bounds);
      for (int i = 0; i < kPerThread; ++i) {
        c.Increment();
        g.Add(1);
        h.Observe(0.5);
      }
    });
  }
  std::string during = registry.RenderPrometheus();  // rendering while updating is safe
  for (auto& t : threads) t.join();
  constexpr int kTotal = kThreads * kPerThread;
  EXPECT_EQ(registry.GetCounter("n_total", "N.", {{"k", "v"}}).value(), kTotal);
  EXPECT_EQ(registry.GetGauge("g", "G.").value(), kTotal);
  const double bounds[] = {1};
  Histogram::Snapshot s = registry.GetHistogram("h", "H.", bounds).Read();
  EXPECT_EQ(s.count, kTotal);
  EXPECT_EQ(s.cumulative.front(), kTotal);
  EXPECT_DOUBLE_EQ(s.sum, 0.5 * kTotal);
}

TEST(MetricsDeathTest, ReusingANameWithAnotherTypeAborts) {
  MetricsRegistry registry;
  registry.GetCounter("x_total", "X.");
  EXPECT_DEATH(registry.GetGauge("x_total", "X."), "registered twice");
}

TEST(MetricsDeathTest, InvalidNamesAbort) {
  MetricsRegistry registry;
  EXPECT_DEATH(registry.GetCounter("1bad", "B."), "invalid metric name");
  EXPECT_DEATH(registry.GetCounter("ok_total", "B.", {{"__reserved", "v"}}), "invalid label");
  const double bounds[] = {1};
  EXPECT_DEATH(registry.GetHistogram("h", "H.", bounds, {{"le", "1"}}), "invalid label");
  const double unsorted[] = {2, 1};
  EXPECT_DEATH(registry.GetHistogram("u", "U.", unsorted), "strictly increasing");
}

TEST(MetricsDeathTest, DifferentLabelNamesAbort) {
  MetricsRegistry registry;
  registry.GetCounter("y_total", "Y.", {{"a", "1"}});
  EXPECT_DEATH(registry.GetCounter("y_total", "Y.", {{"b", "1"}}), "different label names");
}

}  // namespace
}  // namespace kadr
