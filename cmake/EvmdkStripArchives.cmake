# CPACK_PRE_BUILD_SCRIPTS: CPACK_STRIP_FILES strips executables and shared libraries only; the
# static libraries of the -dev package lose their debug info here, before packaging.
file(GLOB_RECURSE archives "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*.a")
foreach(archive ${archives})
  execute_process(COMMAND strip --strip-debug ${archive} COMMAND_ERROR_IS_FATAL ANY)
endforeach()
