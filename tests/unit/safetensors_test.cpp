#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <random>

#include "io/safetensors.h"
#include "test_util.h"

using kinora::io::DType;
using kinora::io::SafetensorsFile;
using kinora::io::save_safetensors;
using kinora::test::error_of;
using kinora::test::TempDir;
using kinora::test::write_raw;
using ::testing::HasSubstr;

TEST(Safetensors, RoundTripsEveryTorchDtypeAndMetadata) {
  TempDir dir;
  const auto base = torch::arange(24, torch::kFloat64).reshape({2, 3, 4}) - 7;
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  for (auto t : {torch::kFloat64, torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kInt64,
                 torch::kInt32, torch::kInt16, torch::kInt8})
    ts.emplace_back(std::string("t_") + c10::toString(t), base.to(t));
  ts.emplace_back("u8", (base + 7).to(torch::kUInt8));
  ts.emplace_back("flag", base > 0);
  ts.emplace_back("scalar", torch::scalar_tensor(3.5));
  ts.emplace_back("empty", torch::empty({0, 5}));
  ts.emplace_back("strided", base.transpose(0, 2));  // non-contiguous input
  save_safetensors(dir / "a.safetensors", ts, {{"format", "pt"}, {"config", "{\"dim\": 4}"}});

  const auto f = SafetensorsFile::open(dir / "a.safetensors");
  EXPECT_EQ(f->tensors().size(), ts.size());
  EXPECT_EQ(f->metadata().at("config"), "{\"dim\": 4}");
  for (const auto& [name, t] : ts) {
    const auto got = f->get(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(got, t.contiguous())) << name;
  }
  // Directory holds only the finished file: the temporary name is gone.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(Safetensors, ViewsAreZeroCopyAndKeepTheMappingAlive) {
  TempDir dir;
  const auto w = torch::randn({64, 32});
  save_safetensors(dir / "w.safetensors", {{"w", w}, {"b", torch::ones({3}, torch::kFloat16)}});
  torch::Tensor view;
  {
    const auto f = SafetensorsFile::open(dir / "w.safetensors");
    ASSERT_TRUE(f->is_zero_copy("w"));
    view = f->get("w");
    const auto raw = f->raw("w");
    EXPECT_EQ(view.data_ptr(), raw.data_ptr());  // the same bytes, no copy
  }  // the file object is gone; the view still owns the mapping
  std::filesystem::remove(dir / "w.safetensors");
  EXPECT_TRUE(torch::equal(view, w));
  view.add_(1);  // private mapping: writable, and never written back
  EXPECT_TRUE(torch::equal(view, w + 1));
}

// A weight file shortened on disk while mapped: reading what it no longer has
// ends the process with a message naming the file, not a bare SIGBUS.
TEST(SafetensorsDeathTest, AFileShortenedWhileMappedIsNamedWhenRead) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer reports SIGBUS itself";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "AddressSanitizer reports SIGBUS itself";
#endif
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  const auto path = dir / "shrinking.safetensors";
  save_safetensors(path, {{"w", torch::ones({1 << 20})}});  // 4 MiB
  EXPECT_EXIT(
      {
        const auto f = SafetensorsFile::open(path);
        const auto w = f->get("w");
        std::filesystem::resize_file(path, 4096);
        // This process (the "threadsafe" style's child, which ran the test
        // from its start and made a folder of its own) dies here: the folder
        // goes first (the mapping keeps the shortened file's pages).
        std::filesystem::remove_all(dir.path());
        std::printf("%f\n", w.sum().item<float>());
      },
      ::testing::ExitedWithCode(128 + SIGBUS),
      "shrinking.safetensors: could not be read while in use");
  // Other SIGBUS faults keep their default action.
  EXPECT_EXIT(
      {
        std::filesystem::remove_all(dir.path());  // this run of the test dies too
        std::raise(SIGBUS);
      },
      ::testing::KilledBySignal(SIGBUS), "");
}

