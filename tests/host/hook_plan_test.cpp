// Classification of containerd EROFS-snapshotter mount lists (pure: no files touched).
#include <gmock/gmock.h>

#include "evmdk/error.h"
#include "evmdk/host/hook/hook_plan.h"
#include "test_support.h"

namespace evmdk::host {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

HookPlan plan_of(const std::string& json_text) {
  return plan_mounts(parse_mount_list_text(json_text, "test"));
}

std::string error_of(const std::string& json_text) {
  try {
    plan_of(json_text);
  } catch (const Error& error) {
    return error.what();
  }
  return "<no error>";
}

std::vector<std::string> images(const HookPlan& plan) {
  std::vector<std::string> out;
  for (const auto& lower : plan.lowers) out.push_back(lower.image);
  return out;
}

TEST(HookParse, AcceptsCapitalisedAndLowerCaseFieldNames) {
  auto lower = parse_mount_list_text(
      R"([{"type":"erofs","source":"/s/1/layer.erofs","options":["ro","loop"]}])", "x");
  auto upper = parse_mount_list_text(
      R"({"Mounts":[{"Type":"erofs","Source":"/s/1/layer.erofs","Target":"","Options":["ro"]}]})",
      "x");
  ASSERT_EQ(lower.size(), 1u);
  ASSERT_EQ(upper.size(), 1u);
  EXPECT_EQ(lower[0].type, upper[0].type);
  EXPECT_EQ(lower[0].source, upper[0].source);
  EXPECT_THAT(upper[0].options, ElementsAre("ro"));
}

TEST(HookParse, ErrorsNameTheMountAndField) {
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/a"}, {"source":"/b"}])"),
              HasSubstr("mount 1: missing 'type'"));
  EXPECT_THAT(error_of(R"([{"type":"erofs","options":"ro"}])"),
              HasSubstr("mount 0: 'options' must be an array"));
  EXPECT_THAT(error_of(R"([{"type":"erofs","Type":"erofs"}])"), HasSubstr("both 'type' and 'Type'"));
  EXPECT_THAT(error_of("[]"), HasSubstr("empty"));
  EXPECT_THAT(error_of("{not json"), HasSubstr("test: not valid JSON"));
}

constexpr const char* kBlockMode = R"([
  {"type":"mkfs/ext4","source":"/s/9/rwlayer.img",
   "options":["X-containerd.mkfs.fs=ext4","X-containerd.mkfs.size=67108864","rw","loop"]},
  {"type":"erofs","source":"/s/3/layer.erofs","options":["ro","loop"]},
  {"type":"erofs","source":"/s/2/layer.erofs","options":["ro","loop","X-containerd.dmverity=/s/2/layer.erofs.dmverity"]},
  {"type":"erofs","source":"/s/1/layer.erofs","options":["ro","loop"]},
  {"type":"format/mkdir/overlay","source":"overlay",
   "options":["X-containerd.mkdir.path={{ mount 0 }}/upper:0755",
              "X-containerd.mkdir.path={{ mount 0 }}/work:0755",
              "workdir={{ mount 0 }}/work","upperdir={{ mount 0 }}/upper",
              "uidmap=0:1000:65536","gidmap=0:1000:65536",
              "lowerdir={{ overlay 1 3 }}","index=off"]}])";

TEST(HookPlan, BlockModeKeepsTopFirstOrderAndTheExt4Upper) {
  auto plan = plan_of(kBlockMode);
  EXPECT_EQ(plan.rootfs, RootfsKind::Overlay);
  EXPECT_EQ(plan.upper_kind, UpperKind::Ext4Disk);
  ASSERT_TRUE(plan.upper);
  EXPECT_EQ(plan.upper->image, "/s/9/rwlayer.img");
  EXPECT_EQ(plan.upper->mkfs_size, 67108864u);
  EXPECT_THAT(images(plan), ElementsAre("/s/3/layer.erofs", "/s/2/layer.erofs", "/s/1/layer.erofs"));
  EXPECT_EQ(plan.lowers[1].dmverity_sidecar, "/s/2/layer.erofs.dmverity");
  EXPECT_FALSE(plan.lowers[0].dmverity_sidecar);
  EXPECT_EQ(plan.guest_lowerdir, "{{ overlay 1 3 }}");
  EXPECT_EQ(plan.guest_upperdir, "{{ mount 0 }}/upper");
  EXPECT_THAT(plan.mkdir_specs, ElementsAre("{{ mount 0 }}/upper:0755", "{{ mount 0 }}/work:0755"));
  EXPECT_THAT(plan.overlay_options,
              ElementsAre("uidmap=0:1000:65536", "gidmap=0:1000:65536", "index=off"));
  EXPECT_FALSE(plan.read_only);
}

