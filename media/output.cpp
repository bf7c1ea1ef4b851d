#include "media/output.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "media/codecs.h"

namespace kinora::media {
namespace fs = std::filesystem;

namespace {

void check_frames(const fs::path& path, const torch::Tensor& frames, Format format) {
  if (frames.dim() != 4 || frames.size(3) != 3 || frames.scalar_type() != torch::kUInt8)
    fail_file(path, "frames must be [F, H, W, 3] uint8, got " + c10::str(frames.sizes()) + " " +
                        c10::toString(frames.scalar_type()));
  if (frames.size(0) < 1) fail_file(path, "no frames to write");
  if (format != Format::Png && !is_sequence(format) && (frames.size(1) % 2 || frames.size(2) % 2))
    fail_file(path, "frame size " + std::to_string(frames.size(2)) + "x" +
                        std::to_string(frames.size(1)) + " must be even for video");
}

// frame_NNNNN.EXT of a sequence's i-th frame (0-based).
std::string frame_name(int64_t i, Format format) {
  char name[40];
  std::snprintf(name, sizeof name, "frame_%05lld%s", static_cast<long long>(i + 1),
                format == Format::PpmSequence ? ".ppm" : ".png");
  return name;
}

// A binary PPM (P6) of one frame [H, W, 3] uint8.
void write_ppm(const fs::path& path, const torch::Tensor& frame) {
  const auto rgb = frame.contiguous();
  const std::string header =
      "P6\n" + std::to_string(rgb.size(1)) + " " + std::to_string(rgb.size(0)) + "\n255\n";
  const auto bytes = static_cast<std::size_t>(rgb.numel());
  write_file_atomically(path, [&](std::FILE* f) {
    return std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
           std::fwrite(rgb.data_ptr<uint8_t>(), 1, bytes, f) == bytes;
  });
}

// Text chunks of a PNG file: keyword → text (tEXt and uncompressed iTXt).
std::map<std::string, std::string> png_text_chunks(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(f)), {});
  if (data.size() < 8 || data.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0)
    fail_file(path, "not a PNG file");
  std::map<std::string, std::string> out;
  std::size_t pos = 8;
  while (pos + 12 <= data.size()) {
    const auto* b = reinterpret_cast<const unsigned char*>(data.data() + pos);
    const std::size_t len =
        (std::size_t{b[0]} << 24) | (std::size_t{b[1]} << 16) | (std::size_t{b[2]} << 8) | b[3];
    const std::string type = data.substr(pos + 4, 4);
    if (pos + 12 + len > data.size()) break;
    const std::string body = data.substr(pos + 8, len);
    const auto nul = body.find('\0');
    if (nul != std::string::npos && type == "tEXt") {
      out[body.substr(0, nul)] = body.substr(nul + 1);
    } else if (nul != std::string::npos && type == "iTXt" && nul + 2 < body.size() &&
               body[nul + 1] == 0) {
      // keyword \0 compression-flag method language \0 translated \0 text
      const auto lang_end = body.find('\0', nul + 3);
      const auto trans_end =
          lang_end == std::string::npos ? lang_end : body.find('\0', lang_end + 1);
      if (trans_end != std::string::npos) out[body.substr(0, nul)] = body.substr(trans_end + 1);
    }
    if (type == "IEND") break;
    pos += 12 + len;
  }
  return out;
}

