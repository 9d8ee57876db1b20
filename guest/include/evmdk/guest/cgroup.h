#pragma once
// Killing a container's processes and removing its cgroups, for teardown. A container may be
// given as several cgroup directories (one per v1 controller hierarchy, or one v2 cgroup).
#include <chrono>
#include <string>
#include <vector>

namespace evmdk::guest {

// Kills every process in the cgroups (and their descendants) until they are empty:
// cgroup v2 `cgroup.kill` where present; otherwise freeze (v2 cgroup.freeze or the v1 freezer
// among `cgroups`), SIGKILL every pid, thaw, repeat. Returns problems (empty on success).
std::vector<std::string> kill_cgroup_processes(const std::vector<std::string>& cgroups,
                                               std::chrono::milliseconds timeout);

// Removes each cgroup directory tree leaves first, retrying EBUSY until `timeout`. Missing
// directories are fine (idempotent). Returns problems.
std::vector<std::string> remove_cgroups(const std::vector<std::string>& cgroups,
                                        std::chrono::milliseconds timeout);

// Pids currently in the cgroup and its descendants.
std::vector<int> cgroup_pids(const std::string& cgroup);

}  // namespace evmdk::guest
