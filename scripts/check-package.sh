#!/usr/bin/env bash
# Checks erofs-vmdk as a platform team consumes it, from an already configured build dir
# (default build/; scripts/test.sh runs this after the test suite):
#  1. `cmake --install --prefix /usr` into a DESTDIR: the layout (command, shared libraries
#     with their SONAMEs, static libraries, headers, pkg-config, CMake config, man pages,
#     completion); the C API test built with `pkg-config --cflags --libs evmdk` against it.
#  2. every man page passes `man --warnings -l` and documents every long option of its
#     command's --help; the bash completion completes commands and options.
#  3. `cpack -G DEB`: the packages' runtime dependencies (from dpkg-shlibdeps) are checked,
#     installed with `dpkg -i`, the demo runs against /usr/bin/erofs-vmdk, the C API test is
#     built against the installed library with pkg-config and run, and an out-of-tree CMake
#     project links it with find_package(erofs-vmdk). The packages are removed again at the
#     end (EVMDK_KEEP_PACKAGE=1 keeps them).
# Needs root for dpkg and for the C test's mounts (with CI=true a missing one fails).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
work=$build/package-check
rm -rf "$work"
mkdir -p "$work"
fail() { echo "check-package: FAILED: $*" >&2; exit 1; }
step() { echo "== check-package: $*"; }

cmake --build "$build" -j"$(nproc)" --target evmdk_installables
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || fail "no project version in $build/CMakeCache.txt"
abi=${version%.*}  # the C++ libraries' SONAME version: major.minor

# --- 1. staged install --------------------------------------------------------------------
step "cmake --install $build --prefix /usr into a DESTDIR"
stage=$(realpath "$work")/stage
DESTDIR=$stage cmake --install "$build" --prefix /usr >/dev/null
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
for path in bin/erofs-vmdk include/evmdk/evmdk.h include/evmdk/guest/driver.h \
    include/evmdk/host/compose/compose.h include/evmdk/host/hook/hook.h \
    include/evmdk/host/verify/verify.h \
    include/evmdk/storage_spec.h "$libdir/libevmdk.so" "$libdir/pkgconfig/evmdk.pc" \
    "$libdir/pkgconfig/erofs-vmdk.pc" "$libdir/cmake/erofs-vmdk/erofs-vmdk-config.cmake" \
    share/man/man1/erofs-vmdk.1 share/bash-completion/completions/erofs-vmdk \
    share/zsh/vendor-completions/_erofs-vmdk; do
  [ -e "$stage/usr/$path" ] || fail "the install lacks /usr/$path"
done
soname() { objdump -p "$1" | sed -n 's/^ *SONAME *//p'; }
[ "$(soname "$stage/usr/$libdir/libevmdk.so")" = libevmdk.so.0 ] || fail "libevmdk.so: SONAME"
for lib in common vmdk host guest; do
  [ -e "$stage/usr/$libdir/libevmdk-$lib.a" ] || fail "no static libevmdk-$lib.a"
  [ "$(soname "$stage/usr/$libdir/libevmdk-$lib.so")" = "libevmdk-$lib.so.$abi" ] ||
    fail "libevmdk-$lib.so: SONAME is $(soname "$stage/usr/$libdir/libevmdk-$lib.so")"
done
# The C API exports its functions and nothing else.
extra=$(nm -D --defined-only "$stage/usr/$libdir/libevmdk.so" | awk '$2 == "T" && $3 !~ /^evmdk_/')
[ -z "$extra" ] || fail "libevmdk.so exports more than evmdk_*: $extra"

c_test() {  # builds tests/capi/guest_capi_root_test.c with pkg-config into $1
  # shellcheck disable=SC2046
  cc -std=c99 -pedantic -Wall -Wextra -Werror -o "$1" tests/capi/guest_capi_root_test.c \
    $(pkg-config --cflags --libs evmdk)
}
step "C API test built with pkg-config against the DESTDIR"
PKG_CONFIG_PATH=$stage/usr/$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$stage c_test "$work/c-test-staged"
LD_LIBRARY_PATH=$stage/usr/$libdir "$work/c-test-staged" || {
  rc=$?
  [ "$rc" -eq 77 ] || fail "C API test against the DESTDIR (exit $rc)"
}

