// libFuzzer target for the GPT readers: the host's strict gpt::read_table (what `inspect` and
// `verify` run on a disk's GPT) and the guest's read_partition_table (libblkid on the disk the
// host wrote), both on the same bytes. Modes, by the first byte:
//  'C': the rest is a disk image whose header and entry CRCs are recomputed after mutation, so
//       the fuzzer gets past the checksums into the fields;
//  'R': a table built from the bytes is rendered by the host writer (render_head/render_tail);
//       whatever the writer accepts, both readers must read back exactly;
//  else: the rest is a disk image as is.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "evmdk/checksum.h"
#include "evmdk/error.h"
#include "evmdk/guest/block_device.h"
#include "evmdk/host/compose/gpt.h"
#include "fuzz_support.h"

namespace {

using evmdk::fuzz::check;
namespace gpt = evmdk::host::gpt;

uint64_t get64(const std::string& s, size_t at) {
  uint64_t v = 0;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}
uint32_t get32(const std::string& s, size_t at) {
  uint32_t v = 0;
  std::memcpy(&v, s.data() + at, 4);
  return v;
}
void put32(std::string& s, size_t at, uint32_t v) { std::memcpy(s.data() + at, &v, 4); }

// Recomputes the entry-array and header CRCs of the header at `header_at` (bytes), where they
// fall inside the image.
void fix_crcs(std::string& disk, size_t header_at) {
  if (header_at + 512 > disk.size() || disk.compare(header_at, 8, "EFI PART") != 0) return;
  uint64_t entries_lba = get64(disk, header_at + 72);
  uint64_t entry_bytes = uint64_t{get32(disk, header_at + 80)} * get32(disk, header_at + 84);
  if (entries_lba < disk.size() / 512 && entry_bytes <= disk.size() - entries_lba * 512) {
    put32(disk, header_at + 88, evmdk::crc32_ieee(disk.data() + entries_lba * 512, entry_bytes));
  }
  uint32_t header_size = get32(disk, header_at + 12);
  if (header_size >= 92 && header_size <= 512) {
    put32(disk, header_at + 16, 0);
    put32(disk, header_at + 16, evmdk::crc32_ieee(disk.data() + header_at, header_size));
  }
}

void read_both(evmdk::fuzz::MemFile& file, const gpt::Table* rendered) {
  std::optional<gpt::Table> host_table;
  try {
    host_table = gpt::read_table(file.fd(), "fuzz", true);
  } catch (const evmdk::Error& error) {
    if (rendered) std::fprintf(stderr, "%s\n", error.what());
  }
  if (rendered) {
    check(host_table.has_value(), "the host reads back what the host wrote");
    check(host_table->partitions == rendered->partitions, "same partitions read back");
    check(host_table->disk_guid == rendered->disk_guid, "same disk GUID read back");
    check(host_table->total_sectors == rendered->total_sectors, "same disk size read back");
  }
  if (host_table) {
    for (const auto& p : host_table->partitions) {
      check(p.first_lba <= p.last_lba && p.last_lba < host_table->total_sectors,
            "an accepted partition lies inside the disk");
    }
  }
  try {
    auto guest = evmdk::guest::read_partition_table(file.path());
    if (rendered) {
      check(guest.size() == rendered->partitions.size(), "the guest sees every partition");
      for (size_t i = 0; i < rendered->partitions.size(); ++i) {
        const auto& p = rendered->partitions[i];
        auto found = guest.find(static_cast<unsigned>(i + 1));
        check(found != guest.end(), "the guest finds partition N as number N");
        check(found->second.start == p.first_lba * 512, "the guest's partition start");
        check(found->second.size == (p.last_lba - p.first_lba + 1) * 512, "the guest's size");
        check(found->second.uuid == gpt::format_guid(p.unique), "the guest's PARTUUID");
      }
    }
  } catch (const evmdk::Error& error) {
    if (rendered) std::fprintf(stderr, "%s\n", error.what());
    check(rendered == nullptr, "the guest reads a table the host wrote");
  }
}

// Reads bytes off the input, zero when it runs out.
struct Bytes {
  const uint8_t* data;
  size_t size;
  uint64_t take(size_t n) {
    uint64_t value = 0;
    for (size_t i = 0; i < n && size > 0; ++i, ++data, --size) value |= uint64_t{*data} << (8 * i);
    return value;
  }
};

void fuzz_render(evmdk::fuzz::MemFile& file, Bytes in) {
  gpt::Table table;
  table.entry_count = gpt::entry_count_for(in.take(1) % 8);
  for (auto& b : table.disk_guid) b = static_cast<uint8_t>(in.take(1));
  size_t count = in.take(1) % 6;
  uint64_t lba = gpt::first_usable_lba(table.entry_count) + in.take(1) % 64;
  for (size_t i = 0; i < count; ++i) {
    gpt::Partition p;
    p.type = gpt::linux_filesystem_type();
    for (auto& b : p.unique) b = static_cast<uint8_t>(in.take(1));
    p.unique[6] = static_cast<uint8_t>((p.unique[6] & 0x0f) | 0x40);  // libblkid prints any
    p.first_lba = lba + in.take(1) % 8;
    p.last_lba = p.first_lba + in.take(1) % 32;
    p.name = "layer-" + std::to_string(i);
    lba = p.last_lba + 1;
    table.partitions.push_back(p);
  }
  table.total_sectors = lba + in.take(1) % 16 + gpt::tail_sectors(table.entry_count);
  std::string head, tail;
  try {
    head = gpt::render_head(table, gpt::first_usable_lba(table.entry_count));
    tail = gpt::render_tail(table);
  } catch (const evmdk::Error&) {
    return;  // refused with a message
  }
  std::string disk(table.total_sectors * 512, '\0');
  disk.replace(0, head.size(), head);
  disk.replace(disk.size() - tail.size(), tail.size(), tail);
  file.set(disk);
  read_both(file, &table);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static evmdk::fuzz::MemFile file("gpt-fuzz");
  if (size == 0) return 0;
  if (data[0] == 'R') {
    fuzz_render(file, Bytes{data + 1, size - 1});
    return 0;
  }
  std::string disk(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] == 'C') {
    fix_crcs(disk, 512);
    if (disk.size() >= 1024) {
      size_t last = disk.size() / 512 * 512 - 512;
      fix_crcs(disk, last);
    }
  }
  file.set(disk);
  read_both(file, nullptr);
  return 0;
}