TEST(HookPlan, ReversedOverlayRangeReordersTheLowers) {
  auto plan = plan_of(R"([
    {"type":"erofs","source":"/a.erofs"},{"type":"erofs","source":"/b.erofs"},
    {"type":"format/overlay","source":"overlay","options":["lowerdir={{ overlay 1 0 }}"]}])");
  EXPECT_THAT(images(plan), ElementsAre("/b.erofs", "/a.erofs"));
  EXPECT_TRUE(plan.read_only);  // no upper at all: a read-only view of several parents
  EXPECT_EQ(plan.upper_kind, UpperKind::None);
}

TEST(HookPlan, DirectoryModeRenumbersFromZeroAndKeepsHostPathsAside) {
  auto plan = plan_of(R"([
    {"type":"erofs","source":"/s/2/layer.erofs","options":["ro","loop"]},
    {"type":"erofs","source":"/s/1/layer.erofs","options":["ro","loop"]},
    {"type":"format/overlay","source":"overlay",
     "options":["workdir=/s/9/work","upperdir=/s/9/fs","lowerdir={{ mount 0 }}:{{ mount 1 }}"]}])");
  EXPECT_EQ(plan.upper_kind, UpperKind::GuestMemory);
  EXPECT_EQ(plan.host_upperdir, "/s/9/fs");
  EXPECT_EQ(plan.host_workdir, "/s/9/work");
  EXPECT_THAT(images(plan), ElementsAre("/s/2/layer.erofs", "/s/1/layer.erofs"));
  EXPECT_EQ(plan.guest_lowerdir, "{{ overlay 1 2 }}");
}

TEST(HookPlan, SingleCommittedLayerOrViewIsAReadOnlyBind) {
  auto plan = plan_of(R"([{"type":"erofs","source":"/s/1/layer.erofs","options":["ro","loop"]}])");
  EXPECT_EQ(plan.rootfs, RootfsKind::Bind);
  EXPECT_EQ(plan.bind_source, "{{ mount 1 }}");
  EXPECT_TRUE(plan.read_only);
  EXPECT_THAT(images(plan), ElementsAre("/s/1/layer.erofs"));
}

TEST(HookPlan, BindOfFsIsAHostShare) {
  auto plan = plan_of(R"([{"type":"bind","source":"/s/5/fs","options":["rbind","rw"]}])");
  EXPECT_EQ(plan.rootfs, RootfsKind::HostShare);
  EXPECT_EQ(plan.host_share_source, "/s/5/fs");
  EXPECT_FALSE(plan.read_only);
  EXPECT_TRUE(plan.lowers.empty());
  auto ro = plan_of(R"([{"type":"bind","source":"/s/5/fs","options":["rbind","ro"]}])");
  EXPECT_TRUE(ro.read_only);
}

TEST(HookPlan, BlockModeWithNoParentsBindsTheUpper) {
  auto plan = plan_of(R"([
    {"type":"mkfs/ext4","source":"/s/7/rwlayer.img",
     "options":["X-containerd.mkfs.fs=ext4","X-containerd.mkfs.size=1048576","rw","loop"]},
    {"type":"format/mkdir/bind","source":"{{ mount 0 }}/upper",
     "options":["X-containerd.mkdir.path={{ mount 0 }}/upper:0755","rbind","rw"]}])");
  EXPECT_EQ(plan.rootfs, RootfsKind::Bind);
  EXPECT_EQ(plan.upper_kind, UpperKind::Ext4Disk);
  EXPECT_EQ(plan.bind_source, "{{ mount 0 }}/upper");
  EXPECT_THAT(plan.mkdir_specs, ElementsAre("{{ mount 0 }}/upper:0755"));
  EXPECT_THAT(plan.bind_options, ElementsAre("rbind"));
  EXPECT_FALSE(plan.read_only);
  EXPECT_TRUE(plan.lowers.empty());
}

