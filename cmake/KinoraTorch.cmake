# LibTorch: Debian's libtorch-dev (CPU) by default; a CUDA LibTorch when
# CMAKE_PREFIX_PATH points to one and KINORA_CUDA is ON.
if(KINORA_CUDA)
  # Ampere, Ada and Hopper (bf16 units); CMAKE_CUDA_ARCHITECTURES=native builds
  # for the GPUs of this machine only.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 86 89 90)
  endif()
  # The shared CUDA runtime, as LibTorch links it: one runtime in the process.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  add_compile_definitions(KINORA_CUDA=1)
endif()
find_package(Torch REQUIRED)
message(STATUS "Kinora: LibTorch ${Torch_VERSION} (CUDA ${KINORA_CUDA})")

# torch/torch.h dominates compile time, so it is precompiled once in this object
# library and every torch-using target reuses that header (kinora_module below).
# All of them must then share compile flags, which kinora_module arranges.
file(WRITE ${CMAKE_BINARY_DIR}/kinora_pch.cpp "// precompiled header carrier\n")
add_library(kinora_pch OBJECT ${CMAKE_BINARY_DIR}/kinora_pch.cpp)
target_link_libraries(kinora_pch PUBLIC ${TORCH_LIBRARIES} kinora_warnings)
target_compile_options(kinora_pch PUBLIC ${TORCH_CXX_FLAGS})
target_precompile_headers(kinora_pch PRIVATE <torch/torch.h> <string> <vector> <map>
                          <memory> <filesystem> <optional> <functional>)

# kinora_module(NAME SOURCES... [LINK deps...] [PRIVATE deps...])
#   one module = one folder = one target; the folder's parent is the include root,
#   so code includes "io/safetensors.h", "schedulers/scheduler.h"...
function(kinora_setup_target target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES} kinora_warnings)
  target_compile_options(${target} PUBLIC ${TORCH_CXX_FLAGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated)
  target_precompile_headers(${target} REUSE_FROM kinora_pch)
endfunction()

# LINK: modules its public headers use (its users need them too); PRIVATE:
# those only its sources use.
function(kinora_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LINK;PRIVATE" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  kinora_setup_target(${name})
  if(ARG_LINK)
    target_link_libraries(${name} PUBLIC ${ARG_LINK})
  endif()
  if(ARG_PRIVATE)
    target_link_libraries(${name} PRIVATE ${ARG_PRIVATE})
  endif()
endfunction()
