// The host <-> guest contract: every marker and dm-verity option set the host writes is read
// back by the guest as meant (the host's real compose and verity code encoding, the guest's
// real plan decoding), hostile values are refused by the one decoder, and the dm/loop names
// the guest builds parse back.
#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "evmdk/contract/dm_names.h"
#include "evmdk/contract/markers.h"
#include "evmdk/contract/verity_options.h"
#include "evmdk/error.h"
#include "evmdk/guest/plan.h"
#include "evmdk/host/compose/compose.h"
#include "evmdk/host/verity/verity.h"
#include "evmdk/storage_spec.h"
#include "test_support.h"

namespace evmdk::contract {
namespace {

using ::testing::HasSubstr;

using test::error_of;

// The guest plan's parameters as contract::VerityOptions, field by field (the same type once
// the guest has adopted the contract, a twin before).
template <typename Params>
VerityOptions as_options(const Params& params) {
  VerityOptions out;
  out.root_hash = params.root_hash;
  out.hash_offset = params.hash_offset;
  out.data_block_size = params.data_block_size;
  out.hash_block_size = params.hash_block_size;
  out.algorithm = params.algorithm;
  out.salt = params.salt;
  out.hash_type = params.hash_type;
  out.no_superblock = params.no_superblock;
  return out;
}

std::vector<VerityOptions> option_sets() {
  VerityOptions minimal;
  minimal.root_hash = std::string(64, 'a');
  minimal.hash_offset = 4096;
  VerityOptions full = minimal;
  full.data_block_size = 4096;
  full.hash_block_size = 1024;
  full.algorithm = "sha512";
  full.root_hash = std::string(128, '0');
  full.salt = "00ff" + std::string(508, 'e');  // 256 bytes
  full.hash_type = 0;
  VerityOptions no_salt = minimal;
  no_salt.salt = "";
  VerityOptions no_superblock = full;
  no_superblock.no_superblock = true;
  no_superblock.hash_offset = uint64_t{1} << 62;
  return {minimal, full, no_salt, no_superblock};
}

TEST(VerityOptions, EveryOptionSetRoundTrips) {
  for (const auto& options : option_sets()) {
    SCOPED_TRACE(fmt::format("{}", fmt::join(encode_verity_options(options), " ")));
    auto encoded = encode_verity_options(options);
    EXPECT_EQ(encoded.front(), "X-kata.dmverity-enabled=true");
    for (const auto& option : encoded) EXPECT_TRUE(is_dmverity_option(option)) << option;
    EXPECT_EQ(decode_verity_options(encoded, "layer"), options);
    // Mixed with the other markers of a storage, and in any order.
    std::vector<std::string> storage{"ro", "X-kata.overlay-lower", "X-erofs-vmdk.layer-index=0"};
    storage.insert(storage.end(), encoded.rbegin(), encoded.rend());
    EXPECT_EQ(decode_verity_options(storage, "layer"), options);
    // Per device slot of a flat disk, next to the fsmeta's own.
    for (unsigned slot : {1u, 7u, 1024u}) {
      auto device = encode_device_verity_options(options, slot);
      for (const auto& option : device) {
        EXPECT_THAT(option, ::testing::StartsWith(device_option_prefix(slot) + "dmverity"));
      }
      std::vector<std::string> flat = encoded;
      flat.insert(flat.end(), device.begin(), device.end());
      EXPECT_EQ(decode_verity_options(flat, "fsmeta"), options);
      auto decoded = decode_device_verity_options(flat, "fsmeta", 1024);
      ASSERT_EQ(decoded.size(), 1u);
      EXPECT_EQ(decoded[0].first, slot);
      EXPECT_EQ(decoded[0].second, options);
    }
  }
}

TEST(VerityOptions, NotEnabledMeansNone) {
  EXPECT_EQ(decode_verity_options({}, "l"), std::nullopt);
  EXPECT_EQ(decode_verity_options({"ro", "X-kata.overlay-lower"}, "l"), std::nullopt);
  EXPECT_EQ(decode_verity_options({"X-kata.dmverity-enabled=false"}, "l"), std::nullopt);
  EXPECT_EQ(decode_verity_options({"X-kata.dmverity-enabled=No"}, "l"), std::nullopt);
  EXPECT_TRUE(decode_device_verity_options({"X-kata.dmverity-enabled=true"}, "l", 4).empty());
  // X-kata.dmverity.* without the enable marker: the host meant protection.
  auto implied =
      decode_verity_options({"X-kata.dmverity.roothash=ab", "X-kata.dmverity.hashoffset=512"}, "l");
  ASSERT_TRUE(implied);
  EXPECT_EQ(implied->root_hash, "ab");
  // Upper-case hex and "-" are the guest's to normalise; the host writes the normal form.
  auto upper = decode_verity_options(
      {"X-kata.dmverity-enabled=TRUE", "X-kata.dmverity.roothash=AB",
       "X-kata.dmverity.hashoffset=0", "X-kata.dmverity.salt=-", "X-kata.dmverity.algorithm=SHA256",
       "X-kata.dmverity.no-superblock=false"},
      "l");
  ASSERT_TRUE(upper);
  EXPECT_EQ(upper->root_hash, "ab");
  EXPECT_EQ(upper->salt, "");
  EXPECT_EQ(upper->algorithm, "sha256");
  EXPECT_FALSE(upper->no_superblock);
  EXPECT_EQ(decode_verity_options({"X-kata.dmverity-enabled=1", "X-kata.dmverity.roothash=ab",
                                   "X-kata.dmverity.hashoffset=0", "X-kata.dmverity.salt="},
                                  "l")
                ->salt,
            "");
}

TEST(VerityOptions, HostileValuesAreRefusedNamingTheOption) {
  const std::vector<std::string> base{"X-kata.dmverity-enabled=true",
                                      "X-kata.dmverity.roothash=" + std::string(64, 'a'),
                                      "X-kata.dmverity.hashoffset=4096"};
  auto with = [&](std::vector<std::string> extra, bool keep_base = true) {
    std::vector<std::string> options = keep_base ? base : std::vector<std::string>{};
    options.insert(options.end(), extra.begin(), extra.end());
    return error_of([&] { (void)decode_verity_options(options, "layer 3 (/dev/vdb)"); });
  };
  struct Case {
    std::vector<std::string> extra;
    std::string needle;
    bool keep_base = true;
  };
  std::vector<Case> cases{
      {{"X-kata.dmverity.rootfs=1"}, "unknown dm-verity option X-kata.dmverity.rootfs"},
      {{"X-kata.dmverity.roothash=" + std::string(64, 'b')},
       "option X-kata.dmverity.roothash given 2 times"},
      {{"X-kata.dmverity.algorithm"}, "option X-kata.dmverity.algorithm needs a value"},
      {{"X-kata.dmverity-enabled=maybe"}, "must be true or false", false},
      {{"X-kata.dmverity-enabled=false", "X-kata.dmverity.roothash=aa"},
       "refusing to mount",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.hashoffset=0"},
       "option X-kata.dmverity.roothash is missing",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=aa"},
       "option X-kata.dmverity.hashoffset is missing",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=abc",
        "X-kata.dmverity.hashoffset=0"},
       "not an even-length hex",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=zz",
        "X-kata.dmverity.hashoffset=0"},
       "not an even-length hex",
       false},
      {{"X-kata.dmverity-enabled=true",
        "X-kata.dmverity.roothash=", "X-kata.dmverity.hashoffset=0"},
       "not an even-length hex",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=aa",
        "X-kata.dmverity.hashoffset=100"},
       "not a multiple of 512",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=aa",
        "X-kata.dmverity.hashoffset=-512"},
       "not a decimal number",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=aa",
        "X-kata.dmverity.hashoffset=18446744073709551616"},
       "not a decimal number",
       false},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=aa",
        "X-kata.dmverity.hashoffset=0x200"},
       "not a decimal number",
       false},
      {{"X-kata.dmverity.blocksize=4097"}, "must be a power of two between 512 and 1048576"},
      {{"X-kata.dmverity.blocksize=256"}, "must be a power of two"},
      {{"X-kata.dmverity.hashsize=2097152"}, "must be a power of two"},
      {{"X-kata.dmverity.hashsize=+4096"}, "not a decimal number"},
      {{"X-kata.dmverity.algorithm=sha256;rm"}, "is not a hash algorithm name"},
      {{"X-kata.dmverity.algorithm=" + std::string(32, 'a')}, "is not a hash algorithm name"},
      {{"X-kata.dmverity.algorithm="}, "is not a hash algorithm name"},
      {{"X-kata.dmverity.salt=abc"}, "not a hex string of at most 256 bytes"},
      {{"X-kata.dmverity.salt=" + std::string(514, 'a')}, "not a hex string of at most 256 bytes"},
      {{"X-kata.dmverity.hashtype=2"}, "must be 0 or 1"},
      {{"X-kata.dmverity.no-superblock=perhaps"}, "must be true or false"},
      {{"X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=aa",
        "X-kata.dmverity.hashoffset=0", "X-kata.dmverity.no-superblock"},
       "needs X-kata.dmverity.hashoffset > 0",
       false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(fmt::format("{}", fmt::join(c.extra, " ")));
    std::string error = with(c.extra, c.keep_base);
    EXPECT_THAT(error, HasSubstr("layer 3 (/dev/vdb): "));
    EXPECT_THAT(error, HasSubstr(c.needle));
  }
}

