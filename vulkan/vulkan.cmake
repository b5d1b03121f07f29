# The Vulkan backend: host code in vulkan/*.cpp and GLSL compute shaders in
# vulkan/shaders/, compiled to SPIR-V by glslc at build time and embedded in
# the library. Only the headers are needed to build: the loader
# (libvulkan.so.1) is opened at run time, so the library still runs where it
# is missing. Included from the top-level CMakeLists after kvfit_core exists.
option(KVFIT_VULKAN "Build the Vulkan backend if its headers and glslc are found" ON)
set(KVFIT_WITH_VULKAN OFF)
if(KVFIT_VULKAN)
  find_path(KVFIT_VULKAN_INCLUDE_DIR vulkan/vulkan.h)
  find_program(KVFIT_GLSLC glslc)
  if(NOT KVFIT_VULKAN_INCLUDE_DIR)
    message(STATUS "Vulkan backend: not built (vulkan/vulkan.h not found; install libvulkan-dev)")
  elseif(NOT KVFIT_GLSLC)
    message(STATUS "Vulkan backend: not built (glslc not found; install glslc)")
  else()
    set(KVFIT_WITH_VULKAN ON)
  endif()
else()
  message(STATUS "Vulkan backend: not built (KVFIT_VULKAN=OFF)")
endif()

if(KVFIT_WITH_VULKAN)
  set(vk_dir ${CMAKE_CURRENT_SOURCE_DIR}/vulkan)
  set(vk_out ${CMAKE_CURRENT_BINARY_DIR}/vulkan)
  file(GLOB vk_headers CONFIGURE_DEPENDS ${vk_dir}/shaders/*.glsl)
  # name | source | glslc defines. Variants with subgroup operations or
  # doubles are picked at run time when the device supports them.
  set(vk_variants
    "get_rows|get_rows.comp|"
    "quantize|quantize.comp|"
    "quantize_f64|quantize.comp|-DUSE_FP64"
    "rmsnorm|rmsnorm.comp|"
    "rmsnorm_f64|rmsnorm.comp|-DUSE_FP64"
    "matmul_q|matmul_q.comp|"
    "matmul_q_f64|matmul_q.comp|-DUSE_FP64"
    "matmul_k|matmul_k.comp|"
    "matmul_k_f64|matmul_k.comp|-DUSE_FP64"
    "matmul_f|matmul_f.comp|"
    "matmul_f_sg|matmul_f.comp|-DUSE_SUBGROUP"
    "kv_encode|kv_encode.comp|"
    "kv_encode_f64|kv_encode.comp|-DUSE_FP64"
    "kv_channels|kv_channels.comp|"
    "kv_channels_f64|kv_channels.comp|-DUSE_FP64"
    "attention|attention.comp|"
    "attention_f64|attention.comp|-DUSE_FP64"
    "attention_merge|attention_merge.comp|"
    "attention_merge_f64|attention_merge.comp|-DUSE_FP64"
    "swiglu|swiglu.comp|"
    "swiglu_f64|swiglu.comp|-DUSE_FP64"
    "rope|rope.comp|"
    "rope_f64|rope.comp|-DUSE_FP64"
    "attention_ggml|attention_ggml.comp|"
    "attention_ggml_f64|attention_ggml.comp|-DUSE_FP64"
    "add|add.comp|"
    "scale|scale.comp|"
    "geglu|geglu.comp|"
    "fma_probe|fma_probe.comp|"
    # RWKV-7 (linear-state layers)
    "norm_affine|norm_affine.comp|"
    "norm_affine_f64|norm_affine.comp|-DUSE_FP64"
    "token_shift|token_shift.comp|"
    "activate|activate.comp|"
    "activate_f64|activate.comp|-DUSE_FP64"
    "rwkv7_decay|rwkv7_decay.comp|"
    "rwkv7_decay_f64|rwkv7_decay.comp|-DUSE_FP64"
    "rwkv7_kk|rwkv7_kk.comp|"
    "rwkv7_kk_f64|rwkv7_kk.comp|-DUSE_FP64"
    "wkv7|wkv7.comp|"
    "rwkv7_bonus|rwkv7_bonus.comp|"
    # Gated DeltaNet (qwen35)
    "gdn_pointwise|gdn_pointwise.comp|"
    "gdn_pointwise_f64|gdn_pointwise.comp|-DUSE_FP64"
    "delta_gates|delta_gates.comp|"
    "delta_gates_f64|delta_gates.comp|-DUSE_FP64"
    "l2norm|l2norm.comp|"
    "l2norm_f64|l2norm.comp|-DUSE_FP64"
    "ssm_conv|ssm_conv.comp|"
    "ssm_conv_f64|ssm_conv.comp|-DUSE_FP64"
    "delta_net|delta_net.comp|"
    "delta_net_f64|delta_net.comp|-DUSE_FP64")
  set(vk_spv)
  set(vk_names)
  foreach(v ${vk_variants})
    string(REPLACE "|" ";" parts "${v}")
    list(GET parts 0 name)
    list(GET parts 1 src)
    list(LENGTH parts np)
    set(defs)
    if(np GREATER 2)
      list(GET parts 2 defs)
    endif()
    add_custom_command(OUTPUT ${vk_out}/${name}.spv
      COMMAND ${CMAKE_COMMAND} -E make_directory ${vk_out}
      COMMAND ${KVFIT_GLSLC} --target-env=vulkan1.1 -O ${defs} -o ${vk_out}/${name}.spv ${vk_dir}/shaders/${src}
      DEPENDS ${vk_dir}/shaders/${src} ${vk_headers}
      COMMENT "glslc ${name}" VERBATIM)
    list(APPEND vk_spv ${vk_out}/${name}.spv)
    list(APPEND vk_names ${name})
  endforeach()
  add_custom_command(OUTPUT ${vk_out}/vk_shaders.cpp
    COMMAND ${CMAKE_COMMAND} -DOUT=${vk_out}/vk_shaders.cpp -DDIR=${vk_out} "-DNAMES=${vk_names}"
            -P ${vk_dir}/embed_spirv.cmake
    DEPENDS ${vk_spv} ${vk_dir}/embed_spirv.cmake
    COMMENT "embedding SPIR-V" VERBATIM)
  file(GLOB vk_sources CONFIGURE_DEPENDS ${vk_dir}/*.cpp)
  target_sources(kvfit_core PRIVATE ${vk_sources} ${vk_out}/vk_shaders.cpp)
  target_include_directories(kvfit_core PRIVATE ${KVFIT_VULKAN_INCLUDE_DIR} ${vk_dir})
  target_compile_definitions(kvfit_core PRIVATE KVFIT_WITH_VULKAN=1 VK_NO_PROTOTYPES)
  target_link_libraries(kvfit PRIVATE ${CMAKE_DL_LIBS})
  target_link_libraries(kvfit_static PUBLIC ${CMAKE_DL_LIBS})
  message(STATUS "Vulkan backend: built (glslc: ${KVFIT_GLSLC})")
endif()