// Where a PNG, MP4/MOV or WebM file ends before its own structure says it
// does (a copy or a download that did not finish): which part is cut, or
// empty for a whole file or one of another kind. Reads headers only.
std::string where_cut_short(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::error_code ec;
  const auto size = static_cast<std::uint64_t>(fs::file_size(path, ec));
  if (!f || ec) return {};
  unsigned char head[12] = {0};
  f.read(reinterpret_cast<char*>(head), sizeof head);
  const auto big_endian = [](const unsigned char* b, int n) {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | b[i];
    return v;
  };
  const auto past = [&](const std::string& what, std::uint64_t end) {
    return what + " ends at byte " + std::to_string(end) + ", past the file's " +
           std::to_string(size) + " bytes";
  };
  if (std::memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0) {
    for (std::uint64_t pos = 8;;) {
      unsigned char b[8];
      f.clear();
      f.seekg(static_cast<std::streamoff>(pos));
      if (!f.read(reinterpret_cast<char*>(b), 8)) return "it ends before its IEND chunk";
      const std::string type(reinterpret_cast<const char*>(b) + 4, 4);
      const auto end = pos + 12 + big_endian(b, 4);
      if (end > size) return past("its " + type + " chunk", end);
      if (type == "IEND") return {};
      pos = end;
    }
  }
  const std::string brand(reinterpret_cast<const char*>(head) + 4, 4);
  if (brand == "ftyp" || brand == "moov" || brand == "mdat" || brand == "wide") {
    bool moov = false;  // every MP4 and MOV has one: cut off whole, the file ends early
    for (std::uint64_t pos = 0; pos < size;) {
      unsigned char b[16];
      f.clear();
      f.seekg(static_cast<std::streamoff>(pos));
      if (!f.read(reinterpret_cast<char*>(b), 8)) return "it ends inside a box's header";
      const std::string type(reinterpret_cast<const char*>(b) + 4, 4);
      std::uint64_t box = big_endian(b, 4);
      if (box == 1) {
        if (!f.read(reinterpret_cast<char*>(b) + 8, 8)) return "it ends inside a box's header";
        box = big_endian(b + 8, 8);
      }
      if (box == 0) return {};  // to the end of the file
      if (box < 8) return {};   // not a box: FFmpeg says what is wrong
      if (pos + box > size) return past("its " + type + " box", pos + box);
      moov = moov || type == "moov";
      pos += box;
    }
    return moov ? "" : "it ends before its moov box (the index of its frames)";
  }
  if (big_endian(head, 4) == 0x1A45DFA3) {  // EBML: its header, then the Segment
    // An EBML variable-size integer at `pos`: its value, its length, and
    // whether it is "unknown" (all value bits set).
    struct Vint {
      std::uint64_t value = 0;
      int length = 0;
      bool unknown = false;
    };
    const auto vint = [&](std::uint64_t pos, bool keep_marker) -> std::optional<Vint> {
      unsigned char b[8];
      f.clear();
      f.seekg(static_cast<std::streamoff>(pos));
      if (!f.read(reinterpret_cast<char*>(b), 1) || b[0] == 0) return std::nullopt;
      Vint v;
      while (!(b[0] & (0x80 >> v.length))) ++v.length;
      ++v.length;
      if (v.length > 1 && !f.read(reinterpret_cast<char*>(b) + 1, v.length - 1))
        return std::nullopt;
      v.value = keep_marker ? b[0] : b[0] & (0xFF >> v.length);
      bool ones = (b[0] & (0xFF >> v.length)) == (0xFF >> v.length);
      for (int i = 1; i < v.length; ++i) {
        v.value = (v.value << 8) | b[i];
        ones = ones && b[i] == 0xFF;
      }
      v.unknown = ones;
      return v;
    };
    const auto header_size = vint(4, false);
    if (!header_size) return "it ends inside its EBML header";
    const std::uint64_t segment = 4 + header_size->length + header_size->value;
    const auto id = vint(segment, true);
    if (!id) return "it ends before its Segment";
    if (id->value != 0x18538067) return {};
    const auto length = vint(segment + id->length, false);
    if (!length) return "it ends inside its Segment's header";
    const auto end = segment + id->length + length->length + length->value;
    if (!length->unknown && end > size) return past("its Segment", end);
  }
  return {};
}