TEST(VerityOptions, TheEncoderRefusesWhatTheGuestWould) {
  VerityOptions options = option_sets().front();
  auto refused = [&](auto change) {
    VerityOptions bad = options;
    change(bad);
    return error_of([&] { (void)encode_verity_options(bad); });
  };
  EXPECT_THAT(refused([](auto& o) { o.root_hash = "xyz"; }),
              HasSubstr("dm-verity options: option X-kata.dmverity.roothash=xyz"));
  EXPECT_THAT(refused([](auto& o) { o.root_hash = "AB"; }), HasSubstr("lower-case form"));
  EXPECT_THAT(refused([](auto& o) { o.hash_offset = 1000; }), HasSubstr("not a multiple of 512"));
  EXPECT_THAT(refused([](auto& o) { o.data_block_size = 3; }), HasSubstr("must be a power of two"));
  EXPECT_THAT(refused([](auto& o) { o.algorithm = "sha256,x=y"; }),
              HasSubstr("not a hash algorithm name"));
  EXPECT_THAT(refused([](auto& o) { o.salt = "-"; }), HasSubstr("lower-case form"));
  EXPECT_THAT(refused([](auto& o) { o.hash_type = 7; }), HasSubstr("must be 0 or 1"));
  EXPECT_THAT(refused([](auto& o) { o.no_superblock = true, o.hash_offset = 0; }),
              HasSubstr("needs"));
  EXPECT_THAT(error_of([&] { (void)encode_device_verity_options(options, 0); }),
              HasSubstr("start at 1"));
}

