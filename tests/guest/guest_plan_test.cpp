// make_plan and the guest policy, directly (no root): per-role option allowlists, fixed
// filesystem types, range-checked numbers, and policy rules refused with the storage named.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <string>
#include <vector>

#include "evmdk/contract/container_id.h"
#include "evmdk/error.h"
#include "evmdk/guest/plan.h"
#include "evmdk/guest/policy.h"
#include "test_support.h"

namespace evmdk::guest {
namespace {

Storage lower(std::vector<std::string> extra = {}) {
  Storage s{"blk", {}, "/dev/vdb", "erofs", {"ro", "X-kata.overlay-lower", "loop"}, ""};
  s.options.insert(s.options.end(), extra.begin(), extra.end());
  return s;
}

Storage upper(std::vector<std::string> extra = {}) {
  Storage s{"blk", {}, "/dev/vdc", "ext4", {"rw", "X-kata.overlay-upper"}, ""};
  s.options.insert(s.options.end(), extra.begin(), extra.end());
  return s;
}

std::string refusal(const std::vector<Storage>& storages, const Policy* policy = nullptr) {
  try {
    Plan plan = make_plan(storages);
    if (policy) check_plan_policy(plan, *policy);
  } catch (const Error& error) {
    return error.what();
  }
  return "<accepted>";
}

std::vector<std::string> verity(const std::string& algorithm = "",
                                const std::string& hash = std::string(64, 'a')) {
  std::vector<std::string> out{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=" + hash,
                               "X-kata.dmverity.hashoffset=4096"};
  if (!algorithm.empty()) out.push_back("X-kata.dmverity.algorithm=" + algorithm);
  return out;
}

TEST(GuestPlan, LayerMountsAreAlwaysNodevNosuidAndLowersReadOnly) {
  std::vector<Storage> storages{lower({"noatime", "cache_strategy=readaround"}),
                                upper({"noexec", "commit=30"})};
  Plan plan = make_plan(storages);
  ASSERT_EQ(plan.lowers.size(), 1u);
  EXPECT_EQ(plan.lowers[0].mount.flags & (MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOATIME),
            static_cast<unsigned long>(MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOATIME));
  EXPECT_EQ(plan.lowers[0].mount.data, "cache_strategy=readaround");
  EXPECT_EQ(plan.upper_mount.flags & (MS_NODEV | MS_NOSUID | MS_NOEXEC),
            static_cast<unsigned long>(MS_NODEV | MS_NOSUID | MS_NOEXEC));
  EXPECT_EQ(plan.upper_mount.data, "commit=30");
}

TEST(GuestPlan, RefusesOptionsOutsideEachRolesAllowlist) {
  struct Case {
    std::vector<Storage> storages;
    std::vector<std::string> needles;
  };
  std::vector<Case> cases{
      {{lower({"X-erofs-vmdk.overlay-option=lowerdir+=/etc"}), upper()},
       {"storage #0 '/dev/vdb'", "lowerdir+=/etc"}},
      {{lower({"X-erofs-vmdk.overlay-option=upperdir=/x"}), upper()},
       {"storage #0", "upperdir=/x"}},
      {{lower({"X-erofs-vmdk.overlay-option=workdir=/x"}), upper()}, {"workdir=/x"}},
      {{lower({"X-erofs-vmdk.overlay-option=datadir+=/x"}), upper()}, {"datadir+=/x"}},
      {{lower({"X-erofs-vmdk.overlay-option=lowerdir=/x"}), upper()}, {"lowerdir=/x"}},
      {{lower({"X-erofs-vmdk.overlay-option=xino=on,upperdir=/x"}), upper()},
       {"xino=on,upperdir=/x"}},
      {{lower({"X-erofs-vmdk.overlay-option"}), upper()}, {"needs a value"}},
      {{lower({"device=/dev/vda"}), upper()}, {"storage #0", "'device=/dev/vda'"}},
      {{lower({"rw"}), upper()}, {"storage #0", "'rw'"}},
      {{lower({"suid"}), upper()}, {"'suid'"}},
      {{lower(), upper({"dev"})}, {"storage #1 '/dev/vdc'", "'dev'"}},
      {{lower(), upper({"exec"})}, {"storage #1", "'exec'"}},
      {{lower(), upper({"size=1m"})}, {"storage #1", "'size=1m'"}},
      {{lower(), upper({"commit=99999999999"})}, {"storage #1", "commit=99999999999"}},
      {{lower(),
        Storage{"blk", {}, "/dev/vdc", "tmpfs", {"X-kata.overlay-upper", "mode=0777"}, ""}},
       {"storage #1", "must be ext4, not 'tmpfs'"}},
      {{lower({"X-erofs-vmdk.layer-index=4294967296"})},
       {"storage #0", "X-erofs-vmdk.layer-index", "4294967296"}},
      {{lower({"X-erofs-vmdk.layer-index=-1"})}, {"X-erofs-vmdk.layer-index", "'-1'"}},
      {{lower({"X-kata.partition-number=4294967297"})}, {"X-kata.partition-number"}},
      {{lower({"X-kata.partition-number=0"})}, {"storage #0", "X-kata.partition-number", "'0'"}},
      {{lower({"X-erofs-vmdk.device.70000.dmverity.roothash=aa"})},
       {"device 70000", "at most 1024"}},
      {{lower(), Storage{"blk", {}, "x", "xfs", {}, ""}}, {"storage #1", "fstype 'xfs'"}},
  };
  for (const auto& c : cases) {
    std::string what = refusal(c.storages);
    for (const auto& needle : c.needles)
      EXPECT_NE(what.find(needle), std::string::npos) << needle << " in: " << what;
  }
  for (std::string map : {"uidmap=0:1000", "uidmap=0:1:0", "gidmap=1:4294967295:2", "uidmap=0:x:1",
                          "uidmap=0:1:1:"}) {
    std::string what = refusal({lower({"X-erofs-vmdk.overlay-option=" + map}), upper()});
    EXPECT_NE(what.find(map + " is refused"), std::string::npos) << what;
  }
  // Allowed overlay options pass (uidmap/gidmap as the hook forwards containerd's).
  EXPECT_EQ(refusal({lower({"X-erofs-vmdk.overlay-option=uidmap=0:100000:65536",
                            "X-erofs-vmdk.overlay-option=gidmap=0:100000:65536:65536:200000:1"}),
                     upper()}),
            "<accepted>");
  EXPECT_EQ(refusal({lower({"X-erofs-vmdk.overlay-option=redirect_dir=on",
                            "X-erofs-vmdk.overlay-option=metacopy=on",
                            "X-erofs-vmdk.overlay-option=volatile",
                            "X-erofs-vmdk.overlay-option=userxattr"}),
                     upper()}),
            "<accepted>");
}

// Issue 14 item 2: block mode's read-only view without parents. The upper disk is attached
// read-only and its storage says 'ro'; the rootfs can only be a read-only bind of it.
TEST(GuestPlan, ReadOnlyUpperOnlyBehindAReadOnlyBind) {
  auto read_only_upper = [](std::vector<std::string> extra) {
    Storage s{"blk", {}, "/dev/vdc", "ext4", {"ro", "X-kata.overlay-upper"}, ""};
    s.options.insert(s.options.end(), extra.begin(), extra.end());
    return s;
  };
  std::vector<Storage> view{read_only_upper({"X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
                                             "X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper",
                                             "X-erofs-vmdk.rootfs-readonly=true"})};
  Plan plan = make_plan(view);
  EXPECT_EQ(plan.kind, RootfsKind::Bind);
  EXPECT_TRUE(plan.read_only);
  EXPECT_EQ(plan.bind.mount_index, 0u);
  EXPECT_EQ(plan.bind.path, "upper");
  EXPECT_EQ(plan.upper_mount.flags & (MS_RDONLY | MS_NODEV | MS_NOSUID),
            static_cast<unsigned long>(MS_RDONLY | MS_NODEV | MS_NOSUID));

  // A writable bind or a writable overlay of a read-only upper is a contradiction.
  std::string what = refusal({read_only_upper({"X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper"})});
  EXPECT_NE(what.find("upper storage '/dev/vdc' is read-only (option 'ro')"), std::string::npos)
      << what;
  EXPECT_NE(what.find("X-erofs-vmdk.rootfs-readonly=true"), std::string::npos) << what;
  what = refusal({lower(), read_only_upper({})});
  EXPECT_NE(what.find("a writable overlay needs a writable upper"), std::string::npos) << what;
  // The writable upper's bind stays writable.
  std::vector<Storage> writable_storages{upper({"X-erofs-vmdk.rootfs-bind={{ mount 0 }}/upper"})};
  Plan writable = make_plan(writable_storages);
  EXPECT_FALSE(writable.read_only);
  EXPECT_EQ(writable.upper_mount.flags & MS_RDONLY, 0u);
}

TEST(GuestPolicy, DefaultAllowsUnprotectedLowersButNotWeakHashes) {
  Policy policy;
  EXPECT_EQ(refusal({lower(), upper()}, &policy), "<accepted>");
  EXPECT_EQ(refusal({lower(verity("sha512", std::string(128, 'b')))}, &policy), "<accepted>");
  for (std::string weak : {"md5", "sha1"}) {
    std::string what = refusal({lower(verity(weak))}, &policy);
    EXPECT_NE(what.find("storage #0 '/dev/vdb'"), std::string::npos) << what;
    EXPECT_NE(what.find("'" + weak + "' is not allowed"), std::string::npos) << what;
  }
}

TEST(GuestPolicy, RequireVerityRootHashesAndUpperSize) {
  Policy policy = policy_from_json(nlohmann::json{{"require_verity", true},
                                                  {"root_hashes", {std::string(64, 'A')}},
                                                  {"max_upper_bytes", 1000}},
                                   "policy test.json");
  std::string what = refusal({lower(verity()), lower({"X-erofs-vmdk.layer-index=1"})}, &policy);
  EXPECT_NE(what.find("storage #1"), std::string::npos) << what;
  EXPECT_NE(what.find("requires dm-verity on every lower"), std::string::npos) << what;
  EXPECT_NE(what.find("policy test.json"), std::string::npos) << what;
  EXPECT_EQ(refusal({lower(verity())}, &policy),
            "<accepted>");  // root hashes compare in lower case
  what = refusal({lower(verity("", std::string(64, 'c')))}, &policy);
  EXPECT_NE(what.find("not in the allowed root hashes"), std::string::npos) << what;
  Storage share{"virtio-fs", {}, "tag", "virtiofs", {"rw"}, ""};
  what = refusal({share}, &policy);
  EXPECT_NE(what.find("cannot be verified"), std::string::npos) << what;
  EXPECT_THROW(check_upper_size(policy, 1001, "upper"), Error);
  EXPECT_NO_THROW(check_upper_size(policy, 1000, "upper"));
  EXPECT_THROW(check_device_verity(policy, false, "device 1"), Error);
}

TEST(GuestPolicy, PolicyFilesAreStrict) {
  for (auto bad : {R"({"require_verity": "yes"})", R"({"verity_algorithms": ["md5"]})",
                   R"({"verity_algorithms": []})", R"({"root_hashes": ["xyz"]})",
                   R"({"max_upper_bytes": -1})", R"({"requireVerity": true})", "[]"}) {
    EXPECT_THROW(policy_from_json(nlohmann::json::parse(bad), "p"), Error) << bad;
  }
  test::TempDir temp;
  test::write_file(temp / "policy.json",
                   R"({"require_verity": true, "verity_algorithms": ["SHA256"]})");
  Policy policy = load_policy(temp / "policy.json");
  EXPECT_TRUE(policy.require_verity);
  EXPECT_EQ(policy.verity_algorithms, std::vector<std::string>{"sha256"});
  EXPECT_NE(policy.origin.find(temp / "policy.json"), std::string::npos);
}

// Review finding: a rootfs made only of the host's upper disk slipped past require_verity.
TEST(GuestPolicy, RequireVerityRefusesARootfsOfTheUpperAlone) {
  Policy policy = policy_from_json(nlohmann::json{{"require_verity", true}}, "policy strict.json");
  std::string what = refusal({upper({"X-erofs-vmdk.rootfs-bind={{ mount 0 }}/rootfs"})}, &policy);
  EXPECT_NE(what.find("unverified upper"), std::string::npos) << what;
  EXPECT_NE(what.find("policy strict.json"), std::string::npos) << what;
  Policy lax;
  EXPECT_EQ(refusal({upper({"X-erofs-vmdk.rootfs-bind={{ mount 0 }}/rootfs"})}, &lax),
            "<accepted>");
}

// Review finding: the agent's overrides replaced the policy file's lists instead of narrowing.
TEST(GuestPolicy, OverridesOnlyNarrowThePolicyFile) {
  test::TempDir temp;
  std::string a(64, 'a'), b(64, 'b');
  test::write_file(temp / "policy.json",
                   fmt::format(R"({{"verity_algorithms": ["sha512"], "root_hashes": ["{}"]}})", a));
  EXPECT_THROW(effective_policy(temp / "policy.json", {{"root_hashes", {b}}}), Error);
  EXPECT_THROW(effective_policy(temp / "policy.json", {{"verity_algorithms", {"sha256"}}}), Error);
  Policy narrowed =
      effective_policy(temp / "policy.json", {{"root_hashes", {a, b}}, {"require_verity", true}});
  EXPECT_EQ(narrowed.root_hashes, std::vector<std::string>{a});
  EXPECT_EQ(narrowed.verity_algorithms, std::vector<std::string>{"sha512"});
  EXPECT_TRUE(narrowed.require_verity);
  test::write_file(temp / "any.json", "{}");
  EXPECT_EQ(effective_policy(temp / "any.json", {{"root_hashes", {b}}}).root_hashes,
            std::vector<std::string>{b});
}

TEST(StorageSpec, WrongTypesAreRefusedNamingTheStorageAndField) {
  struct Case {
    const char* json;
    std::vector<std::string> needles;
  };
  for (const auto& c : std::vector<Case>{
           {R"([{"source": "/dev/vdb", "fstype": 7}])",
            {"storage #0 '/dev/vdb'", "'fstype'", "number"}},
           {R"([{"source": "a"}, {"source": "b", "options": "ro"}])",
            {"storage #1 'b'", "'options'"}},
           {R"([{"source": "a", "options": ["ro", 1]}])", {"storage #0 'a'", "'options' item 1"}},
           {R"([{"source": "/dev/vdb\u0000x"}])", {"storage #0", "NUL"}},
           {R"([{"source": 3}])", {"storage #0:", "'source'"}},
           {R"({"source": "a"})", {"JSON array"}},
       }) {
    try {
      storages_from_json(nlohmann::json::parse(c.json));
      ADD_FAILURE() << "accepted " << c.json;
    } catch (const Error& error) {
      for (const auto& needle : c.needles)
        EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  }
}

TEST(ContainerId, OneRuleForHostAndGuest) {
  for (std::string ok :
       std::vector<std::string>{"c", "abc-123_x.y", "x.journal.json", std::string(128, 'a')}) {
    EXPECT_NO_THROW(contract::validate_container_id(ok)) << ok;
  }
  struct Case {
    std::string id;
    std::string needle;
  };
  for (const auto& c : std::vector<Case>{{"", "1..128 bytes"},
                                         {std::string(129, 'a'), "1..128 bytes"},
                                         {"../outside/pwn", "must not start with '.'"},
                                         {"-rf", "must not start with '.' or '-'"},
                                         {"a/b", "[A-Za-z0-9_.-]"},
                                         {"a\nb", "'a\\x0ab'"},
                                         {std::string("a\0b", 3), "'a\\x00b'"}}) {
    try {
      contract::validate_container_id(c.id);
      ADD_FAILURE() << "accepted " << c.id;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(c.needle), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace evmdk::guest
