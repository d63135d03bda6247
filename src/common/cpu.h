// How many cores this process may use: the CPUs its affinity mask allows, capped by its
// cgroup's CPU quota (a container started with `--cpus 2`, a Kubernetes CPU limit). Thread
// pools are sized from it, so a container limited to 2 CPUs on a 64-core host runs 2 inference
// threads, not 64.
#pragma once

#include <optional>
#include <string_view>

namespace kadr::cpu {

// At least 1. The minimum of the affinity mask's CPU count and, for the process's cgroup and
// each of its ancestors, ceil(quota / period) from cgroup v2's cpu.max (cgroup v1's
// cpu.cfs_quota_us / cpu.cfs_period_us at the hierarchy's root). A host with no limit gives
// the affinity count (std::thread::hardware_concurrency() where that cannot be read).
int UsableCores();

// The cores one cgroup v2 cpu.max line allows, rounded up: "200000 100000" -> 2,
// "150000 100000" -> 2, "50000 100000" -> 1. nullopt for "max ..." (no limit) and for text
// that is not two positive integers.
std::optional<int> CoresFromCpuMax(std::string_view text);

}  // namespace kadr::cpu