TEST(HookPlan, SingleLowerFormatBindIsReadOnly) {
  auto plan = plan_of(R"([
    {"type":"erofs","source":"/s/1/layer.erofs","options":["ro","loop"]},
    {"type":"format/bind","source":"{{ mount 0 }}","options":["ro","rbind"]}])");
  EXPECT_EQ(plan.rootfs, RootfsKind::Bind);
  EXPECT_EQ(plan.bind_source, "{{ mount 1 }}");  // guest: {{ mount 1 }} = lower-0
  EXPECT_TRUE(plan.read_only);
}

TEST(HookPlan, FsmetaAloneAndWithPlainLayersAbove) {
  auto alone = plan_of(R"([{"type":"erofs","source":"/s/3/fsmeta.erofs",
    "options":["ro","loop","device=/s/1/layer.erofs","device=/s/2/layer.erofs","device=/s/3/layer.erofs"]}])");
  ASSERT_EQ(alone.lowers.size(), 1u);
  EXPECT_TRUE(alone.lowers[0].is_fsmeta());
  EXPECT_THAT(alone.lowers[0].devices,
              ElementsAre("/s/1/layer.erofs", "/s/2/layer.erofs", "/s/3/layer.erofs"));

  auto mixed = plan_of(R"([
    {"type":"mkfs/ext4","source":"/s/9/rwlayer.img","options":["X-containerd.mkfs.fs=ext4","X-containerd.mkfs.size=1048576","rw","loop"]},
    {"type":"erofs","source":"/s/5/layer.erofs","options":["ro","loop"]},
    {"type":"erofs","source":"/s/4/layer.erofs","options":["ro","loop"]},
    {"type":"erofs","source":"/s/3/fsmeta.erofs","options":["ro","loop","device=/s/1/layer.erofs","device=/s/3/layer.erofs"]},
    {"type":"format/mkdir/overlay","source":"overlay","options":["workdir={{ mount 0 }}/work",
      "upperdir={{ mount 0 }}/upper","lowerdir={{ overlay 1 3 }}"]}])");
  ASSERT_EQ(mixed.lowers.size(), 3u);
  EXPECT_FALSE(mixed.lowers[0].is_fsmeta());
  EXPECT_FALSE(mixed.lowers[1].is_fsmeta());
  EXPECT_TRUE(mixed.lowers[2].is_fsmeta());
}

TEST(HookTemplates, RenumbersMountsAndOverlayRanges) {
  TemplateMap map;
  map.guest_index_of = {std::nullopt, 1, 2, 3, 0};  // upper listed last, lowers first
  EXPECT_EQ(renumber_templates("{{ mount 4 }}/upper:0755", map, "c"), "{{ mount 0 }}/upper:0755");
  EXPECT_EQ(renumber_templates("{{mount 2}}", map, "c"), "{{ mount 2 }}");
  EXPECT_EQ(renumber_templates("x={{ overlay 1 3 }}", map, "c"), "x={{ overlay 1 3 }}");
  EXPECT_EQ(renumber_templates("{{ overlay 3 1 }}", map, "c"), "{{ overlay 3 1 }}");
  EXPECT_THAT([&] {
    try {
      renumber_templates("{{ mount 0 }}", map, "mount 5 (type 'bind')");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), HasSubstr("mount 5 (type 'bind'): template refers to mount 0"));
  EXPECT_THROW(renumber_templates("{{ overlay 1 4 }}", map, "c"), Error);  // not contiguous
  EXPECT_THROW(renumber_templates("{{ env HOME }}", map, "c"), Error);
  EXPECT_THROW(renumber_templates("{{ mount 1 ", map, "c"), Error);
}

TEST(HookPlan, DirectoryModeTemplatesInOptionsFollowTheGuestNumbering) {
  // Directory mode numbers mounts from 0; the guest's {{ mount 1 }} is the top lower.
  auto plan = plan_of(R"([
    {"type":"erofs","source":"/s/2/layer.erofs"},{"type":"erofs","source":"/s/1/layer.erofs"},
    {"type":"format/mkdir/overlay","source":"overlay","options":[
      "X-containerd.mkdir.path={{ mount 0 }}/etc:0700:0:0",
      "upperdir=/s/9/fs","workdir=/s/9/work","lowerdir={{ overlay 0 1 }}"]}])");
  EXPECT_THAT(plan.mkdir_specs, ElementsAre("{{ mount 1 }}/etc:0700:0:0"));
}