TEST(VerityOptions, DeviceSlotsAreBoundedAndOnlyCarryVerity) {
  auto device = encode_device_verity_options(option_sets().front(), 3);
  EXPECT_THAT(error_of([&] { (void)decode_device_verity_options(device, "fsmeta", 2); }),
              HasSubstr("fsmeta, device 3: an EROFS image has at most 2 extra devices"));
  auto other = device;
  other.push_back("X-erofs-vmdk.device.3.mount=/etc");
  EXPECT_THAT(error_of([&] { (void)decode_device_verity_options(other, "fsmeta", 8); }),
              HasSubstr("fsmeta, device 3: option X-erofs-vmdk.device.3.mount=/etc is not a "
                        "dm-verity option"));
  for (std::string bad :
       {"X-erofs-vmdk.device.0.dmverity-enabled=true",
        "X-erofs-vmdk.device.x.dmverity-enabled=true",
        "X-erofs-vmdk.device.4294967296.dmverity-enabled=true", "X-erofs-vmdk.device.1"}) {
    EXPECT_THAT(error_of([&] { (void)decode_device_verity_options({bad}, "f", 8); }),
                HasSubstr("with a device slot 1, 2, ..."))
        << bad;
  }
  auto bad_value = device;
  bad_value.push_back("X-erofs-vmdk.device.3.dmverity.hashtype=9");
  EXPECT_THAT(error_of([&] { (void)decode_device_verity_options(bad_value, "fsmeta", 8); }),
              HasSubstr("fsmeta, device 3: option X-kata.dmverity.hashtype=9 must be 0 or 1"));
  // The storage helpers of storage_spec.h are the same functions.
  EXPECT_EQ(evmdk::device_option_slots(device), std::vector<unsigned>{3});
  EXPECT_EQ(evmdk::marker::kLayerIndex, marker::kLayerIndex);
}

// ---- host encoder -> guest decoder, with real layers ----

class HostToGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVMDK_REQUIRE_TOOLS("mkfs.erofs");
    for (int n = 0; n < 3; ++n) {
      std::string tree = temp / fmt::format("tree{}", n);
      test::make_tree(tree, {{fmt::format("etc/layer{}", n), std::string(5000 + n, 'x')}});
      layers.push_back(temp / fmt::format("layer{}.erofs", n));
      test::make_erofs(
          tree, layers.back(),
          fmt::format("{0}{0}{0}{0}{0}{0}{0}{0}-0000-4000-8000-00000000000{0}", n + 1));
    }
  }
  test::TempDir temp;
  std::vector<std::string> layers;
};

TEST_F(HostToGuest, ComposedGptStoragesDecodeToTheComposedLayers) {
  // Layer 1 gets a real tree (verity format, as containerd's differ or `verity format` does).
  host::VerityFormatOptions format;
  format.salt = {0xde, 0xad};
  auto formatted = host::verity_format(layers[1], format);
  host::ComposeOptions options;
  options.mode = host::ComposeMode::Gpt;
  options.output_dir = temp / "out";
  for (const auto& layer : layers) {
    options.layers.push_back(
        {layer, host::verity_layer_under_policy(layer, host::VerityPolicy::kAuto, layer)});
  }
  host::ComposeResult composed = host::plan_compose(options);
  ASSERT_EQ(composed.storages.size(), 3u);

  guest::Plan plan = guest::make_plan(composed.storages);
  ASSERT_EQ(plan.lowers.size(), 3u);
  EXPECT_EQ(plan.kind, guest::RootfsKind::Overlay);  // lowers alone: a tmpfs upper
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    const guest::LowerPlan& lower = plan.lowers[i];
    const host::ComposedLayer& layer = composed.layers[i];
    const Storage& storage = *lower.storage;
    EXPECT_EQ(lower.index, i);                           // X-erofs-vmdk.layer-index
    EXPECT_EQ(lower.partition, layer.partition_number);  // X-kata.partition-number
    EXPECT_EQ(option_value(storage.options, marker::kGptPartitioned), "true");
    EXPECT_EQ(option_value(storage.options, marker::kMultiLayer), "true");
    EXPECT_TRUE(has_option(storage.options, marker::kOverlayLower));
    EXPECT_EQ(option_value(storage.options, marker::kPartUuid), layer.partuuid);
    EXPECT_EQ(option_value(storage.options, marker::kErofsUuid), layer.info.uuid_string);
    // dm-verity: exactly layer 1, with the parameters of its superblock and sidecar.
    EXPECT_EQ(lower.verity.has_value(), i == 1);
    auto decoded = decode_verity_options(storage.options, "storage");
    EXPECT_EQ(decoded.has_value(), i == 1);
    if (i == 1 && decoded) {
      EXPECT_EQ(decoded->root_hash, formatted.sidecar.root_hash);
      EXPECT_EQ(decoded->hash_offset, formatted.sidecar.hash_offset);
      EXPECT_EQ(decoded->data_block_size, formatted.superblock.data_block_size);
      EXPECT_EQ(decoded->hash_block_size, formatted.superblock.hash_block_size);
      EXPECT_EQ(decoded->algorithm, formatted.superblock.algorithm);
      EXPECT_EQ(decoded->salt, "dead");
      EXPECT_EQ(decoded->hash_type, formatted.superblock.hash_type);
      EXPECT_FALSE(decoded->no_superblock);
      // The guest's plan reads the same parameters.
      EXPECT_EQ(lower.verity->root_hash, decoded->root_hash);
      EXPECT_EQ(lower.verity->hash_offset, decoded->hash_offset);
      EXPECT_EQ(lower.verity->salt, decoded->salt);
      // And the one encoder writes exactly the host's options.
      std::vector<std::string> from_storage;
      for (const auto& option : storage.options) {
        if (is_dmverity_option(option)) from_storage.push_back(option);
      }
      EXPECT_EQ(encode_verity_options(*decoded), from_storage);
    }
  }
}

