#include "evmdk/host/compose/vmm_attach.h"

#include <fmt/format.h>

#include "evmdk/qemu.h"

namespace evmdk::host {
namespace {

// Cloud Hypervisor's --disk takes key=value pairs separated by commas: a path holding one
// cannot be given there (the API body below has no such limit).
nlohmann::json cloud_hypervisor(const AttachInputs& in) {
  nlohmann::json out{
      {"api_body",
       {{"path", in.disk_path}, {"readonly", true}, {"serial", in.serial}, {"id", in.serial}}}};
  if (in.disk_path.find(',') == std::string::npos) {
    out["args"] = {"--disk", fmt::format("path={},readonly=on,serial={},id={}", in.disk_path,
                                         in.serial, in.serial)};
  }
  return out;
}

}  // namespace

nlohmann::json vmm_attach_json(const AttachInputs& in) {
  const std::string& node = in.serial;
  nlohmann::json blockdev{
      {"driver", in.format},
      {"node-name", node},
      {"read-only", true},
      {"force-share", true},
      {"file", {{"driver", "file"}, {"filename", in.disk_path}, {"read-only", true}}}};
  std::string device = fmt::format("virtio-blk-pci,drive={},serial={}", node, in.serial);
  std::string drive = fmt::format("file={},format={},if=none,id={},readonly=on,force-share=on",
                                  qemu_escape(in.disk_path), in.format, node);
  nlohmann::json fdsets = nlohmann::json::array();
  for (size_t i = 0; i < in.fdset_files.size(); ++i) {
    fdsets.push_back(
        {{"fdset-id", in.first_fdset_id + i}, {"path", in.fdset_files[i]}, {"read-only", true}});
  }
  nlohmann::json out{
      {"disk", in.disk_path},
      {"format", in.format},
      {"serial", in.serial},
      {"blockdev-add", blockdev},
      {"device_add", {{"driver", "virtio-blk-pci"}, {"drive", node}, {"serial", in.serial}}},
      {"blockdev_args", {"-blockdev", blockdev.dump(), "-device", device}},
      {"drive_args", {"-drive", drive, "-device", device}},
      {"drive", drive},
      {"fdsets", fdsets}};
  if (in.other_vmms) {
    out["cloud-hypervisor"] = cloud_hypervisor(in);
    // Firecracker (PUT /drives/{drive_id}) has no serial for a virtio-blk drive: the guest
    // finds the disk by its content (the Storage's source), see docs/runtime-integration.md.
    out["firecracker"] = {{"drive_id", in.serial},
                          {"path_on_host", in.disk_path},
                          {"is_root_device", false},
                          {"is_read_only", true}};
    // krun_add_disk2(ctx, block_id, disk_path, KRUN_DISK_FORMAT_RAW, read_only): block_id
    // becomes the virtio-blk serial the guest reads.
    out["libkrun"] = {
        {"block_id", in.serial}, {"path", in.disk_path}, {"format", "raw"}, {"read_only", true}};
  }
  return out;
}

}  // namespace evmdk::host
