// parse_bind_source: the only accepted rootfs bind sources are {{ mount N }} and
// {{ mount 0 }}/<path inside the upper>; everything else is refused quoting the spec.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "evmdk/error.h"
#include "evmdk/guest/bind_source.h"

namespace evmdk::guest {
namespace {

TEST(BindSource, AcceptsAMountRootOrAPathBelowTheUpper) {
  auto lower = parse_bind_source("{{ mount 1 }}");
  EXPECT_EQ(lower.mount_index, 1u);
  EXPECT_EQ(lower.path, "");
  auto upper = parse_bind_source("{{ mount 0 }}/upper");
  EXPECT_EQ(upper.mount_index, 0u);
  EXPECT_EQ(upper.path, "upper");
  EXPECT_EQ(parse_bind_source("{{ mount 0 }}/./a//b/").path, "a/b");  // normalised
  EXPECT_EQ(parse_bind_source("{{ mount 12 }}").mount_index, 12u);
}

TEST(BindSource, RefusesEverythingElseQuotingIt) {
  for (const std::string& spec : std::vector<std::string>{"", "/etc", "upper", "{{ overlay 1 2 }}", "{{mount 1}}", "{{ mount 1",
                           "{{ mount -1 }}", "{{ mount 1x }}", "{{ mount  }}", "{{ mount 1 }}/etc",
                           "{{ mount 0 }}/../x", "{{ mount 0 }}/a/../../b", "{{ mount 0 }}x",
                           "{{ mount 0 }}/", "{{ mount 0 }}/."}) {
    try {
      parse_bind_source(spec);
      ADD_FAILURE() << "accepted '" << spec << "'";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("'" + spec + "'"), std::string::npos) << error.what();
    }
  }
  try {
    parse_bind_source(std::string("{{ mount 0 }}/a\0b", 17));
    ADD_FAILURE() << "accepted a NUL byte";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("'{{ mount 0 }}/a\\0...': NUL byte"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace evmdk::guest
