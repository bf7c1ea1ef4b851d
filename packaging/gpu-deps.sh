#!/usr/bin/env bash
# Gathers what the core needs beyond LibTorch into one prefix folder (default
# .gpu/, ignored by git), for a CUDA machine whose image has LibTorch, CMake
# and a compiler but not these: nlohmann-json and CLI11 (headers and CMake
# configs), libsentencepiece with its trainer and OpenSSL's libcrypto (headers
# and libraries), and GoogleTest (static, with its CMake config) for the tests
# that need a GPU (bench/cuda.sh).
# Taken from this Debian machine (packaging/install-deps.sh installs them);
# the libraries need only glibc and libstdc++, which a newer system has.
# Carry the folder to the GPU machine and point CMAKE_PREFIX_PATH at it
# (packaging/train-on-gpu.sh does).
set -euo pipefail
dest=${1:-.gpu}
lib=/usr/lib/$(gcc -print-multiarch)
rm -rf "$dest"
mkdir -p "$dest/include" "$dest/lib" "$dest/share/cmake"
cp -r /usr/include/nlohmann /usr/include/CLI "$dest/include/"
cp /usr/include/sentencepiece_processor.h /usr/include/sentencepiece_trainer.h "$dest/include/"
# OpenSSL's libcrypto (SHA-256 of model files), should the image lack its headers.
cp -r /usr/include/openssl "$dest/include/"
cp -r /usr/include/$(gcc -print-multiarch)/openssl/* "$dest/include/openssl/"
cp -a "$lib"/libcrypto.so* "$dest/lib/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$dest/share/cmake/"
cp -a "$lib"/libsentencepiece.so* "$lib"/libsentencepiece_train.so* "$dest/lib/"
# GoogleTest where its config expects it (relative to itself, as Debian has it).
mkdir -p "$dest/lib/$(gcc -print-multiarch)/cmake"
cp -r /usr/include/gtest /usr/include/gmock "$dest/include/"
cp -a "$lib"/libgtest*.a "$lib"/libgmock*.a "$dest/lib/$(gcc -print-multiarch)/"
cp -r "$lib/cmake/GTest" "$dest/lib/$(gcc -print-multiarch)/cmake/"
du -sh "$dest"