// The rootfs markers the hook writes (mkdir directives, overlay options, a bind, read-only),
// as the guest plan reads them.
TEST_F(HostToGuest, RootfsMarkersDecodeInTheGuestPlan) {
  host::ComposeOptions options;
  options.mode = host::ComposeMode::Gpt;
  options.output_dir = temp / "out";
  options.layers = {{layers[0], {}}, {layers[1], {}}};
  auto composed = host::plan_compose(options);
  std::vector<Storage> storages = composed.storages;
  Storage upper;
  upper.driver = "blk";
  upper.source = "/dev/vdb";
  upper.fstype = "ext4";
  upper.options = {make_option(marker::kMultiLayer, "true"),
                   std::string(marker::kOverlayUpper),
                   make_option(marker::kContainerdMkdirPath, "{{ mount 0 }}/work:0700:1:2"),
                   make_option(marker::kMkdirPath, "{{ mount 0 }}/data:0755"),
                   make_option(marker::kOverlayOption, "redirect_dir=on"),
                   make_option(marker::kOverlayOption, "volatile")};
  storages.insert(storages.begin(), upper);
  guest::Plan overlay = guest::make_plan(storages);
  EXPECT_EQ(overlay.kind, guest::RootfsKind::Overlay);
  EXPECT_EQ(overlay.overlay_options, (std::vector<std::string>{"redirect_dir=on", "volatile"}));
  ASSERT_EQ(overlay.mkdirs.size(), 2u);
  std::map<std::string, guest::MkdirDirective> mkdirs;
  for (const auto& [spec, directive] : overlay.mkdirs) mkdirs[directive.path] = directive;
  ASSERT_EQ(mkdirs.count("work"), 1u);
  EXPECT_EQ(mkdirs["work"].mode, 0700u);
  EXPECT_EQ(mkdirs["work"].uid, 1u);
  EXPECT_EQ(mkdirs["work"].gid, 2u);
  ASSERT_EQ(mkdirs.count("data"), 1u);
  EXPECT_EQ(mkdirs["data"].mode, 0755u);
  EXPECT_EQ(mkdirs["data"].uid, std::nullopt);
  EXPECT_FALSE(overlay.read_only);

  storages[0].options = {make_option(marker::kMultiLayer, "true"),
                         std::string(marker::kOverlayUpper),
                         make_option(marker::kRootfsBind, "{{ mount 0 }}/sub/dir"),
                         make_option(marker::kRootfsReadonly, "true")};
  guest::Plan bind = guest::make_plan(storages);
  EXPECT_EQ(bind.kind, guest::RootfsKind::Bind);
  EXPECT_EQ(bind.bind_spec, "{{ mount 0 }}/sub/dir");
  EXPECT_TRUE(bind.read_only);

  // Read-only over the lowers alone (a view): no upper storage.
  storages.erase(storages.begin());
  storages[0].options.push_back(make_option(marker::kRootfsReadonly, "true"));
  EXPECT_EQ(guest::make_plan(storages).kind, guest::RootfsKind::ReadOnlyOverlay);
  // A malformed value of a rootfs marker is refused, naming it.
  storages[0].options.back() = make_option(marker::kRootfsReadonly, "maybe");
  EXPECT_THAT(error_of([&] { (void)guest::make_plan(storages); }),
              HasSubstr("X-erofs-vmdk.rootfs-readonly"));
}

