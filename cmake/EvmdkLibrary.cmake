# evmdk_add_library(NAME [DEPS...]): the library of one top-level directory, built from every
# DIR/src/*.cpp (so adding a file needs no CMake edit), public headers in DIR/include.
#
# The sources are compiled ONCE, position-independent, into NAME_objects; both the static
# library NAME (what the command, the tests and the benchmarks link) and, with
# EVMDK_SHARED_LIBS, the shared library NAME_shared (libevmdk-<dir>.so with a versioned
# SONAME) are made from those objects. DEPS that are other evmdk_* libraries are linked as
# their static or shared variant to match. Both variants are installed and exported as
# evmdk::<dir>-static and evmdk::<dir> (see cmake/EvmdkInstall.cmake).
function(evmdk_add_library name)
  string(REGEX REPLACE "^evmdk_" "" short ${name})
  set(include_dir ${CMAKE_CURRENT_SOURCE_DIR}/include)
  install(DIRECTORY ${include_dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp)
  if(NOT sources)
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE $<BUILD_INTERFACE:${include_dir}>
                               $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_link_libraries(${name} INTERFACE ${ARGN})
    return()
  endif()

  set(shared_deps)
  foreach(dep ${ARGN})
    if(dep MATCHES "^evmdk_")
      list(APPEND shared_deps ${dep}_shared)
    else()
      list(APPEND shared_deps ${dep})
    endif()
  endforeach()

  add_library(${name}_objects OBJECT ${sources})
  set_target_properties(${name}_objects PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_include_directories(${name}_objects PUBLIC ${include_dir})
  target_link_libraries(${name}_objects PUBLIC ${ARGN})

  add_library(${name} STATIC $<TARGET_OBJECTS:${name}_objects>)
  set_target_properties(${name} PROPERTIES OUTPUT_NAME evmdk-${short} EXPORT_NAME ${short}-static)
  target_include_directories(${name} PUBLIC $<BUILD_INTERFACE:${include_dir}>
                             $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${name} PUBLIC ${ARGN})
  add_library(evmdk::${short}-static ALIAS ${name})
  set_property(GLOBAL APPEND PROPERTY EVMDK_EXPORTED_TARGETS ${name})

  if(EVMDK_SHARED_LIBS)
    add_library(${name}_shared SHARED $<TARGET_OBJECTS:${name}_objects>)
    set_target_properties(${name}_shared PROPERTIES
      OUTPUT_NAME evmdk-${short} EXPORT_NAME ${short}
      VERSION ${PROJECT_VERSION} SOVERSION ${EVMDK_CXX_SOVERSION})
    target_include_directories(${name}_shared PUBLIC $<BUILD_INTERFACE:${include_dir}>
                               $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_link_libraries(${name}_shared PUBLIC ${shared_deps})
    # Every symbol a library uses must be resolved by its own dependencies.
    target_link_options(${name}_shared PRIVATE LINKER:--no-undefined)
    add_library(evmdk::${short} ALIAS ${name}_shared)
    set_property(GLOBAL APPEND PROPERTY EVMDK_EXPORTED_TARGETS ${name}_shared)
  endif()
endfunction()
