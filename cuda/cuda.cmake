# The CUDA backend: kernels in cuda/*.cu, host code in cuda/*.cpp. Built when
# a CUDA compiler is found (KVFIT_CUDA=OFF turns it off); the configure step
# always says whether it is built and why not. The CUDA runtime is linked
# statically: it opens the driver (libcuda.so.1) at the first CUDA call, so
# the library still loads and runs, on the other backends, where there is no
# NVIDIA driver. Included from the top-level CMakeLists after kvfit_core exists.
option(KVFIT_CUDA "Build the CUDA backend if a CUDA compiler is found" ON)
set(KVFIT_WITH_CUDA OFF)
if(NOT KVFIT_CUDA)
  message(STATUS "CUDA backend: not built (KVFIT_CUDA=OFF)")
elseif(KVFIT_SANITIZE)
  message(STATUS "CUDA backend: not built (KVFIT_SANITIZE: the sanitizer flags are not nvcc's)")
else()
  # Architectures: the user's choice (CMAKE_CUDA_ARCHITECTURES or $CUDAARCHS)
  # if given, else the default list below, picked once the compiler is known.
  set(kvfit_cuda_default_archs OFF)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
    set(kvfit_cuda_default_archs ON)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(STATUS "CUDA backend: not built (no CUDA compiler found; put nvcc on PATH or set CMAKE_CUDA_COMPILER)")
  else()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(NOT TARGET CUDA::cudart_static)
      message(STATUS "CUDA backend: not built (the toolkit's static runtime, libcudart_static, was not found)")
    else()
      set(KVFIT_WITH_CUDA ON)
    endif()
  endif()
endif()

if(KVFIT_WITH_CUDA)
  # Desktop GPUs from Turing on and Jetson Orin (sm_87), plus PTX of the
  # newest listed architecture so later GPUs (Blackwell, Jetson Thor) JIT it.
  # CUDA 13 no longer compiles for Volta and Xavier (sm_70/72); older
  # toolkits (JetPack 5's CUDA 11.4 / 12.x) keep Xavier.
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 13.0)
    set(kvfit_archs 75-real 80-real 86-real 87-real 89-real 90-real 90-virtual)
  elseif(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 11.8)
    set(kvfit_archs 72-real 75-real 80-real 86-real 87-real 89-real 90-real 90-virtual)
  else()
    set(kvfit_archs 72-real 75-real 80-real 86-real 87-real 87-virtual)
  endif()

  file(GLOB kvfit_cuda_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/cuda/*.cu
       ${CMAKE_CURRENT_SOURCE_DIR}/cuda/*.cpp)
  add_library(kvfit_cuda OBJECT ${kvfit_cuda_sources})
  target_include_directories(kvfit_cuda PRIVATE
    ${CMAKE_CURRENT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/cuda)
  target_compile_definitions(kvfit_cuda PRIVATE KVFIT_BUILDING_LIBRARY KVFIT_WITH_CUDA=1)
  target_compile_options(kvfit_cuda PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${KVFIT_WARNINGS};-O3>")
  # Usage requirements only (headers); the runtime itself is linked below.
  target_link_libraries(kvfit_cuda PRIVATE CUDA::cudart_static)
  set_target_properties(kvfit_cuda PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
    CUDA_VISIBILITY_PRESET hidden CUDA_RUNTIME_LIBRARY None)
  if(kvfit_cuda_default_archs)
    set_target_properties(kvfit_cuda PROPERTIES CUDA_ARCHITECTURES "${kvfit_archs}")
  endif()
  get_target_property(kvfit_cuda_archs kvfit_cuda CUDA_ARCHITECTURES)
  # The libraries were created before CUDA was enabled, so they did not pick
  # up an architecture list; linking CUDA objects needs one.
  set_target_properties(kvfit kvfit_static PROPERTIES CUDA_ARCHITECTURES "${kvfit_cuda_archs}")

  target_compile_definitions(kvfit_core PRIVATE KVFIT_WITH_CUDA=1)
  target_sources(kvfit PRIVATE $<TARGET_OBJECTS:kvfit_cuda>)
  target_sources(kvfit_static PRIVATE $<TARGET_OBJECTS:kvfit_cuda>)
  target_link_libraries(kvfit PRIVATE CUDA::cudart_static)
  target_link_libraries(kvfit_static PUBLIC CUDA::cudart_static)
  message(STATUS "CUDA backend: built (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${kvfit_cuda_archs})")
endif()
