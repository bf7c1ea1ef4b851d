// kinora: the command line.
#include <CLI/CLI.hpp>
#include <csignal>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <regex>
#include <set>
#include <string_view>

#include "base/device.h"
#include "base/error.h"
#include "base/runtime.h"
#include "base/signals.h"
#include "cli/convert.h"
#include "cli/error_message.h"
#include "cli/info.h"
#include "cli/lora_command.h"
#include "cli/merge.h"
#include "cli/render_commands.h"
#include "cli/slurm_command.h"
#include "cli/train_command.h"
#include "schedulers/registry.h"

namespace {

// Levenshtein distance, for "did you mean".
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// The first word that is not an option must name a subcommand ("help" is
// --help); otherwise say which word, and the closest subcommand.
bool check_subcommand(const CLI::App& app, int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') return true;
  const std::string word = argv[1];
  if (word == "help") return true;
  std::string best;
  std::size_t best_d = std::string::npos;
  for (const auto* sub : app.get_subcommands({})) {
    if (sub->get_name() == word) return true;
    const auto d = edit_distance(word, sub->get_name());
    if (d < best_d) best_d = d, best = sub->get_name();
  }
  std::cerr << "kinora: unknown command '" << word << "'";
  if (best_d <= std::max<std::size_t>(2, word.size() / 3))
    std::cerr << "; did you mean '" << best << "'?";
  std::cerr << " (kinora --help lists the commands)\n";
  return false;
}

// What is wrong with `value` given to `opt`, empty when nothing CLI11 let
// through is:
// - numbers it takes too readily: an empty value (a script's unset
//   variable) it reads as 0, and hexadecimal ("0x10") as 16;
// - file and folder names given empty, where an empty name would mean "the
//   default".
std::string bad_value(const CLI::Option& opt, const std::string& value) {
  const auto type = opt.get_type_name();
  // "INT", "FLOAT", "UINT", or with a range: "INT:INT in [1 - 64]".
  if (type.rfind("INT", 0) == 0 || type.rfind("FLOAT", 0) == 0 || type.rfind("UINT", 0) == 0) {
    std::string_view v = value;
    while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.remove_prefix(1);
    if (!v.empty() && (v.front() == '-' || v.front() == '+')) v.remove_prefix(1);
    if (v.empty() || v.rfind("0x", 0) == 0 || v.rfind("0X", 0) == 0)
      return "expected a decimal number";
  }
  static const std::set<std::string> names = {
      "out",       "output",         "model",      "model2",     "vae",     "text-encoder",
      "tokenizer", "clip-tokenizer", "models-dir", "output-dir", "log-dir", "clip"};
  const auto& l = opt.get_lnames();
  if (std::any_of(l.begin(), l.end(), [](const std::string& n) { return names.count(n); }) &&
      value.find_first_not_of(" \t") == std::string::npos)
    return "an empty name; give a file or folder, or leave the option out";
  return {};
}

// Every value of the command line's commands checked by bad_value: the first
// refused is said, naming the option, in every command.
bool check_values(const CLI::App& app) {
  for (const auto* opt : app.get_options())
    for (const auto& value : opt->results())
      if (const auto why = bad_value(*opt, value); !why.empty()) {
        std::cerr << "kinora: " << opt->get_name() << " '" << value << "': " << why << "\n";
        return false;
      }
  for (const auto* sub : app.get_subcommands({}))
    if (sub->parsed() && !check_values(*sub)) return false;
  return true;
}

// The deepest subcommand the command line named ("kinora lora merge": merge).
const CLI::App& named_command(const CLI::App& app) {
  for (const auto* sub : app.get_subcommands({}))
    if (sub->parsed()) return named_command(*sub);
  return app;
}

// Whether `token` looks like an option ("--name", "--name=v", "-x"), not a
// value such as "-1".
bool option_like(const std::string& token) {
  return token.size() >= 2 && token[0] == '-' &&
         (token[1] == '-' ? token.size() > 2 : std::isalpha(static_cast<unsigned char>(token[1])));
}

// Whether `cmd` or a command above it takes the option `token` names.
bool known_option(const CLI::App& cmd, const std::string& token) {
  const std::string name = token.substr(0, token.find('='));
  for (const CLI::App* c = &cmd; c; c = c->get_parent())
    if (c->get_option_no_throw(name)) return true;
  return false;
}

// A command line CLI11 refused, said as Kinora says everything ("kinora:
// WHAT: reason") with the command whose --help lists the options; CLI11's
// own words only where there is nothing better to say. `args`: the command
// line after the program's name.
std::string usage_error(const CLI::App& app, const std::string& what,
                        const std::vector<std::string>& args) {
  const auto& cmd = named_command(app);
  std::string name = cmd.get_name();
  for (const auto* p = cmd.get_parent(); p; p = p->get_parent()) name = p->get_name() + " " + name;
  const std::string help =
      " (kinora " + (name == "kinora" ? "" : name.substr(7) + " ") + "--help lists the options)";
  // An option no command here takes: said first, whatever CLI11 tripped on
  // before it (a required option, a file it checked).
  for (const auto& a : args) {
    if (a == "--") break;
    if (option_like(a) && !known_option(cmd, a)) return "kinora: unexpected " + a + help;
  }
  // A command that takes a subcommand: the word given instead, or none.
  if (what == "A subcommand is required") {
    std::string subs;
    for (const auto* sub : cmd.get_subcommands({}))
      subs += (subs.empty() ? "" : ", ") + sub->get_name();
    const auto at = std::find(args.begin(), args.end(), cmd.get_name());
    const bool word = at != args.end() && at + 1 != args.end() && !option_like(*(at + 1));
    if (&cmd == &app) return "kinora: give a command (kinora --help lists them)";
    return "kinora: " + name.substr(7) + ": " +
           (word ? "unknown command '" + *(at + 1) + "' (its commands: " + subs + ")"
                 : "give one of its commands: " + subs) +
           help;
  }
  std::smatch m;
  std::string said = what;
  const auto number_kind = [&](const std::string& option) {
    const auto* opt = cmd.get_option_no_throw(option);
    const auto type = opt ? opt->get_type_name() : std::string();
    return type.rfind("FLOAT", 0) == 0 ? std::string("a decimal number")
                                       : std::string("a whole number");
  };
  if (std::regex_match(what, m, std::regex("Could not convert: (\\S+) = (.*)"))) {
    said = option_like(m[2].str())
               ? m[1].str() + " needs a value (" + m[2].str() + " came next)"
               : m[1].str() + " '" + m[2].str() + "': expected " + number_kind(m[1].str());
  } else if (std::regex_match(what, m,
                              std::regex("(\\S+): Value (.*) not in range (.*) to (.*)"))) {
    said = m[1].str() + " '" + m[2].str() + "': expected " + number_kind(m[1].str()) + " from " +
           m[3].str() + " to " + m[4].str();
  } else if (std::regex_match(what, m,
                              std::regex("(\\S+): At Most \\d+ required but received (\\d+)"))) {
    said = m[1].str() + " is given " + m[2].str() + " times; give it once";
  } else if (std::regex_match(what, m,
                              std::regex("(\\S+): (Directory is actually a file|File is actually "
                                         "a directory): (.*)"))) {
    const std::string is = m[2].str()[0] == 'D' ? "a file, not a folder" : "a folder, not a file";
    said =
        m[1].str()[0] == '-' ? m[1].str() + " '" + m[3].str() + "': " + is : m[3].str() + ": " + is;
  } else if (std::regex_match(what, m,
                              std::regex("(\\S+): (File|Path|Directory) does not "
                                         "exist: (.*)"))) {
    const std::string kind = m[2] == "File"        ? "file"
                             : m[2] == "Directory" ? "folder"
                                                   : "file or folder";
    said = m[1].str()[0] == '-' ? m[1].str() + " '" + m[3].str() + "': no such " + kind
                                : m[3].str() + ": no such " + kind;
  } else if (std::regex_match(what, m, std::regex("(\\S+): (.*) not in \\{(.*)\\}"))) {
    said = m[1].str() + " '" + m[2].str() + "': expected one of " +
           std::regex_replace(m[3].str(), std::regex(","), ", ");
  } else if (std::regex_match(what, m, std::regex("(\\S+): \\d+ required \\S+ missing"))) {
    said = m[1].str() + " needs a value";
  } else if (std::regex_match(what, m, std::regex("(\\S+) is required"))) {
    said = m[1].str()[0] == '-' ? m[1].str() + " is required"
                                : "missing the argument '" + m[1].str() + "'";
  } else if (std::regex_match(what, m,
                              std::regex("The following arguments? (?:was|were) not expected: "
                                         "(.*)"))) {
    said = "unexpected " + m[1].str();
  }
  return "kinora: " + said + help;
}

}  // namespace

