#include <gtest/gtest.h>

#include <cstdlib>

#include "base/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Hashes of the tests' model files are remembered in the build folder, for
  // the programs the tests run too (base/hash_cache.h).
  ::setenv("KINORA_CACHE_DIR", KINORA_TEST_CACHE_DIR, 0);
  kinora::configure_threads();
  return RUN_ALL_TESTS();
}
