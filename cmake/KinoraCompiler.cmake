# Compiler launcher and warnings shared by every target.
find_program(KINORA_CCACHE ccache)
if(KINORA_CCACHE)
  # The precompiled torch header needs these sloppiness settings to be cacheable.
  set(_launcher ${CMAKE_COMMAND} -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      ${KINORA_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_launcher})
endif()

add_library(kinora_warnings INTERFACE)
target_compile_options(kinora_warnings INTERFACE
  $<$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>:-Wall -Wextra -Wno-unused-parameter>)
