# Compiles shaders/*.comp to SPIR-V (one file per declared variant) and
# generates one C file that embeds them all as a table (see runtime/shader_table.h).
function(vkl_compile_shaders SRC_DIR OUT_DIR OUT_C_VAR)
  file(GLOB SHADER_SRC CONFIGURE_DEPENDS ${SRC_DIR}/*.comp)
  file(GLOB SHADER_INC CONFIGURE_DEPENDS ${SRC_DIR}/*.glsl)
  file(MAKE_DIRECTORY ${OUT_DIR})
  set(SPV_FILES "")
  set(SPV_NAMES "")
  foreach(src ${SHADER_SRC})
    get_filename_component(base ${src} NAME_WE)
    file(STRINGS ${src} variant_lines REGEX "^// @variant ")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
    if(NOT variant_lines)
      set(variant_lines "// @variant ${base}")
    endif()
    foreach(line ${variant_lines})
      string(REGEX REPLACE "^// @variant +" "" spec "${line}")
      string(STRIP "${spec}" spec)
      separate_arguments(parts UNIX_COMMAND "${spec}")
      list(GET parts 0 vname)
      list(REMOVE_AT parts 0)
      set(defs "")
      foreach(d ${parts})
        list(APPEND defs "-D${d}")
      endforeach()
      set(spv ${OUT_DIR}/${vname}.spv)
      add_custom_command(OUTPUT ${spv}
        COMMAND ${GLSLC} -fshader-stage=compute --target-env=vulkan1.1 -O -I${SRC_DIR} ${defs} -o ${spv} ${src}
        DEPENDS ${src} ${SHADER_INC}
        COMMENT "glslc ${vname}")
      list(APPEND SPV_FILES ${spv})
      list(APPEND SPV_NAMES ${vname})
    endforeach()
  endforeach()
  set(OUT_C ${OUT_DIR}/shader_table.c)
  string(REPLACE ";" "," SPV_NAMES_CSV "${SPV_NAMES}")
  add_custom_command(OUTPUT ${OUT_C}
    COMMAND ${CMAKE_COMMAND} -DOUT=${OUT_C} -DNAMES=${SPV_NAMES_CSV} -DDIR=${OUT_DIR}
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
    DEPENDS ${SPV_FILES} ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
    COMMENT "embedding SPIR-V")
  set(${OUT_C_VAR} ${OUT_C} PARENT_SCOPE)
endfunction()
