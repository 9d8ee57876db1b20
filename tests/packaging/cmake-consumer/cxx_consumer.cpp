// Links the C++ libraries through find_package(erofs-vmdk): parses a compose mode and a
// storage list with the installed headers and shared libraries.
#include <evmdk/guest/driver.h>
#include <evmdk/host/compose/compose.h>
#include <evmdk/storage_spec.h>

#include <cstdio>

int main() {
  auto mode = evmdk::host::parse_compose_mode("gpt");
  auto storages = evmdk::storages_from_json(nlohmann::json::parse(
      R"([{"driver": "blk", "source": "serial:S", "fstype": "erofs", "options": ["ro"]}])"));
  std::printf("mode %s, %zu storage(s), guest base %s\n", evmdk::host::to_string(mode).c_str(),
              storages.size(), evmdk::guest::kDefaultBaseDir);
  return mode == evmdk::host::ComposeMode::Gpt && storages.size() == 1 ? 0 : 1;
}