// Issue 14 item 2: block mode's read-only view without parents (containerd 2.2.4's
// block-view-noparent list): the ext4 upper carries 'ro' and is only ever bound read-only.
TEST(HookPlan, ReadOnlyViewWithoutParentsBindsTheReadOnlyUpper) {
  HookPlan plan = plan_of(R"([
    {"type":"mkfs/ext4","source":"/s/10/rwlayer.img",
     "options":["X-containerd.mkfs.fs=ext4","X-containerd.mkfs.size=67108864","ro","loop"]},
    {"type":"format/mkdir/bind","source":"{{ mount 0 }}/upper",
     "options":["X-containerd.mkdir.path={{ mount 0 }}/upper:0755","ro","rbind"]}])");
  ASSERT_TRUE(plan.upper);
  EXPECT_TRUE(plan.upper->read_only);
  EXPECT_EQ(plan.upper->mkfs_size, 67108864u);
  EXPECT_EQ(plan.rootfs, RootfsKind::Bind);
  EXPECT_EQ(plan.upper_kind, UpperKind::Ext4Disk);
  EXPECT_TRUE(plan.read_only);
  EXPECT_EQ(plan.bind_source, "{{ mount 0 }}/upper");
  EXPECT_THAT(plan.mkdir_specs, ElementsAre("{{ mount 0 }}/upper:0755"));
  // Even without 'ro' on the bind, a read-only upper makes the bind read-only.
  HookPlan implied = plan_of(R"([
    {"type":"mkfs/ext4","source":"/r","options":["X-containerd.mkfs.size=4096","ro"]},
    {"type":"format/bind","source":"{{ mount 0 }}/upper","options":["rbind"]}])");
  EXPECT_TRUE(implied.read_only);
  // The writable case is unchanged.
  HookPlan writable = plan_of(R"([
    {"type":"mkfs/ext4","source":"/r","options":["X-containerd.mkfs.size=4096","rw"]},
    {"type":"format/bind","source":"{{ mount 0 }}/upper","options":["rw","rbind"]}])");
  EXPECT_FALSE(writable.upper->read_only);
  EXPECT_FALSE(writable.read_only);
}

TEST(HookPlan, ReadOnlyUpperIsRefusedWhereItWouldHaveToBeWritten) {
  EXPECT_THAT(error_of(R"([
    {"type":"mkfs/ext4","source":"/r","options":["X-containerd.mkfs.size=4096","ro"]},
    {"type":"erofs","source":"/a"},
    {"type":"format/mkdir/overlay","options":["upperdir={{ mount 0 }}/upper","workdir={{ mount 0 }}/work","lowerdir={{ mount 1 }}"]}])"),
              AllOf(HasSubstr("mount 0 (type 'mkfs/ext4'): option 'ro'"),
                    HasSubstr("not be an overlay's upperdir")));
  EXPECT_THAT(error_of(R"([
    {"type":"mkfs/ext4","source":"/r","options":["X-containerd.mkfs.size=4096","ro"]},
    {"type":"format/bind","source":"{{ mount 0 }}/upper","options":["rw","rbind"]}])"),
              AllOf(HasSubstr("mount 1 (type 'format/bind'): option 'rw' on a bind of the "
                              "read-only upper"),
                    HasSubstr("mount 0 (type 'mkfs/ext4') has 'ro'")));
}

