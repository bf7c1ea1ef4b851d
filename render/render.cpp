#include "render/render.h"

#include <chrono>
#include <memory>

#include "base/files.h"
#include "base/hash_cache.h"
#include "media/output.h"
#include "render/parameters.h"

namespace kinora::render {
namespace fs = std::filesystem;

namespace {

// Whether an output carries the A1111 parameters text (only PNG has a place
// for it), which names the model files by hashes that take reading them whole.
bool wants_parameters_text(const media::OutputTarget& target) {
  return target.format == media::Format::Png || target.format == media::Format::PngSequence;
}

// Writes one result to its checked destination, with the parameters embedded
// (`hashes`: the preset's files, for the PNG parameters text).
void write_result(pipeline::Result& r, const media::OutputTarget& target, const FileHashes& hashes,
                  const pipeline::RunCallbacks& cb) {
  r.metadata["kinora"]["ffmpeg"] = media::ffmpeg_version();
  r.metadata["preset"]["output"] = target.path.filename().string();
  media::WriteOptions o;
  o.fps = r.preset.fps;
  o.crf = r.preset.crf;
  o.metadata_json = r.metadata.dump();
  if (wants_parameters_text(target)) o.parameters_text = parameters_text(r.preset, hashes);
  const auto t0 = std::chrono::steady_clock::now();
  media::write_output(target, r.frames, o, cb.cancel);
  r.timings.encode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.output = target.path;
  r.preset.output = target.path.string();
}

}  // namespace

pipeline::Result render(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                        const pipeline::RunCallbacks& cb, bool overwrite) {
  return std::move(render_batch(pipe, preset, 1, cb, overwrite).front());
}

fs::path batch_output(const pipeline::Preset& preset, int count, int i) {
  const fs::path out = preset.output_path();
  if (count == 1) return out;
  return out.parent_path() /
         (out.stem().string() + "-" + std::to_string(preset.seed + i) + out.extension().string());
}

void check_not_an_input(const fs::path& output, const pipeline::Preset& preset) {
  std::error_code ec;
  if (!fs::exists(output, ec)) return;
  const bool folder = fs::is_directory(output, ec);
  const auto inside = fs::weakly_canonical(output, ec);
  for (const auto& in : pipeline::input_files(preset)) {
    if (fs::equivalent(in, output, ec))
      throw Error(output.string() +
                  ": is a file this render reads (a model, tokenizer or LoRA); it is never "
                  "written over, even with --overwrite: name another output");
    // A frame sequence's folder: replaced whole, so nothing it holds may be read.
    if (folder && fs::weakly_canonical(in, ec).parent_path() == inside)
      throw Error(output.string() + ": holds " + in.filename().string() +
                  ", a file this render reads; the folder is never replaced, even with "
                  "--overwrite: name another output");
  }
}

media::Format check_output_name(const pipeline::Preset& preset, bool writable) {
  pipeline::Preset snapped = preset;
  pipeline::snap_sizes(snapped);
  check_one_image(preset, snapped);
  const auto format = media::output_format(preset.output_path(), preset.format, snapped.frames);
  if (writable) media::check_output_folder(preset.output_path());
  check_not_an_input(preset.output_path(), preset);
  return format;
}

void check_one_image(const pipeline::Preset& preset, const pipeline::Preset& snapped) {
  if (snapped.frames <= 1) return;
  if (preset.frames != 1) {
    // A clip named .png: whether one frame is what to ask for depends on
    // the model (media's message says so when it is).
    pipeline::Preset one = preset;
    one.frames = 1;
    pipeline::snap_sizes(one);
    if (one.frames <= 1) return;
  }
  if (preset.format == "png" ||
      (preset.format.empty() && media::lower_extension(preset.output_path()) == ".png"))
    throw Error(preset.output_path().string() + ": this model makes clips of " +
                std::to_string(snapped.frames) +
                " frames at the least, not single images; write a video (.mp4, .webm, .mov) or "
                "a folder of frames (--format png-seq)");
}

std::vector<pipeline::Result> render_batch(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                                           int count, const pipeline::RunCallbacks& cb,
                                           bool overwrite) {
  if (preset.output.empty())
    throw Error("preset: key 'output' is empty: where should the video go?");
  if (count > 1 && preset.seed < 0) throw Error("a batch needs its first seed resolved");
  // The sampler, and everything about the destinations, before any model
  // loads.
  pipeline::check_sampler(preset);
  pipeline::Preset snapped = preset;
  pipeline::snap_sizes(snapped);
  check_one_image(preset, snapped);
  std::vector<media::OutputTarget> targets;
  // Held until the outputs are written: a batch (or a render) in another
  // process that reaches the same output leaves it to this one.
  std::vector<std::unique_ptr<OutputClaim>> claims;
  for (int i = 0; i < count; ++i) {
    const auto out = batch_output(preset, count, i);
    check_not_an_input(out, preset);
    claims.push_back(std::make_unique<OutputClaim>(out));
    if (!claims.back()->held())
      throw Error(out.string() + ": being rendered by " + claims.back()->holder() +
                  " (another kinora batch, render or studio writing it); wait for it to "
                  "finish, or name another output");
    targets.push_back(media::prepare_output(out, preset.format, snapped.frames, overwrite));
  }
  auto results = pipe.generate_batch(preset, count, cb);
  // The outputs of a batch share their files: hashed (or found in the cache) once.
  FileHashes hashes;
  if (wants_parameters_text(targets.front()))
    hashes =
        file_hashes(results.front().preset, default_hash_cache_file(), cb.cancel, cb.on_message);
  for (int i = 0; i < count; ++i) try {
      write_result(results[i], targets[i], hashes, cb);
    } catch (const Cancelled&) {
      // The outputs written before stay (each complete): said which.
      if (i > 0 && cb.on_message) {
        const auto names = [&](int from, int to) {
          std::string out;
          for (int j = from; j < to; ++j)
            out.append(out.empty() ? "" : ", ").append(targets[j].path.string());
          return out;
        };
        cb.on_message("cancelled after writing " + names(0, i) +
                      "; not written: " + names(i, count));
      }
      throw;
    }
  return results;
}

}  // namespace kinora::render
