#include <gtest/gtest.h>

#include <cstdlib>

#include "base/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Hashes of the tests' model files are remembered in the build folder, for
  // the programs the tests run too (base/hash_cache.h).
  ::setenv("KINORA_CACHE_DIR", KINORA_TEST_CACHE_DIR, 0);
  // One thread, in these tests and the programs they run, unless the
  // environment says otherwise: the default follows the cores idle at each
  // render, and another count sums products in another order, so two renders
  // that must give the same pixels could differ under the suite's own load.
  ::setenv("KINORA_THREADS", "1", 0);
  kinora::configure_threads();
  return RUN_ALL_TESTS();
}
