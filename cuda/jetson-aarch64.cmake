# Toolchain file: cross-build kvfit with its CUDA backend for NVIDIA Jetson
# (aarch64 Linux) on an x86-64 host. Needs
#   - the aarch64 GNU toolchain (g++-aarch64-linux-gnu),
#   - JetPack's CUDA for the host plus its aarch64 target files (the
#     cuda-cross-aarch64 package of the same CUDA version as the board's
#     JetPack), which put the target libraries under
#     <cuda>/targets/aarch64-linux,
#   - a copy of the board's root filesystem (libpcre2-dev installed on the
#     board first) as the sysroot, for the libraries kvfit links.
#
#   cmake -S . -B build-jetson -DCMAKE_TOOLCHAIN_FILE=cuda/jetson-aarch64.cmake \
#         -DKVFIT_JETSON_SYSROOT=/path/to/jetson-rootfs -DCMAKE_CUDA_ARCHITECTURES=87
#   cmake --build build-jetson -j
#
# Architectures: 87 for Orin (JetPack 6, CUDA 12.x), 72 for Xavier (JetPack 5,
# CUDA 11.4 or 12.2 only: CUDA 13 dropped it), 110 for Thor (JetPack 7, CUDA 13).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(KVFIT_JETSON_TRIPLE aarch64-linux-gnu CACHE STRING "Prefix of the aarch64 cross compilers")
set(CMAKE_C_COMPILER ${KVFIT_JETSON_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${KVFIT_JETSON_TRIPLE}-g++)
set(CMAKE_CUDA_HOST_COMPILER ${KVFIT_JETSON_TRIPLE}-g++)
if(NOT DEFINED CMAKE_CUDA_COMPILER)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
  set(CMAKE_CUDA_ARCHITECTURES 87)
endif()

set(KVFIT_JETSON_SYSROOT "" CACHE PATH "Root filesystem of the Jetson (for libpcre2 and friends)")
if(KVFIT_JETSON_SYSROOT)
  set(CMAKE_SYSROOT ${KVFIT_JETSON_SYSROOT})
  # pkg-config must read the board's .pc files and prefix their paths with the sysroot.
  set(ENV{PKG_CONFIG_SYSROOT_DIR} ${KVFIT_JETSON_SYSROOT})
  set(ENV{PKG_CONFIG_LIBDIR}
      "${KVFIT_JETSON_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${KVFIT_JETSON_SYSROOT}/usr/share/pkgconfig")
endif()
# The CUDA target files (headers and libcudart_static for aarch64).
get_filename_component(kvfit_cuda_root ${CMAKE_CUDA_COMPILER} DIRECTORY)
get_filename_component(kvfit_cuda_root ${kvfit_cuda_root} DIRECTORY)
list(APPEND CMAKE_FIND_ROOT_PATH ${kvfit_cuda_root}/targets/aarch64-linux)
set(CUDAToolkit_ROOT ${kvfit_cuda_root})

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