# --- 2. man pages and completion ----------------------------------------------------------
step "man pages: man --warnings -l, every --help option documented"
cli=$stage/usr/bin/erofs-vmdk
check_page() {  # page, command words...
  local page=$1
  shift
  local warnings
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page"
  [ -z "$warnings" ] || fail "man --warnings -l $page: $warnings"
  local option text
  text=$(sed 's/\\-/-/g' "$page")  # roff writes a minus as \-
  for option in $("$cli" "$@" --help | grep -oE -- '--[a-z][a-z0-9-]+' | sort -u); do
    grep -qE -- "(^|[^a-z-])$option([^a-z-]|$)" <<<"$text" || fail "$page does not document $* $option"
  done
}
pages=$stage/usr/share/man/man1
# Every command the program lists is in erofs-vmdk(1) and is completed by bash.
commands=$("$cli" --help | sed -n '/^Subcommands:/,$p' | awk 'NR > 1 && NF {print $1}')
[ -n "$commands" ] || fail "no commands in erofs-vmdk --help"
check_page "$pages/erofs-vmdk.1"
for group in compose inspect verify hook guest verity; do
  check_page "$pages/erofs-vmdk-$group.1" "$group"
done
check_page "$pages/erofs-vmdk-lint.1" lint
check_page "$pages/erofs-vmdk-lint.1" map
check_page "$pages/erofs-vmdk-hook.1" hook cleanup
for sub in mount teardown status; do check_page "$pages/erofs-vmdk-guest.1" guest "$sub"; done
for sub in format show open check close list; do check_page "$pages/erofs-vmdk-verity.1" verity "$sub"; done

step "bash completion"
complete_words() {  # the completions of the command line "$@" (last word being completed)
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
           COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _erofs_vmdk; printf "%s\n" "${COMPREPLY[@]}"' \
    _ "$stage/usr/share/bash-completion/completions/erofs-vmdk" "$@"
}
for command in $commands; do
  # as ".B compose" or in ".BR lint ", " map"
  grep -qE "^\.B[A-Z]* (.*\" )?$command( |$)" "$pages/erofs-vmdk.1" ||
    fail "erofs-vmdk(1) does not list the command $command"
  grep -qx "$command" <<<"$(complete_words erofs-vmdk '')" || fail "bash completion lacks $command"
done
grep -qx compose <<<"$(complete_words erofs-vmdk com)" || fail "bash completion: 'com' does not give compose"
grep -qx teardown <<<"$(complete_words erofs-vmdk guest te)" || fail "bash completion: guest te"
grep -qx -- --verity <<<"$(complete_words erofs-vmdk compose --ve)" || fail "bash completion: compose --ve"
grep -qx flat <<<"$(complete_words erofs-vmdk compose --mode '')" || fail "bash completion: --mode values"
zsh -n "$stage/usr/share/zsh/vendor-completions/_erofs-vmdk" || fail "zsh completion: syntax"