TEST(Safetensors, UnalignedDataIsCopiedAndStillCorrect) {
  TempDir dir;
  // One U8 tensor of 1 byte first, so the F32 tensor starts at an odd offset.
  float vals[3] = {1.5f, -2.0f, 1e-3f};
  std::string data(1, '\x07');
  data.append(reinterpret_cast<const char*>(vals), sizeof vals);
  const std::string json =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"f":{"dtype":"F32","shape":[3],"data_offsets":[1,13]}})";
  std::string padded = json;
  while ((8 + padded.size()) % 8) padded += ' ';
  write_raw(dir / "u.safetensors", padded, data);
  const auto f = SafetensorsFile::open(dir / "u.safetensors");
  EXPECT_FALSE(f->is_zero_copy("f"));
  const auto t = f->get("f");
  EXPECT_FLOAT_EQ(t[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(t[2].item<float>(), 1e-3f);
}

TEST(Safetensors, Fp8IsWidenedExactly) {
  TempDir dir;
  // E4M3 (fn): 0x38 = 1, 0x7E = 448 (max), 0xFE = −448, 0x01 = 2^-9 (min subnormal), 0x7F = NaN.
  // E5M2: 0x3C = 1, 0x7B = 57344 (max), 0x7C = inf, 0x01 = 2^-16.
  const std::string data("\x38\x7E\xFE\x01\x7F\x00\x3C\x7B\x7C\x01", 10);
  std::string json =
      R"({"e4":{"dtype":"F8_E4M3","shape":[6],"data_offsets":[0,6]},"e5":{"dtype":"F8_E5M2","shape":[2,2],"data_offsets":[6,10]}})";
  write_raw(dir / "f8.safetensors", json, data);
  const auto f = SafetensorsFile::open(dir / "f8.safetensors");
  const auto e4 = f->get("e4").to(torch::kFloat32);
  EXPECT_EQ(f->get("e4").scalar_type(), torch::kBFloat16);
  EXPECT_EQ(e4[0].item<float>(), 1.0f);
  EXPECT_EQ(e4[1].item<float>(), 448.0f);
  EXPECT_EQ(e4[2].item<float>(), -448.0f);
  EXPECT_EQ(e4[3].item<float>(), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(e4[4].item<float>()));
  EXPECT_EQ(e4[5].item<float>(), 0.0f);
  const auto e5 = f->get("e5").to(torch::kFloat32).reshape({-1});
  EXPECT_EQ(f->get("e5").sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(e5[0].item<float>(), 1.0f);
  EXPECT_EQ(e5[1].item<float>(), 57344.0f);
  EXPECT_TRUE(std::isinf(e5[2].item<float>()));
  EXPECT_EQ(e5[3].item<float>(), std::ldexp(1.0f, -16));
  // Widening to float32 per layer from the raw bytes gives the same numbers.
  const auto wide = kinora::io::widen_fp8(f->raw("e4"), DType::F8_E4M3, torch::kFloat32);
  EXPECT_TRUE(torch::allclose(wide.slice(0, 0, 4), e4.slice(0, 0, 4)));
}

// ---------------------------------------------------------------- malformed files

struct Malformed {
  const char* name;
  std::string json;
  std::string data;
  int64_t header_len;  // −1: the JSON's own length
  const char* expected;
};

// gtest prints a parameter with this (else as its raw bytes).
void PrintTo(const Malformed& m, std::ostream* os) {
  *os << m.name << " (expects \"" << m.expected << "\")";
}

class MalformedFile : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedFile, IsRefusedWithTheFileNameAndTheReason) {
  TempDir dir;
  const auto& m = GetParam();
  const auto path = dir / (std::string(m.name) + ".safetensors");
  write_raw(path, m.json, m.data, m.header_len);
  const std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_THAT(msg, HasSubstr(path.string()));
  EXPECT_THAT(msg, HasSubstr(m.expected));
}

const std::string kF32x2 = std::string(8, '\0');
const std::string kOne = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

INSTANTIATE_TEST_SUITE_P(
    Safetensors, MalformedFile,
    ::testing::Values(
        Malformed{"header_past_end", kOne, kF32x2, 4096, "runs past the end of the file"},
        Malformed{"gigabyte_header", kOne, kF32x2, int64_t{3} << 30, "exceeds the 100 MiB limit"},
        Malformed{"invalid_json", R"({"a":{"dtype":"F32",)", "", -1, "(header): not valid JSON"},
        Malformed{"non_object_json", "[1, 2, 3]", "", -1, "header is not a JSON object"},
        Malformed{"entry_not_object", R"({"a": 5})", "", -1, "entry is not a JSON object"},
        Malformed{"outside_data", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                  kF32x2, -1, "lie outside the data section"},
        Malformed{"truncated_data", kOne, std::string(5, '\0'), -1,
                  "lie outside the data section of 5 bytes"},
        Malformed{
            "overlapping",
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            kF32x2, -1, "overlap"},
        Malformed{"out_of_order", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})",
                  kF32x2, -1, "out of order"},
        Malformed{"size_mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                  kF32x2, -1, "is 12 bytes, but data_offsets span 8"},
        Malformed{"unknown_dtype", R"({"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})",
                  kF32x2, -1, "unknown dtype 'F12'"},
        Malformed{"negative_dim", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                  kF32x2, -1, "negative dimension -2"},
        Malformed{"absurd_dim",
                  R"({"a":{"dtype":"F32","shape":[99999999999999],"data_offsets":[0,8]}})", kF32x2,
                  -1, "absurd dimension"},
        Malformed{
            "overflowing_shape",
            R"({"a":{"dtype":"F64","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})",
            kF32x2, -1, "overflows"},
        Malformed{"float_dim", R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})",
                  kF32x2, -1, "non-integer"},
        Malformed{"hole", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", kF32x2, -1,
                  "belong to no tensor"},
        Malformed{"trailing_bytes", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                  kF32x2, -1, "after the last tensor"},
        Malformed{"bad_offsets", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kF32x2,
                  -1, "data_offsets"},
        Malformed{"bad_metadata", R"({"__metadata__":{"k":3}})", "", -1, "is not a string"}),
    [](const auto& test_param) { return std::string(test_param.param.name); });

