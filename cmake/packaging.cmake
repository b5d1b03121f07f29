# `make package` (CPack): a Debian package of what `make install` installs
# (the shared library with its SONAME links, kvfit.h, kvfit.pc and the CMake
# package), built for /usr. Included at the end of the top-level CMakeLists.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kvfit)
set(CPACK_PACKAGE_VENDOR kvfit)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Embeddable LLM inference runtime with fixed-budget KV sessions")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "kvfit maintainers <kvfit@localhost>" CACHE STRING "Maintainer field of the Debian package")
# A shlibs file and the ldconfig trigger, so the loader sees libkvfit.so.0
# right after `dpkg -i`.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
# Dependencies from the library's own ELF needs when dpkg-shlibdeps (dpkg-dev)
# is there, else the known list: the CUDA runtime is linked statically and the
# Vulkan loader is opened at run time, so neither is a dependency.
find_program(KVFIT_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(KVFIT_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6, libstdc++6, libgcc-s1, libpcre2-8-0")
endif()
include(CPack)