// Every storage the hook emits for containerd's mount-list shapes (tests/host/golden/hook, the
// host's real output over real layers) decodes in the guest's plan to what the host meant,
// and carries no marker outside contract/markers.h.
TEST(HookGoldenStorages, EveryMarkerDecodesInTheGuestPlan) {
  std::set<std::string_view> known{
      marker::kMultiLayer,          marker::kOverlayUpper,    marker::kOverlayLower,
      marker::kGptPartitioned,      marker::kPartitionNumber, marker::kMkdirPath,
      marker::kContainerdMkdirPath, marker::kPartUuid,        marker::kErofsUuid,
      marker::kLayerIndex,          marker::kRootfsBind,      marker::kRootfsReadonly,
      marker::kOverlayOption};
  std::string dir = test::source_dir() + "/tests/host/golden/hook";
  size_t shapes = 0;
  std::set<std::string_view> seen;
  // Subdirectories hold the real containerd versions' lists; a list the hook refuses has an
  // {"error": ...} golden and no storages.
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    SCOPED_TRACE(entry.path().string());
    auto golden = nlohmann::json::parse(test::read_file(entry.path().string()));
    if (golden.contains("error")) continue;
    ++shapes;
    std::vector<Storage> storages = storages_from_json(golden["storages"]);
    guest::Plan plan = guest::make_plan(storages);
    const auto& rootfs = golden["rootfs"];
    EXPECT_EQ(plan.read_only, rootfs["read_only"].get<bool>());
    std::string type = rootfs["type"];
    if (type == "bind") {
      EXPECT_EQ(plan.kind, guest::RootfsKind::Bind);
    } else if (type == "host-share") {
      EXPECT_EQ(plan.kind, guest::RootfsKind::VirtioFs);
    } else {
      EXPECT_EQ(plan.kind,
                plan.read_only ? guest::RootfsKind::ReadOnlyOverlay : guest::RootfsKind::Overlay);
    }
    std::vector<std::string> overlay_options, mkdirs;
    for (const auto& storage : storages) {
      for (const auto& option : storage.options) {
        if (!is_marker(option)) continue;
        std::string_view key = option_key(option);
        if (is_dmverity_option(option)) {
          seen.insert(marker::kDmverityEnabled);
          continue;
        }
        EXPECT_TRUE(known.count(key) == 1 || key.rfind(marker::kDevicePrefix, 0) == 0) << option;
        if (known.count(key) == 1) seen.insert(*known.find(key));
      }
      auto overlay = option_values(storage.options, marker::kOverlayOption);
      overlay_options.insert(overlay_options.end(), overlay.begin(), overlay.end());
      for (auto key : {marker::kContainerdMkdirPath, marker::kMkdirPath}) {
        auto values = option_values(storage.options, key);
        mkdirs.insert(mkdirs.end(), values.begin(), values.end());
      }
      if (auto bind = option_value(storage.options, marker::kRootfsBind)) {
        EXPECT_EQ(plan.bind_spec, *bind);
      }
    }
    EXPECT_EQ(plan.overlay_options, overlay_options);
    EXPECT_EQ(plan.mkdirs.size(), mkdirs.size());
    EXPECT_EQ(rootfs["mkdir"].size(), mkdirs.size());
    for (const auto& lower : plan.lowers) {
      const auto& options = lower.storage->options;
      EXPECT_EQ(std::to_string(lower.index), option_value(options, marker::kLayerIndex));
      if (auto number = option_value(options, marker::kPartitionNumber)) {
        EXPECT_EQ(lower.partition, std::stoul(*number));
        EXPECT_EQ(option_value(options, marker::kGptPartitioned), "true");
      } else {
        EXPECT_EQ(lower.partition, std::nullopt);
      }
      auto decoded = decode_verity_options(options, "golden");
      EXPECT_EQ(lower.verity.has_value(), decoded.has_value());
      if (lower.verity && decoded) {
        EXPECT_EQ(as_options(*lower.verity), *decoded);
      }
      std::map<unsigned, VerityOptions> devices;
      for (auto& [slot, decoded] : decode_device_verity_options(options, "golden", 1024)) {
        devices.emplace(slot, decoded);
      }
      std::map<unsigned, VerityOptions> planned;
      for (const auto& [slot, params] : lower.device_verity)
        planned.emplace(slot, as_options(params));
      EXPECT_EQ(planned, devices);
      // What the guest decoded, the one encoder writes back as the host wrote it.
      if (lower.verity) {
        std::vector<std::string> written;
        for (const auto& option : options) {
          if (is_dmverity_option(option)) written.push_back(option);
        }
        EXPECT_EQ(encode_verity_options(as_options(*lower.verity)), written);
      }
    }
  }
  EXPECT_GE(shapes, 10u) << "the hook's golden shapes are missing from " << dir;
  // Between them the shapes use every marker the hook and compose write.
  for (auto key : {marker::kMultiLayer, marker::kOverlayUpper, marker::kOverlayLower,
                   marker::kGptPartitioned, marker::kPartitionNumber, marker::kContainerdMkdirPath,
                   marker::kPartUuid, marker::kErofsUuid, marker::kLayerIndex, marker::kRootfsBind,
                   marker::kRootfsReadonly, marker::kOverlayOption, marker::kDmverityEnabled}) {
    EXPECT_EQ(seen.count(key), 1u) << key;
  }
}

// ---- dm and loop names ----

