// The mount flow (docs/guest.md "Mount"): plan -> directories and journal -> lowers (lower.cpp)
// -> upper (upper.cpp) -> mkdir directives -> rootfs (rootfs.cpp); any failure rolls back
// through the teardown (teardown.cpp).
#include "evmdk/guest/driver.h"

#include <cerrno>
#include <chrono>

#include "crash_injection.h"
#include "evmdk/contract/container_id.h"
#include "evmdk/error.h"
#include "evmdk/guest/journal.h"
#include "evmdk/guest/mkdir_directive.h"
#include "evmdk/guest/mountinfo.h"
#include "evmdk/guest/plan.h"
#include "evmdk/guest/safe_path.h"
#include "lower.h"
#include "mount_session.h"
#include "rootfs.h"
#include "teardown.h"
#include "upper.h"

namespace evmdk::guest {
namespace {

using detail::ContainerPaths;
using detail::MountSession;

// Wall-clock milliseconds of each step, in order (MountResult::step_ms).
class StepTimes {
 public:
  explicit StepTimes(std::vector<std::pair<std::string, double>>& out) : out_(out) {}
  void finished(const char* step) {
    auto now = Clock::now();
    out_.emplace_back(step, std::chrono::duration<double, std::milli>(now - started_).count());
    started_ = now;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::vector<std::pair<std::string, double>>& out_;
  Clock::time_point started_ = Clock::now();
};

// The storages as a plan the policy allows; refused, naming the rule, before anything is done.
Plan checked_plan(const MountRequest& request) {
  contract::validate_container_id(request.container_id);
  if (request.rootfs.empty()) throw Error("no rootfs mount point given");
  Plan plan = make_plan(request.storages);
  check_plan_policy(plan, request.policy);
  detail::check_verity_names_fit(plan.lowers, request.container_id);
  return plan;
}

// Paths are taken as given (made absolute, never resolved through a symlink): a symlink in
// them is refused when the directories are created.
ContainerPaths container_paths(const MountRequest& request, const Plan& plan) {
  ContainerPaths paths;
  paths.base = normal_absolute(request.base_dir);
  paths.rootfs = normal_absolute(request.rootfs);
  paths.container_dir = paths.base + "/" + request.container_id;
  paths.layer_dir = paths.container_dir + "/multi-layer";
  paths.upper_dir = paths.layer_dir + "/upper";
  for (const auto& lower : plan.lowers) {
    paths.lowers.push_back(fmt::format("{}/lower-{}", paths.layer_dir, lower.index));
  }
  return paths;
}

// The base directory (shared by containers: created, never removed), refusing a container that
// is mounted already or was not torn down.
void prepare_base(const ContainerPaths& paths, const std::string& container_id) {
  make_dirs_nofollow(paths.base, 0755, "base directory", nullptr);
  if (load_journal(paths.base, container_id)) {
    throw Error(
        "container {} is already mounted or was not torn down (journal {} exists); run "
        "teardown first",
        container_id, journal_path(paths.base, container_id));
  }
}

// Refuses `dir` when it is, or holds, a mount point (or cannot be reached without symlinks):
// a rollback or teardown must never take away mounts it did not make.
void refuse_existing_mounts(const std::string& dir, const std::string& what) {
  if (!open_nofollow(dir)) {
    if (errno == ENOENT) return;
    throw_errno("{} {} cannot be reached without following a symlink", what, dir);
  }
  auto mounts = mounts_under(dir);
  if (!mounts.empty()) {
    throw Error("{} {} already holds {} mount(s) (first: {} {}); refusing to mount there", what,
                dir, mounts.size(), mounts.front().fstype, mounts.front().mount_point);
  }
}

Journal new_journal(const MountRequest& request, const ContainerPaths& paths) {
  Journal journal;
  journal.container_id = request.container_id;
  journal.base_dir = paths.base;
  journal.rootfs = paths.rootfs;
  journal.phase = "mounting";
  return journal;
}

MountResult new_result(const Plan& plan, const ContainerPaths& paths) {
  MountResult result;
  result.rootfs = paths.rootfs;
  result.rootfs_kind = kind_name(plan.kind);
  result.read_only = plan.read_only || plan.kind == RootfsKind::ReadOnlyOverlay;
  if (detail::has_upper(plan)) result.upper = paths.upper_dir;
  result.lowers = paths.lowers;
  return result;
}

// The container's directories, each journaled as it is created; then every mount is journaled
// before any is made, in one write (teardown skips those that never happened), so a crash at
// any point leaves nothing the journal does not name. Each mount's id is recorded once made.
void create_directories(MountSession& session, const Plan& plan, const ContainerPaths& paths) {
  session.save();  // first, so even a crash inside mkdir leaves a journal behind
  session.make_dirs(paths.container_dir, 0700, "container directory");
  if (plan.kind != RootfsKind::VirtioFs) {
    session.make_dirs(paths.layer_dir, 0755, "layer directory");
  }
  if (detail::has_upper(plan)) session.make_dirs(paths.upper_dir, 0755, "upper directory");
  for (const auto& lower : paths.lowers) session.make_dirs(lower, 0755, "lower directory");
  session.make_dirs(paths.rootfs, 0755, "rootfs");
  std::vector<JournalMount> mount_points;
  for (const auto& lower : paths.lowers) mount_points.push_back({lower, 0, "erofs"});
  if (detail::has_upper(plan)) {
    mount_points.push_back({paths.upper_dir, 0, plan.upper != nullptr ? "ext4" : "tmpfs"});
  }
  mount_points.push_back({paths.rootfs, 0, detail::rootfs_fstype(plan)});
  session.will_mount_all(mount_points);
}

// mkdir directives, then the writable overlay's own upper/work directories.
void apply_mkdir_directives(const Plan& plan, const ContainerPaths& paths) {
  for (const auto& [spec, directive] : plan.mkdirs) {
    apply_mkdir_directive(paths.mount_root(directive.mount_index), directive, spec);
  }
  if (plan.kind != RootfsKind::Overlay) return;
  for (const char* name : {"upper", "work"}) {
    apply_mkdir_directive(paths.upper_dir, MkdirDirective{0, name, 0755, {}, {}},
                          fmt::format("{{{{ mount 0 }}}}/{}:0755", name));
  }
}

// Undoes a failed mount (a teardown driven by its journal) and throws the failure, saying
// whether everything was undone.
[[noreturn]] void roll_back(MountSession& session, const MountRequest& request,
                            const ContainerPaths& paths, const std::exception& failure) {
  try {
    session.save();  // the mount ids recorded so far: the rollback finds each by its id
  } catch (const std::exception&) {
    // The journal on disk still names every mount point; the rollback falls back to those.
  }
  TeardownRequest undo;
  undo.container_id = request.container_id;
  undo.rootfs = paths.rootfs;
  undo.base_dir = paths.base;
  TeardownReport report = detail::run_teardown(undo, true);
  std::string rollback = report.clean() ? "rolled back" : "rollback incomplete: ";
  for (size_t i = 0; i < report.problems.size(); ++i) {
    rollback += (i ? "; " : "") + report.problems[i];
  }
  throw Error("mounting container {} failed: {} ({})", request.container_id, failure.what(),
              rollback);
}

}  // namespace

MountResult mount_rootfs(const MountRequest& request) {
  Plan plan = checked_plan(request);
  ContainerPaths paths = container_paths(request, plan);
  if (auto why = rootfs_refusal(paths.rootfs, paths.base, request.container_id); !why.empty()) {
    throw Error("rootfs {} refused: {}", paths.rootfs, why);
  }
  prepare_base(paths, request.container_id);
  // The upper disk is found (and its size checked against the policy) before anything is made.
  std::string upper_device = detail::find_upper_disk(plan, request);
  refuse_existing_mounts(paths.rootfs, "rootfs");
  refuse_existing_mounts(paths.container_dir, "container directory");

  MountSession session(new_journal(request, paths), request.policy);
  detail::CrashInjection crash(request.crash_after);
  MountResult result = new_result(plan, paths);
  StepTimes times(result.step_ms);
  try {
    create_directories(session, plan, paths);
    times.finished("dirs");
    crash.step_done("mount:dirs");

    detail::LowersOutcome lowers =
        detail::mount_lowers(session, plan.lowers, paths.lowers, request);
    result.loop_devices = lowers.loops;
    result.verity_devices = lowers.verity_devices;
    result.flat_device_mode = lowers.flat_device_mode;
    result.dax = lowers.dax;
    result.warnings = lowers.warnings;
    times.finished("lowers");
    crash.step_done("mount:lowers");

    detail::mount_upper(plan, upper_device, paths.upper_dir);
    if (detail::has_upper(plan)) {
      session.mounted(paths.upper_dir);
      session.save();
    }
    times.finished("upper");
    crash.step_done("mount:upper");

    apply_mkdir_directives(plan, paths);
    times.finished("mkdir");
    crash.step_done("mount:mkdir");

    detail::mount_rootfs_shape(plan, paths, request.try_lowerdir_plus, result);
    session.mounted(paths.rootfs);
    times.finished("rootfs");
    session.set_phase("mounted");
    crash.step_done(plan.kind == RootfsKind::Overlay ? "mount:overlay" : "mount:rootfs");
    return result;
  } catch (const std::exception& error) {
    roll_back(session, request, paths, error);
  }
}

}  // namespace evmdk::guest
