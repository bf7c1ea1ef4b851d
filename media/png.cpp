// PNG through libpng: one frame with its text chunks.
#include <png.h>
#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "base/error.h"
#include "media/codecs.h"

namespace kinora::media {
namespace fs = std::filesystem;

namespace {

// libpng's own handlers print ("libpng error: Write Error") before the
// message Kinora gives; these only jump back (an error) or say nothing (a warning).
void png_error_quietly(png_structp png, png_const_charp) {
  png_longjmp(png, 1);
}
void png_warning_quietly(png_structp, png_const_charp) {}

// `what`, with the system's reason where `err` (an errno) gives one: "write
// failed (disk full?): No space left on device", as base/files.h says it.
std::string with_reason(const char* what, int err) {
  std::string said = what;
  if (err) said.append(": ").append(std::strerror(err));
  return said;
}

// Plain C-style function: libpng reports errors by longjmp, so nothing with a
// destructor may live across setjmp here. Returns "" or the error.
std::string write_png_file(const char* file, const uint8_t* rgb, int w, int h,
                           const std::string& parameters, const std::string& json) {
  errno = 0;
  std::FILE* f = std::fopen(file, "wb");
  if (!f) return with_reason("cannot create the file", errno);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, &png_error_quietly,
                                            &png_warning_quietly);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    // The failed fwrite's errno (libpng's write callback), before cleaning up.
    const int err = errno;
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    return with_reason("write failed (disk full?)", err);
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_text text[2] = {};
  int n = 0;
  char key_params[] = "parameters", key_kinora[] = "kinora", empty[] = "";
  if (!parameters.empty()) {
    text[n].compression = PNG_ITXT_COMPRESSION_NONE;  // UTF-8 text (prompts are not Latin-1)
    text[n].key = key_params;
    text[n].text = const_cast<char*>(parameters.c_str());
    text[n].lang = empty;
    text[n].lang_key = empty;
    ++n;
  }
  if (!json.empty()) {
    text[n].compression = PNG_ITXT_COMPRESSION_NONE;
    text[n].key = key_kinora;
    text[n].text = const_cast<char*>(json.c_str());
    text[n].lang = empty;
    text[n].lang_key = empty;
    ++n;
  }
  if (n) png_set_text(png, info, text, n);
  png_write_info(png, info);
  for (int y = 0; y < h; ++y)
    png_write_row(png, const_cast<png_bytep>(rgb + static_cast<std::size_t>(y) * 3 * w));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  errno = 0;
  const bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const int err = errno;
  if (std::fclose(f) != 0 && ok) return with_reason("write failed (disk full?)", errno);
  return ok ? "" : with_reason("write failed (disk full?)", err);
}

}  // namespace

namespace codecs {

void write_png(const fs::path& path, const fs::path& tmp, const torch::Tensor& frame,
               const WriteOptions& o) {
  const auto rgb = frame.contiguous();
  const auto err =
      write_png_file(tmp.c_str(), rgb.data_ptr<uint8_t>(), static_cast<int>(rgb.size(1)),
                     static_cast<int>(rgb.size(0)), o.parameters_text, o.metadata_json);
  if (!err.empty()) fail_file(path, err);
}

}  // namespace codecs
}  // namespace kinora::media