// Issue 14 item 3: containerd 2.1 hands over ONE overlay of host directories. Planning keeps
// the directories (the hook maps them to layer files through the mount table).
TEST(HookPlan, Containerd21OverlayOfHostLowerdirs) {
  HookPlan active = plan_of(R"([{"type":"overlay","source":"overlay","options":[
    "workdir=/s/5/work","upperdir=/s/5/fs","lowerdir=/s/4/fs:/s/3/fs:/s/2/fs:/s/1/fs"]}])");
  ASSERT_EQ(active.lowers.size(), 4u);
  std::vector<std::string> directories;
  for (const auto& lower : active.lowers) {
    directories.push_back(lower.host_directory);
    EXPECT_TRUE(lower.image.empty());
    EXPECT_EQ(lower.mount_index, 0u);
  }
  EXPECT_THAT(directories, ElementsAre("/s/4/fs", "/s/3/fs", "/s/2/fs", "/s/1/fs"));
  EXPECT_EQ(active.rootfs, RootfsKind::Overlay);
  EXPECT_EQ(active.upper_kind, UpperKind::GuestMemory);
  EXPECT_EQ(active.host_upperdir, "/s/5/fs");
  EXPECT_EQ(active.guest_lowerdir, "{{ overlay 1 4 }}");
  EXPECT_FALSE(active.read_only);

  HookPlan view = plan_of(R"([{"type":"overlay","source":"overlay","options":[
    "lowerdir=/s/4/fs:/s/3/fs"]}])");
  EXPECT_EQ(view.lowers.size(), 2u);
  EXPECT_EQ(view.upper_kind, UpperKind::None);
  EXPECT_TRUE(view.read_only);
  HookPlan one = plan_of(R"([{"type":"overlay","source":"overlay","options":[
    "workdir=/s/7/work","upperdir=/s/7/fs","lowerdir=/s/1/fs"]}])");
  EXPECT_EQ(one.guest_lowerdir, "{{ mount 1 }}");

  // What cannot be a 2.1 list, named.
  EXPECT_THAT(error_of(R"([{"type":"overlay","options":["lowerdir={{ mount 0 }}"]}])"),
              HasSubstr("a template, but no mount of the list comes before it"));
  EXPECT_THAT(error_of(R"([{"type":"overlay","options":["lowerdir=s/1/fs"]}])"),
              HasSubstr("mount 0 (type 'overlay') option 'lowerdir=s/1/fs'"));
  EXPECT_THAT(error_of(R"([{"type":"overlay","options":["upperdir=/u","workdir=/w"]}])"),
              HasSubstr("no lowerdir= option"));
  EXPECT_THAT(error_of(R"([{"type":"overlay","options":["lowerdir=/s/1/fs",
                            "X-containerd.mkdir.path={{ mount 0 }}/x:0755"]}])"),
              HasSubstr("mkdir directive"));
  EXPECT_THAT(error_of(R"([{"type":"overlay","options":["lowerdir=/s/1/fs","upperdir=/u"]}])"),
              HasSubstr("upperdir= and workdir= must come together"));
  EXPECT_THAT(error_of(R"([{"type":"format/overlay","options":["lowerdir=/s/1/fs"]}])"),
              HasSubstr("expected erofs, bind, or containerd 2.1's overlay of host lowerdirs"));
}

