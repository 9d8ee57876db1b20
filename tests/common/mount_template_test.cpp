// The one mount-template parser (common/contract/mount_template.h): bounds before anything is
// built, checked numbers, and errors naming the context, the template and the text.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "evmdk/contract/mount_template.h"
#include "evmdk/error.h"

namespace evmdk::contract {
namespace {

using ::testing::HasSubstr;

std::string error_of(std::string_view text, size_t mounts,
                     TemplateSyntax syntax = TemplateSyntax::Lenient) {
  try {
    parse_templates(text, mounts, "mount 3 (type 'overlay') option 'uidmap=x'", syntax);
  } catch (const Error& error) {
    return error.what();
  }
  return "accepted";
}

TEST(MountTemplate, ParsesMountAndOverlayWithLiterals) {
  auto pieces = parse_templates("a={{ mount 2 }}:{{overlay 3  1}}/x", 4, "c");
  ASSERT_EQ(pieces.size(), 5u);
  EXPECT_EQ(pieces[0].literal, "a=");
  EXPECT_EQ(*pieces[1].templ, (MountTemplate{false, 2, 2}));
  EXPECT_EQ(pieces[2].literal, ":");
  EXPECT_EQ(*pieces[3].templ, (MountTemplate{true, 3, 1}));
  EXPECT_EQ(pieces[4].literal, "/x");
  const MountTemplate& down = *pieces[3].templ;
  EXPECT_EQ(down.count(), 3u);
  EXPECT_EQ(down.at(0), 3u);
  EXPECT_EQ(down.at(2), 1u);
  EXPECT_EQ(down.render(), "{{ overlay 3 1 }}");
}

// Issue 13 item 1: 18446744073709551615 + 1 wrapped to 0 and an empty list was dereferenced;
// 4000000000 built a 32 GB index list. Both are now refused by the bound, naming everything.
TEST(MountTemplate, RefusesIndicesPastTheListBeforeBuildingAnything) {
  std::string wrap = error_of("uidmap={{ overlay 18446744073709551615 0 }}", 3);
  EXPECT_THAT(wrap, HasSubstr("mount 3 (type 'overlay') option 'uidmap=x': template "
                              "'{{ overlay 18446744073709551615 0 }}'"));
  EXPECT_THAT(wrap, HasSubstr("refers to mount 18446744073709551615, which does not exist (the list has 3 mounts, 0..2)"));
  EXPECT_THAT(error_of("{{ overlay 0 4000000000 }}", 3), HasSubstr("refers to mount 4000000000, which does not exist"));
  EXPECT_THAT(error_of("{{ mount 3 }}", 3), HasSubstr("refers to mount 3, which does not exist"));
  EXPECT_THAT(error_of("{{ mount 0 }}", 0), HasSubstr("the list is empty"));
  // Past 64 bits, signs, hex: not numbers at all.
  EXPECT_THAT(error_of("{{ mount 18446744073709551616 }}", 3),
              HasSubstr("'18446744073709551616' is not a number (a mount index)"));
  EXPECT_THAT(error_of("{{ mount -1 }}", 3), HasSubstr("'-1' is not a number"));
  EXPECT_THAT(error_of("{{ mount 0x1 }}", 3), HasSubstr("'0x1' is not a number"));
}

TEST(MountTemplate, RefusesUnknownAndUnterminatedTemplatesQuotingTheText) {
  EXPECT_THAT(error_of("x={{ env HOME }}", 3),
              HasSubstr("template '{{ env HOME }}' in 'x={{ env HOME }}': unknown template"));
  EXPECT_THAT(error_of("{{ mount 1 ", 3), HasSubstr("unterminated template"));
  EXPECT_THAT(error_of("{{ mount 1 2 }}", 3), HasSubstr("unknown template"));
  EXPECT_THAT(error_of("{{}}", 3), HasSubstr("unknown template"));
  EXPECT_THAT(error_of("{{ overlay 1 2 3 4 5 }}", 9), HasSubstr("unknown template"));
}

TEST(MountTemplate, CanonicalSyntaxIsExactlyWhatTheHostEmits) {
  EXPECT_EQ(error_of("{{ mount 1 }}/{{ overlay 1 2 }}", 3, TemplateSyntax::Canonical), "accepted");
  for (auto text : {"{{mount 1}}", "{{ mount  1 }}", "{{  mount 1 }}", "{{ mount 1  }}"}) {
    EXPECT_THAT(error_of(text, 3, TemplateSyntax::Canonical), HasSubstr("unknown template")) << text;
  }
}

TEST(MountTemplate, LeadingMountTakesExactlyOneMountTemplate) {
  auto lead = parse_leading_mount("{{ mount 2 }}/var/lib:0755", 3, "c");
  EXPECT_EQ(lead.index, 2u);
  EXPECT_EQ(lead.rest, "/var/lib:0755");
  auto message = [](std::string_view text) {
    try {
      parse_leading_mount(text, 3, "mkdir directive");
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  EXPECT_THAT(message("/host/{{ mount 1 }}"),
              HasSubstr("mkdir directive: '/host/{{ mount 1 }}': not a '{{ mount N }}' template"));
  EXPECT_THAT(message("{{ overlay 1 2 }}"), HasSubstr("an overlay range is not a '{{ mount N }}' template"));
  EXPECT_THAT(message("{{ mount 1 }}/{{ mount 2 }}"), HasSubstr("only one template"));
  EXPECT_THAT(message("{{ mount 18446744073709551615 }}/x"), HasSubstr("does not exist"));
}

}  // namespace
}  // namespace evmdk::contract