TEST(DmNames, BuiltNamesParseBack) {
  for (std::string id : {std::string("p"), std::string("abc-123_x.y"), std::string(80, 'c')}) {
    for (VerityDeviceName name : {VerityDeviceName{0, {}}, VerityDeviceName{4095, {}},
                                  VerityDeviceName{2, 1u}, VerityDeviceName{4294967295u, 65535u}}) {
      std::string built = format_verity_device_name(id, name);
      SCOPED_TRACE(built);
      EXPECT_EQ(built.rfind(verity_name_prefix(id), 0), 0u);
      if (built.size() <= kMaxDmNameBytes) {
        EXPECT_EQ(verity_device_name(id, name), built);
        EXPECT_EQ(parse_verity_device_name(built, id), name);
      } else {
        EXPECT_THAT(error_of([&] { (void)verity_device_name(id, name); }),
                    HasSubstr("is too long for its dm-verity device names"));
        EXPECT_EQ(parse_verity_device_name(built, id), std::nullopt);
      }
    }
  }
  EXPECT_EQ(verity_device_name("p", {3, 2u}), "evmdk-p-lower-3-device-2");
  EXPECT_EQ(describe_verity_device({3, 2u}), "lower-3 device 2");
  EXPECT_EQ(describe_verity_device({0, {}}), "lower-0");
}

TEST(DmNames, ForeignNamesAreNotOurs) {
  for (std::string name :
       {"evmdk-q-lower-0", "evmdk-p-lower-", "evmdk-p-lower-x", "evmdk-p-lower-01x",
        "evmdk-p-lower-1-device-", "evmdk-p-lower-1-device-2-device-3", "evmdk-p-lower-4294967296",
        "evmdk-p-lower--1", "evmdk-p-lower-1-dev-2", "evmdk-pp-lower-0", "xevmdk-p-lower-0",
        "evmdk-p-lower-+1", ""}) {
    EXPECT_EQ(parse_verity_device_name(name, "p"), std::nullopt) << name;
  }
  // A container id that is a prefix of another's does not claim its devices.
  EXPECT_EQ(parse_verity_device_name("evmdk-p-lower-0", "p-lower-0"), std::nullopt);
}

TEST(DmNames, LoopTagsAndPaths) {
  EXPECT_EQ(loop_tag("abc"), "evmdk:abc");
  EXPECT_EQ(loop_tag(std::string(128, 'i')).size(), kMaxLoopTagBytes);
  EXPECT_EQ(parse_loop_device_path("/dev/loop0"), 0u);
  EXPECT_EQ(parse_loop_device_path("/dev/loop1048576"), 1048576u);
  for (std::string bad : {"/dev/loop", "/dev/loop1048577", "/dev/loop-1", "/dev/loop1p1",
                          "/dev/loopx", "/dev/sda", "dev/loop0", "/dev/loop/0"}) {
    EXPECT_EQ(parse_loop_device_path(bad), std::nullopt) << bad;
  }
}

TEST(Markers, HelpersAndPrefixes) {
  EXPECT_EQ(make_option(marker::kPartitionNumber, 3), "X-kata.partition-number=3");
  EXPECT_EQ(option_key("X-kata.dmverity.salt=a=b"), "X-kata.dmverity.salt");
  EXPECT_EQ(option_key("X-kata.overlay-lower"), "X-kata.overlay-lower");
  EXPECT_TRUE(is_marker("X-erofs-vmdk.layer-index=1"));
  EXPECT_FALSE(is_marker("ro"));
  EXPECT_FALSE(is_marker("X"));
  for (auto key : {marker::kMultiLayer, marker::kOverlayUpper, marker::kOverlayLower,
                   marker::kGptPartitioned, marker::kPartitionNumber, marker::kMkdirPath,
                   marker::kDmverityEnabled, marker::kDmverityRoothash}) {
    EXPECT_EQ(key.rfind(marker::kKataPrefix, 0), 0u) << key;
  }
  for (auto key : {marker::kPartUuid, marker::kErofsUuid, marker::kLayerIndex, marker::kRootfsBind,
                   marker::kRootfsReadonly, marker::kOverlayOption, marker::kDevicePrefix}) {
    EXPECT_EQ(key.rfind(marker::kErofsVmdkPrefix, 0), 0u) << key;
  }
  for (auto key : {marker::kContainerdMkdirPath, marker::kContainerdDmverity,
                   marker::kContainerdMkfsFs, marker::kContainerdMkfsSize}) {
    EXPECT_EQ(key.rfind(marker::kContainerdPrefix, 0), 0u) << key;
  }
  EXPECT_TRUE(is_dmverity_option("X-kata.dmverity-enabled=true"));
  EXPECT_TRUE(is_dmverity_option("X-kata.dmverity.salt=-"));
  EXPECT_FALSE(is_dmverity_option("X-kata.dmverityx=1"));
}

}  // namespace
}  // namespace evmdk::contract