TEST(HookPlan, RefusesShapesItDoesNotUnderstandNamingTheMount) {
  EXPECT_THAT(error_of(R"([{"type":"tmpfs","source":"none"}])"),
              HasSubstr("mount 0 (type 'tmpfs')"));
  EXPECT_THAT(error_of(R"([{"type":"nfs","source":"x"},{"type":"erofs","source":"/a"},
                           {"type":"format/overlay","options":["lowerdir={{ mount 1 }}"]}])"),
              HasSubstr("mount 0 (type 'nfs')"));
  // An erofs layer the overlay never uses.
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/a"},{"type":"erofs","source":"/b"},
                           {"type":"format/overlay","options":["lowerdir={{ mount 0 }}"]}])"),
              HasSubstr("mount 1 (type 'erofs'): not used"));
  // Host paths in lowerdir are invisible in the VM.
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/a"},
                           {"type":"format/overlay","options":["lowerdir={{ mount 0 }}:/host/dir"]}])"),
              HasSubstr("mount 1 (type 'format/overlay'): lowerdir entry '/host/dir'"));
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/a","options":["X-containerd.foo=1"]},
                           {"type":"format/bind","source":"{{ mount 0 }}","options":["ro"]}])"),
              HasSubstr("mount 0 (type 'erofs'): unsupported option 'X-containerd.foo=1'"));
  EXPECT_THAT(error_of(R"([{"type":"mkfs/ext4","source":"/r","options":["X-containerd.mkfs.fs=xfs","X-containerd.mkfs.size=1"]},
                           {"type":"format/bind","source":"{{ mount 0 }}/upper"}])"),
              HasSubstr("mount 0 (type 'mkfs/ext4'): X-containerd.mkfs.fs=xfs"));
  EXPECT_THAT(error_of(R"([{"type":"mkfs/ext4","source":"/r","options":["X-containerd.mkfs.fs=ext4"]},
                           {"type":"format/bind","source":"{{ mount 0 }}/upper"}])"),
              HasSubstr("missing X-containerd.mkfs.size"));
  EXPECT_THAT(error_of(R"([{"type":"mkfs/ext4","source":"/r","options":["X-containerd.mkfs.size=4096"]},
                           {"type":"erofs","source":"/a"},
                           {"type":"format/overlay","options":["upperdir={{ mount 0 }}/data","workdir={{ mount 0 }}/work","lowerdir={{ mount 1 }}"]}])"),
              HasSubstr("upperdir={{ mount 0 }}/upper"));
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"relative.erofs"}])"),
              HasSubstr("mount 0 (type 'erofs'): source 'relative.erofs' must be an absolute path"));
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/a"},
                           {"type":"format/overlay","options":["lowerdir={{ mount 0 }}:{{ mount 0 }}"]}])"),
              HasSubstr("names mount 0 twice"));
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/a"},{"type":"format/bind","source":"{{ mount 3 }}"}])"),
              HasSubstr("refers to mount 3"));
}

}  // namespace
}  // namespace evmdk::host

namespace evmdk::host {
namespace {

// Found by hook_plan_fuzzer: the host planned binds and mkdir directives the guest refuses at
// boot ("{{ mount 0 }}?upper"); the hook now parses them with the guest's contract parser and
// fails up front, naming the mount and the option.
TEST(HookPlan, RefusesWhatTheGuestWouldRefuseNamingMountAndOption) {
  EXPECT_THAT(error_of(R"([{"type":"mkfs/ext4","source":"/s/rw.img","options":["X-containerd.mkfs.size=67108864"]},
                           {"type":"format/mkdir/bind","source":"{{ mount 0 }}?upper","options":["rbind"]}])"),
              AllOf(HasSubstr("mount 1 (type 'format/mkdir/bind') option 'source={{ mount 0 }}?upper'"),
                    HasSubstr("expected '/' after the template")));
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/s/1/layer.erofs"},
                           {"type":"format/mkdir/overlay","source":"overlay","options":["lowerdir={{ mount 0 }}",
                            "X-containerd.mkdir.path={{ mount 0 }}/a/../../b:0755"]}])"),
              AllOf(HasSubstr("option 'X-containerd.mkdir.path={{ mount 0 }}/a/../../b:0755'"),
                    HasSubstr("'..' is not allowed")));
  EXPECT_THAT(error_of(R"([{"type":"erofs","source":"/s/1/layer.erofs"},
                           {"type":"format/bind","source":"{{ mount 0 }}/etc","options":["ro"]}])"),
              HasSubstr("a path is only allowed below the upper"));
  // A shared host directory has no mounts for a template to name.
  EXPECT_THAT(error_of(R"([{"type":"bind","source":"/s/10/fs","options":["ro","rbin{{ mount 5 }}d"]}])"),
              HasSubstr("mount 0 (type 'bind') option 'rbin{{ mount 5 }}d': template in option"));
}

}  // namespace
}  // namespace evmdk::host