// Fails for `path`, a file that holds no Kinora parameters (`why`), saying
// first whether it is cut short: then that is what is wrong.
[[noreturn]] void fail_no_parameters(const fs::path& path, const std::string& why) {
  if (const auto cut = where_cut_short(path); !cut.empty())
    fail_file(path, "is cut short (" + cut +
                        "): a copy or download that did not finish; what it held of its "
                        "parameters is lost with the rest");
  fail_file(path, "holds no Kinora parameters (" + why + ")");
}

}  // namespace

// ---------------------------------------------------------------- public

namespace {

// Only frame_NNNNN.png (or .ppm) and the parameters Kinora wrote as
// kinora.json: a sequence Kinora wrote.
bool is_kinora_sequence(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    const bool frame = name.size() == 15 && name.rfind("frame_", 0) == 0 &&
                       (name.compare(11, 4, ".png") == 0 || name.compare(11, 4, ".ppm") == 0) &&
                       std::all_of(name.begin() + 6, name.begin() + 11, ::isdigit);
    if (!e.is_regular_file(ec) || !(frame || name == "kinora.json")) return false;
    // A frame is a picture: a file of another kind under a frame's name (a
    // user's notes, a model) makes the folder not one to replace.
    if (frame) {
      char head[8] = {0};
      std::ifstream(e.path(), std::ios::binary).read(head, sizeof head);
      const bool png = std::memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0;
      const bool ppm = head[0] == 'P' && head[1] == '6';
      if (name.compare(11, 4, ".png") == 0 ? !png : !ppm) return false;
    }
  }
  return !ec && is_kinora_sidecar(dir / "kinora.json");
}

bool is_empty_folder(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_empty(dir, ec) && !ec;
}

}  // namespace

fs::path OutputTarget::sidecar() const {
  if (is_sequence(format)) return {};
  fs::path p = path;
  p += ".json";
  return p;
}

void check_output_folder(const fs::path& path) {
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  if (!fs::is_directory(folder, ec))
    fail_file(path, fs::exists(folder, ec) ? folder.string() + " is a file, not a folder"
                                           : "the folder " + folder.string() + " does not exist");
  if (::access(folder.c_str(), W_OK) != 0)
    fail_file(path, "the folder " + folder.string() + " is not writable");
}

OutputTarget prepare_output(const fs::path& path_given, const std::string& format, int64_t frames,
                            bool overwrite) {
  OutputTarget t;
  // A sequence's folder may be given as "frames/".
  fs::path path = path_given;
  const std::string s = path_given.string();
  if (!format.empty() && is_sequence(parse_format(format)) && !s.empty() && s.back() == '/' &&
      s.find_last_not_of('/') != std::string::npos)
    path = s.substr(0, s.find_last_not_of('/') + 1);
  t.path = path;
  t.overwrite = overwrite;
  t.format = output_format(path, format, frames);
  // The temporaries' names are longer than the output's: check them now, not
  // after the render (a file name has at most 255 bytes).
  for (const auto& name : {temp_beside(path).filename(), temp_beside(t.sidecar()).filename()})
    if (name.string().size() > 255)
      fail_file(path, "the name is too long: its temporary, " +
                          std::to_string(name.string().size()) +
                          " bytes, is past the 255 a file name may have; use a shorter name");
  if (!codecs::available() && t.format != Format::PpmSequence)
    fail_file(path, std::string("this build of Kinora has no FFmpeg and libpng, so it writes ") +
                        "frames only: --format ppm-seq into a new folder");
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  check_output_folder(path);
  if (is_sequence(t.format)) {
    const auto st = fs::symlink_status(path, ec);
    if (fs::exists(st)) {
      if (!fs::is_directory(st))
        fail_file(path, "exists and is not a folder; a frame sequence needs a new or empty folder");
      if (!is_empty_folder(path)) {
        const bool earlier = is_kinora_sequence(path);
        if (!overwrite && earlier)
          fail_file(path,
                    "holds the frame sequence of an earlier render; give --overwrite to replace "
                    "it, or name another folder (nothing was changed)");
        if (!overwrite)
          fail_file(path,
                    "is a folder that is not empty; a frame sequence goes into a new or empty "
                    "folder (nothing was changed)");
        if (!earlier)
          fail_file(path,
                    "holds files other than a Kinora frame sequence; not replaced, even with "
                    "--overwrite");
      }
    }
  } else {
    check_can_write_file(path, overwrite);
    // The sidecar follows the output's rule, and is only ever an earlier Kinora
    // parameters file.
    const auto side = t.sidecar();
    if (fs::exists(fs::symlink_status(side, ec))) {
      if (!is_kinora_sidecar(side))
        fail_file(
            path,
            "its parameters would go to " + side.string() +
                ", which exists and is not the parameters file of an earlier render (a preset, "
                "or a file of yours); move it or name another output");
      check_can_write_file(side, overwrite, "output's parameters file");
    }
  }
  remove_stale_temporaries(folder);
  return t;
}