namespace {
int run(int argc, char** argv) {
  CLI::App app{"Kinora: video and image generation with open diffusion models (Wan, FLUX, SDXL)",
               "kinora"};
  app.set_version_flag("--version", kinora::version_string());
  app.require_subcommand(1);

  std::vector<std::string> info_files;
  auto* info = app.add_subcommand("info",
                                  "Show what a checkpoint holds: tensors, dtypes, size, metadata, "
                                  "and the model family and key layout it is recognised as");
  info->add_option("files", info_files,
                   "safetensors files or *.safetensors.index.json; also a tokenizer: a "
                   "SentencePiece .model, or a CLIP tokenizer's folder")
      ->required()
      ->check(CLI::ExistingPath);

  std::string convert_in, convert_out, convert_dtype = "bf16";
  auto* convert = app.add_subcommand(
      "convert",
      "Store a checkpoint's floating-point tensors in another precision (names, shapes and "
      "metadata kept): float32 to bf16 halves the file");
  convert->add_option("input", convert_in, "safetensors file or *.safetensors.index.json")
      ->required()
      ->check(CLI::ExistingFile);
  bool convert_overwrite = false;
  convert->add_option("output", convert_out, "the .safetensors file to write")->required();
  convert->add_flag("--overwrite", convert_overwrite, "replace an existing output file");
  convert->add_option("--dtype", convert_dtype, "bf16, fp16 or fp32")
      ->check(CLI::IsMember({"bf16", "fp16", "fp32"}))
      ->capture_default_str();

  kinora::cli::MergeSpec merge;
  std::string merge_out, merge_subtract;
  auto* merger = app.add_subcommand(
      "merge",
      "Combine two checkpoints of the same model tensor by tensor: A + r·(B − A) (weighted sum; "
      "r above 1 goes on past B), or with --subtract C, A + r·(B − C) (add difference)");
  merger->add_option("a", merge.a, "checkpoint A (its layout, metadata and dtypes are kept)")
      ->required()
      ->check(CLI::ExistingFile);
  merger->add_option("b", merge.b, "checkpoint B")->required()->check(CLI::ExistingFile);
  merger->add_option("-o,--output", merge_out, "the .safetensors file to write")->required();
  merger->add_flag("--overwrite", merge.overwrite, "replace an existing output file");
  merger->add_option("-r,--ratio", merge.ratio, "r in the formula")->capture_default_str();
  merger->add_option("--subtract", merge_subtract, "checkpoint C: add difference A + r·(B − C)")
      ->check(CLI::ExistingFile);
  merger->add_option("--dtype", merge.dtype, "keep (A's), bf16, fp16 or fp32")
      ->check(CLI::IsMember({"keep", "bf16", "fp16", "fp32"}))
      ->capture_default_str();

  auto* samplers =
      app.add_subcommand("samplers", "List the samplers, by the names presets and --sampler use");
  auto* devices = app.add_subcommand(
      "devices", "List the devices --device can name: the CPU and every CUDA GPU LibTorch sees");

  const auto run_render = kinora::cli::add_render_commands(app);
  const auto run_train = kinora::cli::add_train_command(app);
  const auto run_lora = kinora::cli::add_lora_command(app);
  const auto run_slurm = kinora::cli::add_slurm_command(app);
  if (!check_subcommand(app, argc, argv)) return 2;
  if (argc == 2 && std::string(argv[1]) == "help") {
    std::cout << app.help();
    return 0;
  }
  // A command line CLI11 cannot take: its message, and the usual status 2
  // (CLI11's own codes, 104 to 114, mean nothing to a shell script).
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << usage_error(app, e.what(), std::vector<std::string>(argv + 1, argv + argc))
              << "\n";
    return 2;
  }
  if (!check_values(app)) return 2;
  kinora::configure_threads();
  // A file-size limit (ulimit -f) fails the write that passes it, which every
  // writer reports and cleans up after, instead of killing the program.
  std::signal(SIGXFSZ, SIG_IGN);
  if (const int rc = run_train(); rc >= 0) return rc;
  if (const int rc = run_lora(); rc >= 0) return rc;
  if (const int rc = run_slurm(); rc >= 0) return rc;
  if (const int rc = run_render(); rc >= 0) return rc;

