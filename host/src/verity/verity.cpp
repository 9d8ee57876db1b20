#include "evmdk/host/verity/verity.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <charconv>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "evmdk/atomic_file.h"
#include "evmdk/checked_math.h"
#include "evmdk/contract/verity_options.h"
#include "evmdk/error.h"
#include "evmdk/input_file.h"
#include "evmdk/ondisk/erofs.h"
#include "evmdk/openssl_ptr.h"
#include "evmdk/storage_spec.h"
#include "evmdk/unique_fd.h"
#include "evmdk/uuid.h"

namespace evmdk::host {
namespace {

EvpMdPtr fetch_digest(const std::string& algorithm) {
  EvpMdPtr md(EVP_MD_fetch(nullptr, algorithm.c_str(), nullptr));
  if (!md) throw Error("unknown hash algorithm '{}'", algorithm);
  return md;
}

// Hashes one block the way dm-verity does: salt first for hash type 1, last for type 0.
class BlockHasher {
 public:
  BlockHasher(const EVP_MD* md, std::span<const uint8_t> salt, uint32_t hash_type)
      : md_(md), ctx_(EVP_MD_CTX_new()), salt_(salt), salt_first_(hash_type >= 1) {
    if (!ctx_) throw Error("out of memory creating a digest context");
  }
  void hash(const uint8_t* data, size_t size, uint8_t* out) {
    bool ok = EVP_DigestInit_ex2(ctx_.get(), md_, nullptr) == 1;
    if (salt_first_ && !salt_.empty())
      ok = ok && EVP_DigestUpdate(ctx_.get(), salt_.data(), salt_.size()) == 1;
    ok = ok && EVP_DigestUpdate(ctx_.get(), data, size) == 1;
    if (!salt_first_ && !salt_.empty())
      ok = ok && EVP_DigestUpdate(ctx_.get(), salt_.data(), salt_.size()) == 1;
    unsigned int length = 0;
    ok = ok && EVP_DigestFinal_ex(ctx_.get(), out, &length) == 1;
    if (!ok) throw Error("digest computation failed");
  }

