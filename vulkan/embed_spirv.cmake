# Writes OUT, a C++ file holding every DIR/<name>.spv of NAMES as 32-bit words
# and a table to find them by name (run with cmake -P at build time).
set(body "// Generated from vulkan/shaders by vulkan/embed_spirv.cmake; do not edit.\n#include \"vk_shaders.h\"\n\nnamespace kvfit::vk {\nnamespace {\n")
set(table "")
foreach(name ${NAMES})
  file(READ ${DIR}/${name}.spv hex HEX)
  # SPIR-V is little-endian words: bytes b0 b1 b2 b3 -> 0xb3b2b1b0
  string(REGEX REPLACE "(..)(..)(..)(..)" "0x\\4\\3\\2\\1u," words "${hex}")
  string(LENGTH "${hex}" nhex)
  math(EXPR nwords "${nhex} / 8")
  set(body "${body}const uint32_t k_${name}[] = {${words}};\n")
  set(table "${table}    {\"${name}\", k_${name}, ${nwords}},\n")
endforeach()
set(body "${body}}  // namespace\n\nconst ShaderCode kShaders[] = {\n${table}    {nullptr, nullptr, 0},\n};\n\n}  // namespace kvfit::vk\n")
file(WRITE ${OUT}.tmp "${body}")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.tmp ${OUT})
