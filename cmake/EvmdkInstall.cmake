# Install layout (GNUInstallDirs), find_package(erofs-vmdk), pkg-config, man pages, shell
# completion, and the Debian packages. Components: "runtime" (the command, the shared
# libraries, man pages, completion) and "dev" (headers, static libraries, .pc, CMake config).
include(CMakePackageConfigHelpers)

get_property(evmdk_exported GLOBAL PROPERTY EVMDK_EXPORTED_TARGETS)
# `cmake --install` and cpack install what is built; `evmdk_installables` builds exactly that
# (not the tests or benchmarks, which `all` includes).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
add_custom_target(evmdk_installables DEPENDS erofs-vmdk ${evmdk_exported})
install(TARGETS ${evmdk_exported} EXPORT erofs-vmdk-targets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

set(evmdk_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/erofs-vmdk)
install(EXPORT erofs-vmdk-targets NAMESPACE evmdk:: DESTINATION ${evmdk_cmake_dir}
        COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/erofs-vmdk-config.cmake.in
  ${PROJECT_BINARY_DIR}/erofs-vmdk-config.cmake INSTALL_DESTINATION ${evmdk_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/erofs-vmdk-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/erofs-vmdk-config.cmake
              ${PROJECT_BINARY_DIR}/erofs-vmdk-config-version.cmake
        DESTINATION ${evmdk_cmake_dir} COMPONENT dev)

# pkg-config: "evmdk" (the C API) and "erofs-vmdk" (the C++ libraries). The prefix is the one
# given at install time (`cmake --install build --prefix /usr`), not the configured one, so
# the files are filled in twice: everything else now, the prefix when installing.
set(EVMDK_PC_PREFIX "@EVMDK_PC_PREFIX@")
foreach(pc evmdk erofs-vmdk)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc.in
                 @ONLY)
  install(CODE "
    set(EVMDK_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc.in\"
                   \"${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc\" @ONLY)" COMPONENT dev)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endforeach()

file(GLOB evmdk_man_pages CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/man/*.1)
install(FILES ${evmdk_man_pages} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT runtime)
install(FILES ${PROJECT_SOURCE_DIR}/completion/erofs-vmdk.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions
        RENAME erofs-vmdk COMPONENT runtime)
install(FILES ${PROJECT_SOURCE_DIR}/completion/_erofs-vmdk
        DESTINATION ${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions COMPONENT runtime)

# cpack -G DEB: erofs-vmdk_<version>_<arch>.deb (runtime) and erofs-vmdk-dev_... (dev). The
# runtime dependencies come from dpkg-shlibdeps on the installed binaries and libraries.
set(CPACK_PACKAGE_NAME erofs-vmdk)
set(CPACK_PACKAGE_VENDOR "erofs-vmdk")
set(CPACK_PACKAGE_CONTACT "erofs-vmdk maintainers <erofs-vmdk@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "compose containerd EROFS layers into one read-only VMDK disk, mount them in the guest")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Debian ships binaries without debug info (RelWithDebInfo builds carry ~150 MiB of it).
set(CPACK_STRIP_FILES ON)
set(CPACK_PRE_BUILD_SCRIPTS ${PROJECT_SOURCE_DIR}/cmake/EvmdkStripArchives.cmake)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME erofs-vmdk)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION admin)
# What the command runs, besides what it links.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_RECOMMENDS "erofs-utils, qemu-utils")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME erofs-vmdk-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The C++ headers include fmt and nlohmann/json; the static libraries need the -dev libraries.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "erofs-vmdk (= ${PROJECT_VERSION}), libfmt-dev, nlohmann-json3-dev, libblkid-dev, libmount-dev, liburing-dev, libcryptsetup-dev, libssl-dev, zlib1g-dev")
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION "the erofs-vmdk command and its shared libraries")
set(CPACK_COMPONENT_DEV_DESCRIPTION "erofs-vmdk headers, static libraries, pkg-config and CMake files")
# dpkg-shlibdeps must find our own libraries for the command's and the C API's dependencies.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
include(CPack)