  int status = 0;
  try {
    if (*info) {
      for (const auto& f : info_files) {
        try {
          kinora::cli::print_info(f, std::cout);
        } catch (const std::exception& e) {
          std::cerr << "kinora: " << kinora::cli::error_message(e) << "\n";
          status = 1;
        }
      }
    } else if (*convert) {
      kinora::install_cancel_signals();
      const auto r = kinora::cli::convert_checkpoint(convert_in, convert_out, convert_dtype,
                                                     convert_overwrite);
      std::cout << "wrote " << convert_out << ": " << r.tensors << " tensors, " << r.converted
                << " stored as " << convert_dtype << "; " << r.bytes_in << " → " << r.bytes_out
                << " bytes of tensor data\n";
    } else if (*merger) {
      kinora::install_cancel_signals();
      if (!merge_subtract.empty()) merge.subtract = merge_subtract;
      const auto r = kinora::cli::merge_checkpoints(merge, merge_out);
      std::cout << "wrote " << merge_out << ": " << r.tensors << " tensors, " << r.merged
                << " merged as " << (merge.subtract ? "A + r·(B − C)" : "A + r·(B − A)")
                << " with r " << merge.ratio << " (change from A: " << r.relative_change * 100
                << "% RMS, relative); " << r.bytes_out << " bytes of tensor data\n";
    } else if (*devices) {
      for (const auto& d : kinora::available_devices())
        std::cout << d.name << "    " << d.description << "\n";
    } else if (*samplers) {
      // By the kind of model they drive; a name both kinds have (euler,
      // dpmpp_2m) picks the one of the model's kind.
      using kinora::schedulers::Space;
      for (const auto& [space, title] :
           {std::pair{Space::Flow, "Flow-matching models (Wan, FLUX):"},
            std::pair{Space::Noise, "Noise-prediction models (SDXL):"}}) {
        std::cout << (space == Space::Flow ? "" : "\n") << title << "\n";
        for (const auto& e : kinora::schedulers::available_schedulers()) {
          if (e.space != space) continue;
          std::cout << "  " << e.name;
          for (const auto& a : e.aliases)
            std::cout << (&a == &e.aliases.front() ? " (also " : ", ") << a;
          if (!e.aliases.empty()) std::cout << ")";
          std::cout << "\n      " << e.description << "\n";
        }
      }
      std::cout << "\neuler and dpmpp_2m name the sampler of the model's kind.\n";
    }
  } catch (const kinora::Cancelled&) {
    std::cerr << "kinora: cancelled; nothing was written\n";
    return kinora::cancel_exit_status();
  } catch (const std::exception& e) {
    std::cerr << "kinora: " << kinora::cli::error_message(e) << "\n";
    return 1;
  }
  return status;
}
}  // namespace

int main(int argc, char** argv) {
  const int status = run(argc, argv);
  // What a command printed (restore's preset, info, --help) reached its
  // reader only if standard output took it: a full disk behind
  // `kinora restore x.mp4 > p.json` must not end in status 0 and an empty
  // p.json.
  errno = 0;
  std::cout.flush();
  if (std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout) {
    const int err = errno;
    std::cerr << "kinora: could not write to standard output"
              << (err != 0 ? std::string(" (") + std::strerror(err) + ")" : std::string())
              << "; what this command printed is not complete\n";
    return status == 0 ? 1 : status;
  }
  return status;
}