void write_output(const OutputTarget& t, const torch::Tensor& frames, const WriteOptions& o,
                  const std::atomic<bool>* cancel) {
  const fs::path& path = t.path;
  check_frames(path, frames, t.format);
  if (o.fps < 1 || o.fps > 240)
    fail_file(path, "fps must be between 1 and 240, got " + std::to_string(o.fps));
  ScopedTemp tmp(path);
  if (t.format == Format::Png) {
    codecs::write_png(path, tmp.path(), frames[0], o);
  } else if (is_sequence(t.format)) {
    try {
      fs::create_directories(tmp.path());
      for (int64_t i = 0; i < frames.size(0); ++i) {
        throw_if_cancelled(cancel);
        const auto file = tmp.path() / frame_name(i, t.format);
        if (t.format == Format::PpmSequence) {
          write_ppm(file, frames[i]);
        } else {
          WriteOptions frame_opts = o;
          if (i)
            frame_opts.parameters_text.clear(), frame_opts.metadata_json.clear();  // once is enough
          codecs::write_png(path, file, frames[i], frame_opts);
        }
      }
      write_file_atomically(tmp.path() / "kinora.json", o.metadata_json + "\n");
    } catch (const Cancelled&) {
      throw;
    } catch (const Error& e) {
      // Named as the folder the user asked for, not the temporary being filled.
      std::string what = e.what();
      const std::string from = tmp.path().string();
      for (auto at = what.find(from); at != std::string::npos;
           at = what.find(from, at + path.string().size()))
        what.replace(at, from.size(), path.string());
      throw Error(what);
    }
  } else {
    codecs::write_video(path, tmp.path(), frames, t.format, o, cancel);
  }
  throw_if_cancelled(cancel);
  // The sidecar's temporary is complete too before either moves into place.
  const auto side = t.sidecar();
  std::optional<ScopedTemp> side_tmp;
  if (!side.empty() && !o.metadata_json.empty()) {
    side_tmp.emplace(side);
    write_new_file(side_tmp->path(), o.metadata_json + "\n", side);
  }
  if (is_sequence(t.format)) {
    // An empty folder is replaced by rename itself (it fails if the folder
    // filled meanwhile); a Kinora sequence, with overwrite, is moved aside
    // first and removed once the new one is in place.
    std::error_code ec;
    std::optional<ScopedTemp> aside;
    if (t.overwrite && fs::is_directory(path, ec) && !is_empty_folder(path) &&
        is_kinora_sequence(path)) {
      aside.emplace(path.parent_path() / (path.filename().string() + ".old"));
      fs::rename(path, aside->path(), ec);
      if (ec) fail_file(path, "cannot move the old sequence aside: " + ec.message());
    }
    try {
      tmp.commit(/*replace=*/is_empty_folder(path));
    } catch (...) {
      if (aside) fs::rename(aside->path(), path, ec);  // the old one back
      throw;
    }
  } else {
    // Into place so that a move that fails loses nothing: an earlier sidecar
    // is moved aside (kept until the end), the new one moved in, then the
    // output (an earlier output is replaced by that last rename only); a
    // failure puts back what was there.
    std::error_code ec;
    std::optional<ScopedTemp> old_side;
    if (side_tmp && fs::exists(fs::symlink_status(side, ec))) {
      old_side.emplace(side, "old");
      fs::rename(side, old_side->path(), ec);
      if (ec) fail_file(side, "cannot move the earlier parameters file aside: " + ec.message());
    }
    auto put_back = [&] {
      std::error_code ignored;
      if (old_side) fs::rename(old_side->path(), side, ignored);
    };
    try {
      if (side_tmp) side_tmp->commit(/*replace=*/false);
    } catch (...) {
      put_back();
      throw;
    }
    try {
      tmp.commit(t.overwrite);
    } catch (...) {
      std::error_code ignored;
      if (side_tmp) fs::remove(side, ignored);
      put_back();
      throw;
    }
  }
}