# --- 3. the Debian packages -----------------------------------------------------------------
step "cpack -G DEB"
(cd "$build" && rm -f ./*.deb && cpack -G DEB >/dev/null)
arch=$(dpkg --print-architecture)
runtime_deb=$build/erofs-vmdk_${version}_$arch.deb
dev_deb=$build/erofs-vmdk-dev_${version}_$arch.deb
[ -f "$runtime_deb" ] && [ -f "$dev_deb" ] || fail "cpack made $(ls "$build"/*.deb)"
depends=$(dpkg-deb -f "$runtime_deb" Depends)
echo "Depends: $depends"
for package in libblkid1 libmount1 liburing2 libcryptsetup12 libfmt9 libssl3 zlib1g libc6 \
    libstdc++6; do
  grep -qE "(^|, )${package//+/\\+}( |,|$)" <<<"$depends" || fail "$runtime_deb does not depend on $package"
done
runtime_files=$(dpkg-deb -c "$runtime_deb")
dev_files=$(dpkg-deb -c "$dev_deb")
for path in /usr/bin/erofs-vmdk "/usr/$libdir/libevmdk.so.0" /usr/share/man/man1/erofs-vmdk.1; do
  grep -qE " \.$path( |$)" <<<"$runtime_files" || fail "no $path in $runtime_deb"
done
for path in /usr/include/evmdk/evmdk.h "/usr/$libdir/pkgconfig/evmdk.pc" "/usr/$libdir/libevmdk-host.a"; do
  grep -qE " \.$path( |$)" <<<"$dev_files" || fail "no $path in $dev_deb"
done

if [ "$(id -u)" -ne 0 ]; then
  [ "${CI:-}" != true ] || fail "CI=true but not root: cannot dpkg -i"
  echo "check-package: not root: the installed-package checks are skipped"
  exit 0
fi
installed=$(dpkg-query -W -f='${Status}' erofs-vmdk 2>/dev/null || true)
if [ -n "$installed" ]; then
  # A leftover (an interrupted run, or EVMDK_KEEP_PACKAGE=1): the checks need this build's.
  echo "check-package: replacing the installed erofs-vmdk ($installed)"
  dpkg --purge erofs-vmdk-dev erofs-vmdk >/dev/null
fi
if [ "${EVMDK_KEEP_PACKAGE:-}" != 1 ]; then
  trap 'dpkg --purge erofs-vmdk-dev erofs-vmdk >/dev/null' EXIT
fi
step "dpkg -i"
dpkg -i "$runtime_deb" "$dev_deb" >/dev/null
[ "$(command -v erofs-vmdk)" = /usr/bin/erofs-vmdk ] || fail "erofs-vmdk is not /usr/bin/erofs-vmdk"
# Every library the installed command and C API need resolves.
for binary in /usr/bin/erofs-vmdk /usr/"$libdir"/libevmdk.so.0; do
  missing=$(ldd "$binary" | grep 'not found' || true)
  [ -z "$missing" ] || fail "$binary: $missing"
done

step "demo against /usr/bin/erofs-vmdk"
EVMDK_CLI=/usr/bin/erofs-vmdk ./scripts/demo.sh "$work/demo" >"$work/demo.log" 2>&1 ||
  { tail -n 30 "$work/demo.log"; fail "demo against the installed binary"; }
tail -n 1 "$work/demo.log"

step "C API test built with pkg-config against the installed library"
c_test "$work/c-test"
used=$(ldd "$work/c-test" | sed -n 's/^[[:space:]]*libevmdk\.so\.0 => \([^ ]*\) .*/\1/p')
[ -n "$used" ] && [ "$(realpath "$used")" = "$(realpath "/usr/$libdir/libevmdk.so.0")" ] ||
  fail "the C test does not use the installed libevmdk.so.0: $(ldd "$work/c-test")"
"$work/c-test" || fail "C API test against the installed library (exit $?)"

step "find_package(erofs-vmdk) from an out-of-tree project"
cmake -S tests/packaging/cmake-consumer -B "$work/consumer" -G Ninja >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/c_consumer"
"$work/consumer/cxx_consumer"
"$work/consumer/cxx_consumer_static" >/dev/null
if grep -q libevmdk <<<"$(ldd "$work/consumer/cxx_consumer_static")"; then
  fail "cxx_consumer_static links a shared libevmdk"
fi
# shellcheck disable=SC2046
c++ -std=c++20 -Wall -Werror -o "$work/cxx-pkg-config" tests/packaging/cmake-consumer/cxx_consumer.cpp \
  $(pkg-config --cflags --libs erofs-vmdk)
"$work/cxx-pkg-config" >/dev/null || fail "the C++ libraries through pkg-config erofs-vmdk"
man -w erofs-vmdk-guest >/dev/null || fail "man cannot find erofs-vmdk-guest(1)"

echo "check-package: all checks passed"
