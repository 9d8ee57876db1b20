#pragma once
// RAII owner of a libblkid probe, so no error path leaks one.
#include <blkid/blkid.h>

#include <memory>
#include <type_traits>

namespace evmdk {

struct BlkidProbeDeleter {
  void operator()(blkid_probe probe) const noexcept { blkid_free_probe(probe); }
};

// From blkid_new_probe() or blkid_new_probe_from_filename(); may hold nullptr on failure.
using BlkidProbePtr = std::unique_ptr<std::remove_pointer_t<blkid_probe>, BlkidProbeDeleter>;

}  // namespace evmdk