bool is_kinora_sidecar(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec) || fs::file_size(path, ec) > (1u << 20)) return false;
  try {
    return is_kinora_parameters(read_json_file(path));
  } catch (const Error&) {
    return false;
  }
}

std::string cut_short(const fs::path& path) {
  const auto where = where_cut_short(path);
  return where.empty() ? where : "cut short: " + where;
}

bool is_kinora_output(const fs::path& path) {
  if (is_kinora_sidecar(path.string() + ".json")) return true;
  try {
    read_embedded_parameters(path);
    return true;
  } catch (const Error&) {
    return false;
  }
}

nlohmann::json read_embedded_parameters(const fs::path& path) {
  std::error_code ec;
  auto parsed = [&](const std::string& text, const std::string& where) {
    const auto j = parse_json(text, path.string() + " (" + where + ")");
    if (!is_kinora_parameters(j))
      fail_file(path, "holds no Kinora parameters (its " + where + " is other JSON)");
    return j;
  };
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(path / "kinora.json", ec))
      fail_file(path, "holds no Kinora parameters (a folder without kinora.json)");
    auto j = read_json_file(path / "kinora.json");
    if (!is_kinora_parameters(j)) fail_file(path, "holds no Kinora parameters (its kinora.json)");
    return j;
  }
  if (!fs::exists(path, ec)) fail_file(path, "no such file");
  const auto ext = lower_extension(path);
  for (const char* model : {".safetensors", ".gguf", ".ckpt", ".pt", ".pth", ".bin", ".model"})
    if (ext == model)
      fail_file(path,
                "a model file, not a render: it holds no Kinora parameters (kinora info "
                "describes it)");
  if (ext == ".json") {
    auto j = read_json_file(path);
    if (!is_kinora_parameters(j))
      fail_file(path, "holds no Kinora parameters (a preset is rendered, not restored)");
    return j;
  }
  if (ext == ".png") {
    const auto chunks = png_text_chunks(path);
    const auto it = chunks.find("kinora");
    if (it == chunks.end()) fail_no_parameters(path, "no \"kinora\" text");
    return parsed(it->second, "\"kinora\" text");
  }
  std::pair<std::string, std::string> tags;
  try {
    tags = codecs::container_tags(path);
  } catch (const Error& e) {
    if (!where_cut_short(path).empty()) fail_no_parameters(path, e.what());
    throw;
  }
  const auto& [kinora, comment] = tags;
  if (!kinora.empty()) return parsed(kinora, "\"kinora\" tag");
  if (comment.empty()) fail_no_parameters(path, "no \"kinora\" or comment tag");
  const bool looks_like_json = comment.find_first_not_of(" \t\r\n") != std::string::npos &&
                               comment[comment.find_first_not_of(" \t\r\n")] == '{';
  if (!looks_like_json) fail_file(path, "holds no Kinora parameters (its comment is other text)");
  return parsed(comment, "comment");
}

}  // namespace kinora::media