 private:
  const EVP_MD* md_;
  EvpMdCtxPtr ctx_;
  std::span<const uint8_t> salt_;
  bool salt_first_;
};

uint64_t round_up(uint64_t value, uint64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// The bytes of the EROFS layer from its superblock -- the filesystem, and every extra device
// its table maps inside the file (a tar-index layer's tar follows its index) -- or nullopt
// when the file is not EROFS. A tree must protect all of them and never be written over them.
// Only devices ending by `devices_end` count: where a tree already starts (its hash offset),
// the bytes are the tree's, not a device's (an fsmeta's blobs are mapped beyond its end).
std::optional<uint64_t> erofs_image_size(int fd, const std::string& path, uint64_t file_size,
                                         uint64_t devices_end) {
  namespace erofs = ondisk::erofs;
  if (file_size < erofs::kSuperblockOffset + erofs::kSuperblockSize) return std::nullopt;
  std::array<uint8_t, erofs::kSuperblockSize> bytes{};
  pread_exact(fd, bytes.data(), bytes.size(), erofs::kSuperblockOffset, path);
  if (!ondisk::has_erofs_magic(bytes)) return std::nullopt;
  const ondisk::ErofsSuperblock sb = ondisk::parse_erofs_superblock(bytes, path);
  uint64_t size = sb.fs_size();
  if (size > file_size) {
    throw Error("{}: EROFS image claims {} bytes but the file has only {}", path, size, file_size);
  }
  if (!sb.has_device_table() || sb.extra_devices == 0) return size;
  const uint64_t table_offset = sb.device_table_offset();
  const uint64_t table_end = add_or_throw(table_offset, sb.device_table_size(), path);
  if (table_end > file_size) return size;  // no table to read: nothing is mapped in the file
  std::vector<uint8_t> table(table_end - table_offset);
  pread_exact(fd, table.data(), table.size(), table_offset, path);
  for (const auto& slot : ondisk::parse_erofs_device_table(table, sb, path)) {
    if (slot.mapped_blkaddr == 0 || slot.blocks == 0) continue;
    uint64_t end = mul_or_throw<uint64_t>(
        add_or_throw<uint64_t>(slot.mapped_blkaddr, slot.blocks, path), sb.block_size(), path);
    if (end <= std::min(file_size, devices_end)) size = std::max(size, end);
  }
  return size;
}

unsigned thread_count(unsigned requested) {
  if (requested > 0) return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

// Hashes blocks [0, count) of `block_size` bytes starting at byte `base` of fd into `out`
// (digest slot `slot` bytes apart), in `threads` threads reading 1 MiB chunks.
void hash_blocks_from_file(int fd, const std::string& path, uint64_t base, uint64_t count,
                           uint32_t block_size, const EVP_MD* md, std::span<const uint8_t> salt,
                           uint32_t hash_type, uint8_t* out, size_t slot, unsigned threads) {
  const uint64_t blocks_per_chunk = std::max<uint64_t>(1, (1u << 20) / block_size);
  const uint64_t chunks = (count + blocks_per_chunk - 1) / blocks_per_chunk;
  std::atomic<uint64_t> next_chunk{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    try {
      BlockHasher hasher(md, salt, hash_type);
      std::vector<uint8_t> buffer(blocks_per_chunk * block_size);
      for (uint64_t chunk; (chunk = next_chunk.fetch_add(1)) < chunks;) {
        uint64_t first = chunk * blocks_per_chunk;
        uint64_t n = std::min(blocks_per_chunk, count - first);
        size_t bytes = n * block_size;
        size_t got = pread_full(fd, buffer.data(), bytes, base + first * block_size, path);
        // Past the end of the file the data area reads as zeros (as on a sparse file).
        if (got < bytes) std::memset(buffer.data() + got, 0, bytes - got);
        for (uint64_t i = 0; i < n; ++i) {
          hasher.hash(buffer.data() + i * block_size, block_size, out + (first + i) * slot);
        }
      }
    } catch (...) {
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next_chunk.store(chunks);
    }
  };
  unsigned n_threads = static_cast<unsigned>(std::min<uint64_t>(thread_count(threads), chunks));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < n_threads; ++i) pool.emplace_back(worker);
  worker();
  for (auto& thread : pool) thread.join();
  if (failure) std::rethrow_exception(failure);
}

// Builds every level in memory: returns the tree (top level first, as stored) and the root.
struct BuiltTree {
  std::vector<uint8_t> tree;
  std::vector<uint8_t> root;
};

// Data blocks from byte `base` of fd (0 for a layer file, the layer's offset in a disk image).
BuiltTree build_tree(int fd, const std::string& path, const VeritySuperblock& sb, unsigned threads,
                     uint64_t base = 0) {
  EvpMdPtr md = fetch_digest(sb.algorithm);
  VerityGeometry geometry = verity_geometry(sb);
  const size_t hbs = sb.hash_block_size;
  const size_t slot = hbs >> geometry.hashes_per_block_bits;
  BuiltTree built;
  built.tree.assign(geometry.tree_blocks * hbs, 0);
  built.root.resize(geometry.digest_size);
  std::span<const uint8_t> salt(sb.salt);

  if (geometry.level_start.empty()) {  // one data block: the root hashes it directly
    std::vector<uint8_t> block(sb.data_block_size, 0);
    pread_full(fd, block.data(), block.size(), base, path);
    BlockHasher(md.get(), salt, sb.hash_type).hash(block.data(), block.size(), built.root.data());
    return built;
  }
  auto level_ptr = [&](size_t level) {
    return built.tree.data() + geometry.level_start[level] * hbs;
  };
  hash_blocks_from_file(fd, path, base, sb.data_blocks, sb.data_block_size, md.get(), salt,
                        sb.hash_type, level_ptr(0), slot, threads);
  BlockHasher hasher(md.get(), salt, sb.hash_type);
  for (size_t level = 1; level < geometry.level_start.size(); ++level) {
    const uint8_t* below = level_ptr(level - 1);
    uint8_t* out = level_ptr(level);
    for (uint64_t i = 0; i < geometry.level_blocks[level - 1]; ++i) {
      hasher.hash(below + i * hbs, hbs, out + i * slot);
    }
  }
  hasher.hash(level_ptr(geometry.level_start.size() - 1), hbs, built.root.data());
  return built;
}

}  // namespace

// ---- sidecar ----

std::string verity_sidecar_path(const std::string& layer_path) { return layer_path + ".dmverity"; }

VeritySidecar parse_verity_sidecar(std::string_view json_text, const std::string& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(json_text);
  } catch (const std::exception& error) {
    throw Error("{}: not valid JSON: {}", path, error.what());
  }
  if (!json.is_object())
    throw Error("{}: expected a JSON object with roothash and hashoffset", path);
  VeritySidecar sidecar;
  auto root = json.find("roothash");
  if (root == json.end() || !root->is_string())
    throw Error("{}: missing string field \"roothash\"", path);
  auto hex = root->get<std::string>();
  if (hex.empty() || hex.size() % 2 != 0 ||
      !std::all_of(hex.begin(), hex.end(), [](unsigned char c) { return std::isxdigit(c) != 0; })) {
    throw Error("{}: \"roothash\" {} is not a hex string", path, hex);
  }
  std::transform(hex.begin(), hex.end(), hex.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  sidecar.root_hash = hex;
  auto offset = json.find("hashoffset");
  if (offset == json.end() || !offset->is_number_unsigned()) {
    throw Error("{}: missing non-negative integer field \"hashoffset\"", path);
  }
  sidecar.hash_offset = offset->get<uint64_t>();
  return sidecar;
}

VeritySidecar read_verity_sidecar(const std::string& path) {
  return parse_verity_sidecar(read_input_file(path, "dm-verity sidecar", 1u << 20), path);
}

std::string verity_sidecar_json(const VeritySidecar& sidecar) {
  nlohmann::json json{{"roothash", sidecar.root_hash}, {"hashoffset", sidecar.hash_offset}};
  return json.dump();
}

void write_verity_sidecar(const std::string& path, const VeritySidecar& sidecar) {
  write_file_atomic(path, verity_sidecar_json(sidecar));
}

// ---- superblock ----

VeritySuperblock read_verity_superblock(const std::string& path, uint64_t hash_offset) {
  InputFile file = open_input_file(path, "dm-verity protected layer");
  UniqueFd fd = std::move(file.fd);
  std::array<uint8_t, kVeritySuperblockSize> bytes{};
  std::string context = fmt::format("{} at offset {}", path, hash_offset);
  if (pread_full(fd.get(), bytes.data(), bytes.size(), hash_offset, path) != bytes.size()) {
    throw Error("{}: file ends before the dm-verity superblock", context);
  }
  return parse_verity_superblock(bytes, context);
}

std::array<uint8_t, 16> parse_uuid(std::string_view text) {
  auto uuid = parse_uuid_text(text);
  if (!uuid) throw Error("malformed UUID '{}'", text);
  return *uuid;
}

// ---- tree ----

VerityGeometry verity_geometry(const VeritySuperblock& sb) {
  EvpMdPtr md = fetch_digest(sb.algorithm);
  VerityGeometry g;
  g.digest_size = static_cast<uint32_t>(EVP_MD_get_size(md.get()));
  if (g.digest_size == 0 || g.digest_size > sb.hash_block_size / 2) {
    throw Error("hash algorithm {} digest of {} bytes does not fit a {}-byte hash block twice",
                sb.algorithm, g.digest_size, sb.hash_block_size);
  }
  g.hashes_per_block_bits =
      static_cast<uint32_t>(std::bit_width(sb.hash_block_size / g.digest_size) - 1);
  const uint32_t bits = g.hashes_per_block_bits;
  size_t levels = 0;
  while (bits * levels < 64 && ((sb.data_blocks - 1) >> (bits * levels)) != 0) ++levels;
  g.level_start.resize(levels);
  g.level_blocks.resize(levels);
  for (size_t i = 0; i < levels; ++i) {
    uint64_t shift = (i + 1) * bits;
    g.level_blocks[i] = shift >= 64 ? 1 : ((sb.data_blocks - 1) >> shift) + 1;
  }
  uint64_t position = 0;
  for (size_t i = levels; i-- > 0;) {
    g.level_start[i] = position;
    position += g.level_blocks[i];
  }
  g.tree_blocks = position;
  return g;
}

VerityLayout verity_layout(const VeritySuperblock& sb, uint64_t hash_offset, uint64_t file_size,
                           const std::string& context) {
  VerityLayout out;
  out.geometry = verity_geometry(sb);
  // Every size from the superblock in checked arithmetic: a wrap would make a huge tree
  // look as if it fit (issue 13: data_blocks = 1116892707587883008 with md5).
  auto data_bytes = mul_checked<uint64_t>(sb.data_blocks, sb.data_block_size);
  if (!data_bytes || *data_bytes > hash_offset) {
    throw Error("{}: the data area ({} blocks of {}) overlaps the hash tree at {}", context,
                sb.data_blocks, sb.data_block_size, hash_offset);
  }
  out.data_bytes = *data_bytes;
  auto tree_bytes = mul_checked<uint64_t>(out.geometry.tree_blocks, sb.hash_block_size);
  auto hash_bytes =
      tree_bytes ? add_checked<uint64_t>(*tree_bytes, sb.hash_block_size) : std::nullopt;
  auto hash_end = hash_bytes ? add_checked<uint64_t>(hash_offset, *hash_bytes) : std::nullopt;
  if (!hash_end || *hash_end > file_size) {
    throw Error(
        "{}: the hash tree ({} blocks of {} after the superblock at {}) ends past the "
        "file's {} bytes (truncated, or a superblock claiming more data than there is)",
        context, out.geometry.tree_blocks, sb.hash_block_size, hash_offset, file_size);
  }
  out.hash_end = *hash_end;
  return out;
}

namespace {

// The recomputed tree against the stored one after the superblock at hash_offset (both bytes of
// fd; data blocks from data_offset).
VerityTreeCheck check_tree(int fd, const std::string& path, uint64_t data_offset,
                           uint64_t hash_offset, const VeritySuperblock& sb, unsigned threads) {
  BuiltTree built = build_tree(fd, path, sb, threads, data_offset);
  VerityTreeCheck check;
  check.root_hash = to_hex(built.root);
  const uint64_t tree_start = hash_offset + sb.hash_block_size;
  std::vector<uint8_t> stored(std::min<size_t>(built.tree.size(), size_t{1} << 20));
  for (uint64_t done = 0; done < built.tree.size(); done += stored.size()) {
    size_t step = static_cast<size_t>(std::min<uint64_t>(stored.size(), built.tree.size() - done));
    size_t got = pread_full(fd, stored.data(), step, tree_start + done, path);
    auto [mine, theirs] =
        std::mismatch(built.tree.begin() + static_cast<ptrdiff_t>(done),
                      built.tree.begin() + static_cast<ptrdiff_t>(done + got), stored.begin());
    if (mine != built.tree.begin() + static_cast<ptrdiff_t>(done + got) || got < step) {
      check.first_bad_tree_byte = tree_start + static_cast<uint64_t>(mine - built.tree.begin());
      break;
    }
  }
  return check;
}

}  // namespace

VerityTreeCheck verity_check_tree(const std::string& path, uint64_t hash_offset,
                                  const VeritySuperblock& sb, unsigned threads) {
  InputFile file = open_input_file(path, "dm-verity protected layer");
  // The tree must lie inside the file before anything is sized from the superblock.
  (void)verity_layout(sb, hash_offset, static_cast<uint64_t>(file.st.st_size), path);
  return check_tree(file.fd.get(), path, 0, hash_offset, sb, threads);
}

VerityTreeCheck verity_check_tree_at(int fd, const std::string& name, uint64_t data_offset,
                                     uint64_t hash_offset, const VeritySuperblock& sb,
                                     unsigned threads) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("{}: cannot stat", name);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (hash_offset < data_offset || size < hash_offset) {
    throw Error(
        "{}: the dm-verity superblock at {} is not between the data at {} and the end "
        "({} bytes)",
        name, hash_offset, data_offset, size);
  }
  (void)verity_layout(sb, hash_offset - data_offset, size - data_offset, name);
  return check_tree(fd, name, data_offset, hash_offset, sb, threads);
}

VerityFormatResult verity_format(const std::string& layer_path,
                                 const VerityFormatOptions& options) {
  std::string sidecar_path = verity_sidecar_path(layer_path);
  std::optional<VeritySidecar> existing;
  if (std::filesystem::exists(sidecar_path)) {
    existing = read_verity_sidecar(sidecar_path);
    if (!options.force) {
      throw Error("{} already has dm-verity data ({} : root hash {}); use --force to re-format it",
                  layer_path, sidecar_path, existing->root_hash);
    }
  }
  // O_NONBLOCK: a FIFO must not hang the open; only a regular file is formatted.
  UniqueFd fd(::open(layer_path.c_str(), O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd) throw_errno("layer {}: cannot open for writing", layer_path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("layer {}: cannot stat", layer_path);
  if (!S_ISREG(st.st_mode)) {
    throw Error("layer {}: is a {}, not a regular file", layer_path, file_type_name(st.st_mode));
  }
  if (::fcntl(fd.get(), F_SETFL, O_RDWR) != 0) throw_errno("layer {}: fcntl", layer_path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);

  VeritySuperblock sb;
  sb.hash_type = options.hash_type;
  sb.algorithm = options.algorithm;
  sb.data_block_size = options.data_block_size;
  sb.hash_block_size = options.hash_block_size;
  sb.salt = options.salt;
  if (options.uuid) {
    sb.uuid = *options.uuid;
  } else {
    if (RAND_bytes(sb.uuid.data(), static_cast<int>(sb.uuid.size())) != 1)
      throw Error("cannot generate a random UUID");
    sb.uuid[6] = uint8_t((sb.uuid[6] & 0x0F) | 0x40);
    sb.uuid[8] = uint8_t((sb.uuid[8] & 0x3F) | 0x80);
  }

  uint64_t hash_offset;
  if (options.hash_offset) {
    hash_offset = *options.hash_offset;
  } else if (auto erofs_size = erofs_image_size(fd.get(), layer_path, size, size)) {
    hash_offset = round_up(*erofs_size, std::max(sb.data_block_size, sb.hash_block_size));
  } else if (existing) {
    hash_offset = existing->hash_offset;
  } else {
    hash_offset = round_up(size, std::max(sb.data_block_size, sb.hash_block_size));
  }
  if (hash_offset == 0) throw Error("{}: empty layer: nothing to protect", layer_path);
  if (hash_offset % sb.data_block_size != 0 || hash_offset % sb.hash_block_size != 0) {
    throw Error("{}: hash offset {} is not a multiple of the data ({}) and hash ({}) block sizes",
                layer_path, hash_offset, sb.data_block_size, sb.hash_block_size);
  }
  sb.data_blocks = hash_offset / sb.data_block_size;
  ondisk::validate_verity_superblock(sb, layer_path);
  VerityGeometry geometry = verity_geometry(sb);
  if (!std::has_single_bit(geometry.digest_size)) {
    throw Error("{}: hash algorithm {} ({}-byte digests) is not supported; use sha256 or sha512",
                layer_path, sb.algorithm, geometry.digest_size);
  }

  BuiltTree built = build_tree(fd.get(), layer_path, sb, options.threads);

  // Superblock block (zero padded) followed by the tree, written in one go.
  std::vector<uint8_t> out(sb.hash_block_size, 0);
  auto sb_bytes = serialize_verity_superblock(sb);
  std::copy(sb_bytes.begin(), sb_bytes.end(), out.begin());
  out.insert(out.end(), built.tree.begin(), built.tree.end());
  if (size < hash_offset && ::ftruncate(fd.get(), static_cast<off_t>(hash_offset)) != 0) {
    throw_errno("cannot extend {} to the hash offset {}", layer_path, hash_offset);
  }
  write_all(fd.get(), out.data(), out.size(), layer_path, static_cast<int64_t>(hash_offset));
  uint64_t end = hash_offset + out.size();
  if (size > end && ::ftruncate(fd.get(), static_cast<off_t>(end)) != 0) {
    throw_errno("cannot truncate {} after the hash tree", layer_path);
  }
  if (::fsync(fd.get()) != 0) throw_errno("cannot fsync {}", layer_path);

  VerityFormatResult result;
  result.sidecar = {to_hex(built.root), hash_offset};
  result.superblock = sb;
  result.hash_blocks = geometry.tree_blocks;
  result.file_size = end;
  if (options.write_sidecar) write_verity_sidecar(sidecar_path, result.sidecar);
  return result;
}

// ---- compose's view ----

namespace {

// The layer's sidecar, nullopt when there is none (any other failure to read it throws).
std::optional<VeritySidecar> find_verity_sidecar(const std::string& layer_path) {
  std::string sidecar_path = verity_sidecar_path(layer_path);
  struct stat sidecar_st {};
  if (::lstat(sidecar_path.c_str(), &sidecar_st) != 0 && errno == ENOENT) return std::nullopt;
  return read_verity_sidecar(sidecar_path);
}

VerityLayerInfo check_verity_layer(const InputFile& file, const std::string& layer_path,
                                   VeritySidecar sidecar) {
  VerityLayerInfo info;
  info.sidecar = std::move(sidecar);
  info.device = file.st.st_dev;
  info.inode = file.st.st_ino;
  std::string context =
      fmt::format("layer {} (dm-verity sidecar {})", layer_path, verity_sidecar_path(layer_path));
  const uint64_t size = static_cast<uint64_t>(file.st.st_size);
  try {
    std::array<uint8_t, kVeritySuperblockSize> bytes{};
    if (pread_full(file.fd.get(), bytes.data(), bytes.size(), info.sidecar.hash_offset,
                   layer_path) != bytes.size()) {
      throw Error("file ends before the dm-verity superblock at offset {}",
                  info.sidecar.hash_offset);
    }
    info.superblock = parse_verity_superblock(
        bytes, fmt::format("superblock at offset {}", info.sidecar.hash_offset));
  } catch (const std::exception& error) {
    throw_with_context(error, context);
  }
  const auto& sb = info.superblock;
  VerityLayout layout = verity_layout(sb, info.sidecar.hash_offset, size, context);
  const VerityGeometry& geometry = layout.geometry;
  if (info.sidecar.root_hash.size() != geometry.digest_size * 2u) {
    throw Error("{}: roothash has {} hex digits, {} needs {}", context,
                info.sidecar.root_hash.size(), sb.algorithm, geometry.digest_size * 2);
  }
  // The data area must cover the filesystem it protects: a tree over fewer blocks would leave
  // the rest of the image unchecked in the guest.
  if (auto fs_size = erofs_image_size(file.fd.get(), layer_path, size, info.sidecar.hash_offset);
      fs_size && layout.data_bytes < *fs_size) {
    throw Error(
        "{}: dm-verity covers {} bytes ({} blocks of {}) but the EROFS filesystem is {} "
        "bytes",
        context, layout.data_bytes, sb.data_blocks, sb.data_block_size, *fs_size);
  }
  info.hash_end = layout.hash_end;
  // The root hash must be the hash of the tree's top block (of the only data block when the
  // layer is one block long); one block is cheap to check and catches a stale sidecar.
  EvpMdPtr md = fetch_digest(sb.algorithm);
  uint64_t top_offset =
      geometry.level_start.empty() ? 0 : info.sidecar.hash_offset + sb.hash_block_size;
  size_t top_size = geometry.level_start.empty() ? sb.data_block_size : sb.hash_block_size;
  std::vector<uint8_t> block(top_size);
  pread_exact(file.fd.get(), block.data(), block.size(), top_offset, layer_path);
  std::vector<uint8_t> digest(geometry.digest_size);
  BlockHasher(md.get(), sb.salt, sb.hash_type).hash(block.data(), block.size(), digest.data());
  if (to_hex(digest) != info.sidecar.root_hash) {
    throw Error("{}: roothash {} does not match the hash tree (its top block hashes to {})",
                context, info.sidecar.root_hash, to_hex(digest));
  }
  return info;
}

}  // namespace

std::optional<VerityLayerInfo> inspect_verity_layer(const std::string& layer_path) {
  auto sidecar = find_verity_sidecar(layer_path);
  if (!sidecar) return std::nullopt;
  InputFile file = open_input_file(layer_path, "layer");
  return check_verity_layer(file, layer_path, std::move(*sidecar));
}

std::optional<VerityLayerInfo> inspect_verity_layer(const InputFile& layer,
                                                    const std::string& layer_path) {
  auto sidecar = find_verity_sidecar(layer_path);
  if (!sidecar) return std::nullopt;
  return check_verity_layer(layer, layer_path, std::move(*sidecar));
}

VerityPolicy parse_verity_policy(std::string_view text) {
  if (text == "off") return VerityPolicy::kOff;
  if (text == "auto") return VerityPolicy::kAuto;
  if (text == "on") return VerityPolicy::kOn;
  throw Error("invalid --verity policy '{}': use off, auto or on", text);
}

std::string_view to_string(VerityPolicy policy) {
  switch (policy) {
    case VerityPolicy::kOff: return "off";
    case VerityPolicy::kAuto: return "auto";
    case VerityPolicy::kOn: return "on";
  }
  return "?";
}

std::vector<std::string> verity_options(const VerityLayerInfo& info) {
  return verity_options(info, info.sidecar.hash_offset);
}

std::vector<std::string> verity_options(const VerityLayerInfo& info, uint64_t hash_offset) {
  const auto& sb = info.superblock;
  contract::VerityOptions options;
  options.root_hash = info.sidecar.root_hash;
  options.hash_offset = hash_offset;
  options.data_block_size = sb.data_block_size;
  options.hash_block_size = sb.hash_block_size;
  options.algorithm = sb.algorithm;
  options.salt = to_hex(sb.salt);
  options.hash_type = sb.hash_type;
  return contract::encode_verity_options(options);
}

namespace {

template <typename Inspect>
std::optional<VerityLayerInfo> under_policy(Inspect inspect, const std::string& layer_path,
                                            VerityPolicy policy, const std::string& context) {
  if (policy == VerityPolicy::kOff) return std::nullopt;
  std::optional<VerityLayerInfo> info;
  try {
    info = inspect();
  } catch (const std::exception& error) {
    throw Error("{}: broken dm-verity data: {}", context, error.what());
  }
  if (!info && policy == VerityPolicy::kOn) {
    throw Error(
        "{} has no dm-verity data ({} not found) and --verity=on; run "
        "`erofs-vmdk verity format {}` or use --verity=auto",
        context, verity_sidecar_path(layer_path), layer_path);
  }
  return info;
}

}  // namespace

std::optional<VerityLayerInfo> verity_layer_under_policy(const std::string& layer_path,
                                                         VerityPolicy policy,
                                                         const std::string& context) {
  return under_policy([&] { return inspect_verity_layer(layer_path); }, layer_path, policy,
                      context);
}

std::optional<VerityLayerInfo> verity_layer_under_policy(const InputFile& layer,
                                                         const std::string& layer_path,
                                                         VerityPolicy policy,
                                                         const std::string& context) {
  return under_policy([&] { return inspect_verity_layer(layer, layer_path); }, layer_path, policy,
                      context);
}

std::vector<std::string> verity_options_for_layer(const std::string& layer_path,
                                                  VerityPolicy policy) {
  auto info = verity_layer_under_policy(layer_path, policy, "layer " + layer_path);
  return info ? verity_options(*info) : std::vector<std::string>{};
}

}  // namespace evmdk::host
