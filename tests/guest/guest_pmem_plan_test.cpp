// Lowers on virtio-pmem in the plan (no root): driver nvdimm and its two sources, the DAX
// markers with hostile values refused, DAX with dm-verity refused up front saying why; a flat
// (fsmeta) image on one pmem device per kernel (flat-device mode from 6.4; before, refused or
// read through loop slices without DAX, as the storage says); and the contract's encode/decode
// pair the host writes them with.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <string>
#include <vector>

#include "evmdk/contract/markers.h"
#include "evmdk/contract/pmem.h"
#include "evmdk/contract/verity_options.h"
#include "evmdk/error.h"
#include "evmdk/guest/plan.h"
#include "../../guest/src/pmem_device.h"  // the driver's private flat-pmem rules

namespace evmdk::guest {
namespace {

const std::string kPartUuid = "3a3a3a3a-1111-4000-8000-000000000001";

Storage pmem_lower(std::string source, std::vector<std::string> extra = {}) {
  Storage s{"nvdimm",
            {},
            std::move(source),
            "erofs",
            {"ro", "X-kata.overlay-lower", "X-kata.partition-number=1",
             "X-erofs-vmdk.partuuid=" + kPartUuid},
            ""};
  s.options.insert(s.options.end(), extra.begin(), extra.end());
  return s;
}

std::string refusal(const std::vector<Storage>& storages) {
  try {
    (void)make_plan(storages);
  } catch (const Error& error) {
    return error.what();
  }
  return "<accepted>";
}

TEST(GuestPmemPlan, DaxLowerOnAPmemDeviceMountsWithDaxAlways) {
  std::vector<Storage> storages{
      pmem_lower("pmem-pci:0000:00:10.0", {"X-erofs-vmdk.dax=always"}),
      pmem_lower("pmem-scan", {"X-erofs-vmdk.dax=always", "X-erofs-vmdk.dax-fallback=warn",
                               "X-erofs-vmdk.layer-index=1"})};
  Plan plan = make_plan(storages);
  ASSERT_EQ(plan.lowers.size(), 2u);
  const LowerPlan& by_pci = plan.lowers[0];
  ASSERT_TRUE(by_pci.pmem && by_pci.dax);
  EXPECT_EQ(by_pci.pmem->pci_address, "0000:00:10.0");
  EXPECT_EQ(by_pci.dax->fallback, contract::DaxFallback::Error) << "error is the default";
  EXPECT_EQ(by_pci.mount.data, "dax=always");
  EXPECT_EQ(by_pci.mount.flags & (MS_RDONLY | MS_NODEV | MS_NOSUID),
            static_cast<unsigned long>(MS_RDONLY | MS_NODEV | MS_NOSUID));
  const LowerPlan& by_scan = plan.lowers[1];
  ASSERT_TRUE(by_scan.pmem && by_scan.dax);
  EXPECT_FALSE(by_scan.pmem->pci_address);
  EXPECT_EQ(by_scan.dax->fallback, contract::DaxFallback::Warn);
}

TEST(GuestPmemPlan, PmemWithoutDaxAndBlkLowersAreUnchanged) {
  std::vector<Storage> storages{pmem_lower("pmem-scan")};
  Plan plan = make_plan(storages);
  ASSERT_TRUE(plan.lowers[0].pmem);
  EXPECT_FALSE(plan.lowers[0].dax);
  EXPECT_EQ(plan.lowers[0].mount.data, "");
  Storage blk{"blk", {}, "serial:evmdk-layers", "erofs", {"ro", "X-kata.overlay-lower"}, ""};
  std::vector<Storage> plain_storages{blk};
  Plan plain = make_plan(plain_storages);
  EXPECT_FALSE(plain.lowers[0].pmem);
  EXPECT_FALSE(plain.lowers[0].dax);
}

TEST(GuestPmemPlan, HostileDaxMarkersAreRefusedNamingTheOption) {
  for (const auto& [options, expected] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"X-erofs-vmdk.dax=never"}, "X-erofs-vmdk.dax=never is refused"},
           {{"X-erofs-vmdk.dax=always,device=/dev/sda"}, "the only value is 'always'"},
           {{"X-erofs-vmdk.dax"}, "X-erofs-vmdk.dax needs a value"},
           {{"X-erofs-vmdk.dax="}, "X-erofs-vmdk.dax needs a value"},
           {{"X-erofs-vmdk.dax=always", "X-erofs-vmdk.dax=always"}, "more than once"},
           {{"X-erofs-vmdk.dax=always", "X-erofs-vmdk.dax-fallback=ignore"},
            "X-erofs-vmdk.dax-fallback=ignore is refused: 'error' or 'warn'"},
           {{"X-erofs-vmdk.dax=always", "X-erofs-vmdk.dax-fallback=warn",
             "X-erofs-vmdk.dax-fallback=error"},
            "more than once"},
           {{"X-erofs-vmdk.dax-fallback=warn"}, "without X-erofs-vmdk.dax=always"},
           // The plain kernel option never reaches the mount from a storage: the marker does.
           {{"dax=always"}, "'dax=always' is not an allowed mount option"},
           {{"dax"}, "'dax' is not an allowed mount option"}}) {
    std::string why = refusal({pmem_lower("pmem-scan", options)});
    EXPECT_NE(why.find(expected), std::string::npos) << why;
    EXPECT_NE(why.find("storage #0 'pmem-scan'"), std::string::npos) << why;
  }
}