TEST(Safetensors, TooShortAndMissingFilesAreRefused) {
  TempDir dir;
  std::ofstream(dir / "short.safetensors") << "abc";
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "short.safetensors"); }),
              HasSubstr("truncated: 3 bytes"));
  std::ofstream(dir / "empty.safetensors");
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "empty.safetensors"); }),
              HasSubstr("truncated: 0 bytes"));
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "none.safetensors"); }),
              HasSubstr("cannot open"));
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir.path()); }),
              HasSubstr("not a regular file"));
}

TEST(Safetensors, ForeignFilesAreRefused) {
  TempDir dir;
  // A PyTorch .pth is a zip ("PK\3\4…"), an old .ckpt a bare pickle: named
  // as what they are.
  std::ofstream(dir / "model.pth", std::ios::binary)
      << std::string("PK\x03\x04\x14\x00\x00\x00\x08\x00", 10) << std::string(200, 'x');
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "model.pth"); }),
              HasSubstr("a PyTorch zip archive"));
  std::ofstream(dir / "old.safetensors", std::ios::binary)
      << std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20", 10) << std::string(200, 'x');
  const auto pickle = error_of([&] { SafetensorsFile::open(dir / "old.safetensors"); });
  EXPECT_THAT(pickle, HasSubstr("old.safetensors: a Python pickle"));
  EXPECT_THAT(pickle, HasSubstr("safetensors only"));
  // A GGUF (magic "GGUF", version 3), as sd.cpp and ComfyUI-GGUF users have them.
  std::ofstream(dir / "wan.gguf", std::ios::binary)
      << std::string("GGUF\x03\x00\x00\x00", 8) << std::string(200, '\0');
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "wan.gguf"); }),
              HasSubstr("wan.gguf: a GGUF file"));
  // A render given where a model goes: named as the picture or video it is.
  std::ofstream(dir / "out.png", std::ios::binary)
      << std::string("\x89PNG\r\n\x1a\n", 8) << std::string(200, '\0');
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "out.png"); }),
              HasSubstr("out.png: a PNG image, not a safetensors model file"));
  std::ofstream(dir / "out.mp4", std::ios::binary) << std::string(
                                                          "\0\0\0\x20"
                                                          "ftypisom",
                                                          12)
                                                   << std::string(200, '\0');
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "out.mp4"); }),
              HasSubstr("out.mp4: an MP4 or MOV video"));
  // Other bytes: the header length's bound.
  std::ofstream(dir / "noise.safetensors", std::ios::binary)
      << std::string("\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f", 8) << std::string(200, 'x');
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(dir / "noise.safetensors"); }),
              HasSubstr("limit"));
  // A safetensors file whose header length starts like a pickle (1408 bytes:
  // 0x80 0x05) is read as the safetensors file it is.
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.resize(0x580, ' ');  // the format allows trailing spaces
  kinora::test::write_raw(dir / "padded.safetensors", header, std::string(8, '\0'));
  const auto padded = SafetensorsFile::open(dir / "padded.safetensors");
  EXPECT_EQ(padded->tensors().size(), 1u);
  EXPECT_EQ(padded->get("a").numel(), 2);
}

