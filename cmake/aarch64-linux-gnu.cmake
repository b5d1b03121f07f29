# Cross-compiling for 64-bit ARM Linux on an x86-64 Debian/Ubuntu host, with
# the distribution's cross compiler (g++-aarch64-linux-gnu) and the arm64
# multiarch development packages (libpcre2-dev:arm64, libcmocka-dev:arm64).
# Test programs run through qemu-user, so ctest in the build folder runs them
# as on an ARM machine (tests/cross_aarch64.sh does both):
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#     -DKVFIT_VULKAN=OFF -DKVFIT_CUDA=OFF -DKVFIT_BUILD_SAMPLES=OFF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(KVFIT_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${KVFIT_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${KVFIT_CROSS_TRIPLE}-g++)
# The target's C library lives in /usr/aarch64-linux-gnu, its other libraries
# in the multiarch folder /usr/lib/aarch64-linux-gnu.
#
# The dynamic loader (-L: /lib/ld-linux-aarch64.so.1 from the cross sysroot)
# and libc.so.6 must come from the same glibc build: they share private
# structures (the loader's global state). Without LD_LIBRARY_PATH the loader
# finds libc.so.6 through the host's /etc/ld.so.cache, which lists the arm64
# multiarch folder: that is libc6:arm64 (pulled in by libcmocka-dev:arm64),
# which Debian updates separately from libc6-arm64-cross. With the two
# builds apart, single-threaded programs run, but the first pthread_create
# walks the loader's stack cache at the wrong offset and spins for ever.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${KVFIT_CROSS_TRIPLE}
    -E LD_LIBRARY_PATH=/usr/${KVFIT_CROSS_TRIPLE}/lib)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${KVFIT_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