TEST(GuestPmemPlan, PmemSourcesAreRefusedUnlessWellFormed) {
  for (const auto& [source, expected] : std::vector<std::pair<std::string, std::string>>{
           {"/dev/pmem0", "pmemN follows PCI probe order"},
           {"serial:evmdk-layers", "needs source pmem-pci:<DDDD:BB:DD.F> or pmem-scan"},
           {"pmem-pci:00:10.0", "not a virtio-pmem PCI address"},
           {"pmem-pci:0000:00:10.0/../../x", "not a virtio-pmem PCI address"},
           {"pmem-pci:0000:00:10.8", "not a virtio-pmem PCI address"},
           {"pmem-pci:0000:00:20.0", "not a virtio-pmem PCI address"},
           {"pmem-pci:0000:00:1G.0", "not a virtio-pmem PCI address"},
           {"pmem-pci:0000:00:1A.0", "not a virtio-pmem PCI address"},
           {"pmem-pci:", "not a virtio-pmem PCI address"},
           {"pmem-scanx", "needs source"}}) {
    std::string why = refusal({pmem_lower(source)});
    EXPECT_NE(why.find(expected), std::string::npos) << source << ": " << why;
  }
  Storage on_blk = pmem_lower("pmem-scan");
  on_blk.driver = "blk";
  EXPECT_NE(refusal({on_blk}).find("needs driver 'nvdimm', not 'blk'"), std::string::npos)
      << refusal({on_blk});
}

TEST(GuestPmemPlan, ScanNeedsTheIdentityItMatches) {
  Storage no_partuuid{"nvdimm",
                      {},
                      "pmem-scan",
                      "erofs",
                      {"ro", "X-kata.overlay-lower", "X-kata.partition-number=2"},
                      ""};
  EXPECT_NE(refusal({no_partuuid}).find("source pmem-scan needs option X-erofs-vmdk.partuuid"),
            std::string::npos)
      << refusal({no_partuuid});
  Storage whole{"nvdimm", {}, "pmem-scan", "erofs", {"ro", "X-kata.overlay-lower"}, ""};
  EXPECT_NE(refusal({whole}).find("needs option X-erofs-vmdk.erofs-uuid"), std::string::npos)
      << refusal({whole});
  whole.options.push_back("X-erofs-vmdk.erofs-uuid=" + kPartUuid);
  EXPECT_EQ(refusal({whole}), "<accepted>");
  // By PCI address the device is named: the identity is checked after, as on virtio-blk.
  Storage by_pci{"nvdimm", {}, "pmem-pci:0000:00:0a.0", "erofs", {"ro", "X-kata.overlay-lower"},
                 ""};
  EXPECT_EQ(refusal({by_pci}), "<accepted>");
}

TEST(GuestPmemPlan, DaxWithDmVerityIsRefusedSayingWhy) {
  contract::VerityOptions verity;
  verity.root_hash = std::string(64, 'a');
  verity.hash_offset = 1 << 20;
  std::vector<std::string> extra = contract::encode_verity_options(verity);
  extra.push_back("X-erofs-vmdk.dax=always");
  std::string why = refusal({pmem_lower("pmem-scan", extra)});
  EXPECT_NE(why.find("together with dm-verity"), std::string::npos) << why;
  EXPECT_NE(why.find("a dm-verity device cannot do DAX"), std::string::npos) << why;
  EXPECT_NE(why.find("choose DAX"), std::string::npos) << why;
  // dm-verity over pmem without DAX stays allowed (it reads through the page cache).
  extra.pop_back();
  EXPECT_EQ(refusal({pmem_lower("pmem-scan", extra)}), "<accepted>");
}

TEST(GuestPmemPlan, DaxNeedsAPmemDevice) {
  Storage blk{"blk",
              {},
              "serial:evmdk-layers",
              "erofs",
              {"ro", "X-kata.overlay-lower", "X-erofs-vmdk.dax=always"},
              ""};
  std::string why = refusal({blk});
  EXPECT_NE(why.find("needs a virtio-pmem device (driver 'nvdimm'); driver 'blk' cannot do DAX"),
            std::string::npos)
      << why;
}

