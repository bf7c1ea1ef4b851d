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

# -Wshadow: a name that hides another is how a loop ends up reading the wrong
# variable. KINORA_WERROR (CI turns it on) makes every warning an error; the
# LibTorch, Qt and FFmpeg headers are system headers and do not warn.
option(KINORA_WERROR "Treat compiler warnings as errors" OFF)
add_library(kinora_warnings INTERFACE)
target_compile_options(kinora_warnings INTERFACE
  $<$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>:-Wall -Wextra -Wshadow -Wno-unused-parameter>
  $<$<AND:$<BOOL:${KINORA_WERROR}>,$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>>:-Werror>)
