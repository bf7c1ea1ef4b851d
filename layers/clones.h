#pragma once
// KINORA_CLONES: a function built for several x86-64 levels, the one for the
// CPU at hand picked at load time; KINORA_INLINE: what such a function calls,
// inlined so that it is built for each level too.
//
// Built for the x86-64 levels v4 (AVX-512 with its BW, DQ and VL parts), v3
// (AVX2 with FMA) and plain x86-64, and picked at load time for the CPU at
// hand (GCC; the files using it are compiled so that their loops vectorise:
// see layers/CMakeLists.txt). A clone for AVX-512F alone (no VL: no masked 256-bit
// blends) or AVX2 alone (no FMA) runs these loops at a third of the speed.
// What a clone calls is compiled for its target only where it is inlined:
// KINORA_INLINE where GCC would not.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#if __GNUC__ >= 12
#define KINORA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else  // no x86-64 levels before GCC 12
#define KINORA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#define KINORA_INLINE __attribute__((always_inline)) inline
#else
#define KINORA_CLONES
#define KINORA_INLINE inline
#endif