TEST(ContractPmem, EncodersReadBackThroughTheDecoders) {
  for (auto fallback : {contract::DaxFallback::Error, contract::DaxFallback::Warn}) {
    auto options = contract::encode_dax_options({fallback});
    ASSERT_EQ(options.size(), 2u);
    EXPECT_EQ(options[0], std::string(marker::kDax) + "=always");
    EXPECT_EQ(options[1],
              std::string(marker::kDaxFallback) + "=" + contract::dax_fallback_name(fallback));
    EXPECT_EQ(contract::decode_dax_options(options, "t"), contract::DaxOptions{fallback});
  }
  EXPECT_EQ(contract::encode_pmem_source({}), "pmem-scan");
  EXPECT_EQ(contract::encode_pmem_source({"0000:00:10.0"}), "pmem-pci:0000:00:10.0");
  EXPECT_THROW(contract::encode_pmem_source({"0000:00:10"}), Error);
  EXPECT_FALSE(contract::decode_dax_options({"ro", "X-erofs-vmdk.daxx=always"}, "t"));
}

TEST(GuestPmemFlat, KernelReleasesParseToMajorMinor) {
  using detail::kernel_major_minor;
  EXPECT_EQ(kernel_major_minor("6.1.0-57-amd64"), (std::pair{6, 1}));
  EXPECT_EQ(kernel_major_minor("6.12.95+deb12-amd64"), (std::pair{6, 12}));
  EXPECT_EQ(kernel_major_minor("6.4"), (std::pair{6, 4}));
  EXPECT_EQ(kernel_major_minor("10.0-rc1"), (std::pair{10, 0}));
  for (std::string odd : {"", "6", "6.", "6-1", "x6.1", ".1", "6.x"}) {
    EXPECT_FALSE(kernel_major_minor(odd)) << odd;
  }
  EXPECT_FALSE(kernel_major_minor("99999999999999999999.1")) << "out of range";
}

TEST(GuestPmemFlat, FlatDeviceModeFromLinux64) {
  using detail::kernel_has_flat_device_mode;
  EXPECT_FALSE(kernel_has_flat_device_mode("6.1.0-57-amd64"));  // the lanes' Debian 12 kernel
  EXPECT_FALSE(kernel_has_flat_device_mode("6.3.13"));
  EXPECT_FALSE(kernel_has_flat_device_mode("5.15.0-91-generic"));
  EXPECT_TRUE(kernel_has_flat_device_mode("6.4.0"));
  EXPECT_TRUE(kernel_has_flat_device_mode("6.12.95+deb12-amd64"));  // the backports kernel
  EXPECT_TRUE(kernel_has_flat_device_mode("7.0.1"));
  // Unknown: try the flat mount; a refusal is then handled as on an old kernel.
  EXPECT_TRUE(kernel_has_flat_device_mode("custom"));
}

// A flat pmem lower on a kernel without flat-device mode: error refuses before any mount,
// naming the storage, the device, the kernel and what works; warn gives the warning.
TEST(GuestPmemFlat, WithoutFlatDeviceModeErrorRefusesAndWarnWarns) {
  Storage flat{"nvdimm",
               {},
               "pmem-scan",
               "erofs",
               {"ro", "X-kata.overlay-lower",
                "X-erofs-vmdk.erofs-uuid=6c0ffee0-0000-4000-8000-00000000f1a7",
                "X-erofs-vmdk.dax=always"},
               ""};
  // The plan points into the storages it was made from: they must outlive it.
  std::vector<Storage> storages{flat};
  Plan plan = make_plan(storages);
  std::string refused;
  try {
    (void)detail::refuse_or_warn_flat_dax(plan.lowers[0], "/dev/pmem0", "6.1.0-57-amd64",
                                          "this kernel has no flat-device mode");
  } catch (const Error& error) {
    refused = error.what();
  }
  for (std::string expected :
       {"storage #0 'pmem-scan': /dev/pmem0 holds a multi-device (flat, fsmeta) EROFS image",
        "needs the kernel's EROFS flat-device mode (Linux 6.4 or later)",
        "this kernel has no flat-device mode (guest kernel 6.1.0-57-amd64)",
        "loop slices passed as device=, cannot do DAX",
        "X-erofs-vmdk.dax-fallback=error refuses that: compose a gpt disk (--mode gpt)"}) {
    EXPECT_NE(refused.find(expected), std::string::npos) << refused;
  }
  flat.options.push_back("X-erofs-vmdk.dax-fallback=warn");
  std::vector<Storage> warn_storages{flat};
  Plan warn = make_plan(warn_storages);
  std::string warning = detail::refuse_or_warn_flat_dax(
      warn.lowers[0], "/dev/pmem0", "6.1.0-57-amd64", "this kernel has no flat-device mode");
  EXPECT_NE(warning.find("guest kernel 6.1.0-57-amd64"), std::string::npos) << warning;
  EXPECT_NE(warning.find("mounted through loop slices without DAX, as "
                         "X-erofs-vmdk.dax-fallback=warn allows"),
            std::string::npos)
      << warning;
  // The slices are mounted with the lower's data minus dax=always.
  EXPECT_EQ(warn.lowers[0].mount.data, "dax=always");
  EXPECT_EQ(detail::without_dax(warn.lowers[0].mount.data), "");
  EXPECT_EQ(detail::without_dax("acl,dax=always,user_xattr"), "acl,user_xattr");
  EXPECT_EQ(detail::without_dax("dax=alwaysx,,dax=always"), "dax=alwaysx");
}

}  // namespace
}  // namespace evmdk::guest