// Cutting or corrupting a real checkpoint anywhere gives an Error, never a crash.
TEST(Safetensors, CorruptedCopiesOfARealFileNeverCrash) {
  TempDir dir;
  std::ifstream in(kinora::test::fixture("t5_enc_tiny.safetensors"), std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), {});
  uint64_t header = 0;
  std::memcpy(&header, good.data(), 8);
  std::mt19937 rng(1234);
  const auto path = dir / "bad.safetensors";
  int refused = 0;
  for (int i = 0; i < 300; ++i) {
    std::string bytes = good;
    if (i % 2 == 0) {
      bytes.resize(std::uniform_int_distribution<std::size_t>(0, bytes.size() - 1)(rng));
    } else {  // flip bytes inside the header
      for (int k = 0; k < 4; ++k)
        bytes[std::uniform_int_distribution<std::size_t>(0, 8 + header - 1)(rng)] ^=
            static_cast<char>(1 + rng() % 255);
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    try {
      const auto f = SafetensorsFile::open(path);
      for (const auto& t : f->tensors()) (void)f->get(t.name).sum();
    } catch (const kinora::Error& e) {
      EXPECT_THAT(std::string(e.what()), HasSubstr(path.string()));
      ++refused;
    }
  }
  EXPECT_GT(refused, 150);  // every truncation is refused; most flips are too
}

TEST(SafetensorsWriter, FailedWritesLeaveNothingBehind) {
  TempDir dir;
  // A missing folder.
  EXPECT_THAT(error_of([&] {
                save_safetensors(dir / "no" / "x.safetensors", {{"a", torch::ones({2})}});
              }),
              HasSubstr("x.safetensors"));
  // A full disk, simulated by a file-size limit: the write fails part-way.
  struct rlimit old {};
  ::getrlimit(RLIMIT_FSIZE, &old);
  auto* previous = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 64 * 1024;
  ::setrlimit(RLIMIT_FSIZE, &small);
  const auto msg = error_of([&] {
    save_safetensors(dir / "big.safetensors", {{"a", torch::ones({1 << 20})}});
  });
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, previous);
  EXPECT_THAT(msg, HasSubstr("big.safetensors"));
  EXPECT_THAT(msg, HasSubstr("write failed"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0);
  // Names that cannot be stored.
  EXPECT_THAT(error_of([&] {
                save_safetensors(dir / "m.safetensors", {{"__metadata__", torch::ones({1})}});
              }),
              HasSubstr("__metadata__"));
}
