#include <gtest/gtest.h>

#include "base/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  kinora::configure_threads();
  return RUN_ALL_TESTS();
}
