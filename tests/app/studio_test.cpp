// The real kinora-studio program: its queue survives a kill in the middle of a
// job, and under Xvfb it renders a prompt with the live preview and plays the
// result (screenshots saved for the docs).
#include <gtest/gtest.h>

#include "../unit/flux_files.h"
#include "../unit/poisoned_files.h"
#include "../unit/test_util.h"
#include "base/files.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace {
namespace fs = std::filesystem;
using kinora::test::fixture;

std::string studio() {
  return std::string(KINORA_BIN_DIR) + "/kinora-studio";
}
std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// In `dir`: cut.safetensors, the fixture VAE with a tensor of the wrong
// shape, and `name`, a preset of the fixture chain with that VAE (a job that
// fails when it runs: the files' headers are read when it is queued).
void write_preset_with_a_cut_vae(const fs::path& dir, const std::string& name) {
  kinora::test::write_misshaped("wan21_vae_tiny.safetensors", dir / "cut.safetensors",
                                "decoder.middle.1.to_qkv.weight");
  std::ofstream(dir / name) << "{\"prompt\": \"a fox\", \"seed\": 1, \"steps\": 1, "
                            << "\"width\": 32, \"height\": 32, \"frames\": 5, \"model\": \""
                            << fixture("wan21_dit_tiny.safetensors")
                            << "\", \"vae\": \"cut.safetensors\", \"text_encoder\": \""
                            << fixture("umt5_enc_tiny.safetensors") << "\", \"tokenizer\": \""
                            << fixture("spm_tiny.model") << "\"}";
}

// Whether the queue file shows a running job within a minute.
bool job_runs(const fs::path& queue) {
  for (int i = 0; i < 600; ++i) {
    if (fs::exists(queue) && slurp(queue).find("\"running\"") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// A job that runs for minutes: the fixture models (random weights) at
// 256×256×33, 200 steps.
void write_slow_job(const fs::path& file) {
  std::ofstream(file)
      << "{\"prompt\": \"a slow one\", \"seed\": 5, \"width\": 256, \"height\": "
         "256, \"frames\": 33, \"steps\": 200, \"precision\": \"fp32\", \"model\": \""
      << fixture("wan21_dit_tiny.safetensors") << "\", \"vae\": \""
      << fixture("wan21_vae_tiny.safetensors") << "\", \"text_encoder\": \""
      << fixture("umt5_enc_tiny.safetensors") << "\", \"tokenizer\": \""
      << fixture("spm_tiny.model") << "\"}";
}

// Starts the studio (offscreen) with `args`; returns its pid.
pid_t start(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("QT_QPA_PLATFORM", "offscreen", 1);
    std::vector<char*> argv{const_cast<char*>(studio().c_str())};
    static std::vector<std::string> keep;
    keep = args;
    for (auto& a : keep) argv.push_back(a.data());
    argv.push_back(nullptr);
    const auto path = studio();
    ::execv(path.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(Studio, TheQueueSurvivesAKillInTheMiddleOfAJob) {
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out");  // the studio makes no given output folder
  // A slow job: the fixture models (random weights) at 256×256, 200 steps.
  {
    std::ofstream p(dir / "slow.json");
    p << "{\"prompt\": \"a slow one\", \"seed\": 5, \"width\": 256, \"height\": 256, \"frames\": "
         "33,"
      << " \"steps\": 200, \"precision\": \"fp32\","
      << " \"model\": \"" << fixture("wan21_dit_tiny.safetensors") << "\","
      << " \"vae\": \"" << fixture("wan21_vae_tiny.safetensors") << "\","
      << " \"text_encoder\": \"" << fixture("umt5_enc_tiny.safetensors") << "\","
      << " \"tokenizer\": \"" << fixture("spm_tiny.model") << "\"}";
    std::ofstream q(dir / "second.json");
    // Small: after the restart it may start, and closing waits for its step.
    q << "{\"prompt\": \"waits its turn\", \"seed\": 6, \"width\": 64, \"height\": 48, "
         "\"frames\": 9, \"steps\": 2, \"model\": \""
      << fixture("wan21_dit_tiny.safetensors") << "\", \"vae\": \""
      << fixture("wan21_vae_tiny.safetensors") << "\", \"text_encoder\": \""
      << fixture("umt5_enc_tiny.safetensors") << "\", \"tokenizer\": \""
      << fixture("spm_tiny.model") << "\"}";
  }
  const auto data = (dir / "data").string(), out = (dir / "out").string();
  const pid_t pid =
      start({"--data-dir", data, "--output-dir", out, "--queue-preset",
             (dir / "slow.json").string(), "--queue-preset", (dir / "second.json").string()});
  const auto queue = dir / "data" / "queue.json";
  ASSERT_TRUE(job_runs(queue)) << "the job never started";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // mid-sampling
  ::kill(pid, SIGKILL);
  wait_exit(pid);
  EXPECT_NE(slurp(queue).find("\"running\""), std::string::npos);
  // (Its claim on the output may stay: a dead process's, taken over and
  // removed by the next render there.)
  for (const auto& e : fs::directory_iterator(out)) {
    if (e.path().extension() != ".claim") {
      EXPECT_EQ(e.path().extension(), ".json") << "a partial output was left: " << e.path();
    }
  }

  // Restart: the killed job is interrupted (not re-run on its own), the other
  // one still pending or done, both with their presets intact.
  const pid_t again = start({"--data-dir", data, "--output-dir", out, "--exit-after-ms", "300"});
  EXPECT_EQ(wait_exit(again), 0);
  const auto text = slurp(queue);
  EXPECT_NE(text.find("\"interrupted\""), std::string::npos) << text;
  EXPECT_EQ(text.find("\"running\""), std::string::npos) << text;
  EXPECT_NE(text.find("a slow one"), std::string::npos);
  EXPECT_NE(text.find("waits its turn"), std::string::npos);
}

// SIGTERM (a logout, `kill`, a scheduler) stops the studio as closing it
// does: the running job is cancelled, its claim on the output and its
// temporaries removed, and it is kept in the queue as interrupted; the exit
// status is 128 + the signal. An idle studio stops the same way on Ctrl-C.
TEST(Studio, ASigtermCancelsTheJobAndKeepsItInterrupted) {
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out");
  write_slow_job(dir / "slow.json");
  const auto data = (dir / "data").string(), out = (dir / "out").string();
  const pid_t pid = start(
      {"--data-dir", data, "--output-dir", out, "--queue-preset", (dir / "slow.json").string()});
  const auto queue = dir / "data" / "queue.json";
  ASSERT_TRUE(job_runs(queue)) << "the job never started";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // mid-sampling
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid), 128 + SIGTERM);
  const auto text = slurp(queue);
  EXPECT_NE(text.find("\"interrupted\""), std::string::npos) << text;
  EXPECT_NE(text.find("stopped by SIGTERM"), std::string::npos) << text;
  EXPECT_EQ(text.find("\"running\""), std::string::npos) << text;
  for (const auto& e : fs::directory_iterator(out)) ADD_FAILURE() << "left behind: " << e.path();
  EXPECT_FALSE(fs::exists(dir / "data" / "lock"));

  const pid_t idle = start({"--data-dir", data, "--output-dir", out});
  for (int i = 0; i < 600 && !fs::exists(dir / "data" / "lock"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the window is up
  ::kill(idle, SIGINT);
  EXPECT_EQ(wait_exit(idle), 128 + SIGINT);
  EXPECT_EQ(slurp(queue), text);  // nothing ran, nothing changed
}

// The real window on an X server (xvfb-run), the embedded model, screenshots.
// Scripted (--quit-when-idle): a job that fails says why on stderr and makes
// the exit status 1; a seed the CLI would refuse is refused before anything
// runs.
TEST(Studio, AScriptGetsAFailedJobsReasonAndABadSeedIsRefused) {
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out");  // the studio makes no given output folder
  // A DiT cut short is refused when queued (its header is read then, as
  // `kinora render` reads it); a VAE whose tensor does not fit fails when
  // the job runs.
  write_preset_with_a_cut_vae(dir, "p.json");
  const std::string env = "QT_QPA_PLATFORM=offscreen " + studio() + " --data-dir " +
                          (dir / "data").string() + " --output-dir " + (dir / "out").string();
  const auto run = [&](const std::string& args) {
    const int rc =
        std::system((env + " " + args + " > " + (dir / "log.txt").string() + " 2>&1").c_str());
    return WEXITSTATUS(rc);
  };
  EXPECT_EQ(run("--queue-preset " + (dir / "p.json").string() + " --quit-when-idle"), 1);
  const auto log = slurp(dir / "log.txt");
  EXPECT_NE(log.find("kinora-studio: failed: "), std::string::npos) << log;
  EXPECT_NE(log.find("cut.safetensors"), std::string::npos) << log;
  // A data folder that cannot be made (its parent is a file): refused at
  // start, before anything is queued (a queue that cannot be saved later, a
  // full disk, is QueueModel.AQueueThatCannotBeSavedSaysSo).
  std::ofstream(dir / "afile") << "x";
  const std::string no_data =
      "QT_QPA_PLATFORM=offscreen " + studio() + " --data-dir " + (dir / "afile" / "data").string() +
      " --output-dir " + (dir / "out").string() + " --queue-preset " + (dir / "p.json").string() +
      " --quit-when-idle > " + (dir / "log.txt").string() + " 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(no_data.c_str())), 1);
  const auto unsaved = slurp(dir / "log.txt");
  EXPECT_NE(unsaved.find("afile/data: cannot be made"), std::string::npos) << unsaved;
  EXPECT_EQ(unsaved.find("failed"), std::string::npos) << unsaved;
  // A damaged queue with a timed exit: said on stderr, and no dialog waits
  // for a click that never comes.
  fs::create_directories(dir / "data");
  std::ofstream(dir / "data" / "queue.json") << "{\"jobs\":[{";
  const std::string timed = "QT_QPA_PLATFORM=offscreen timeout 60 " + studio() + " --data-dir " +
                            (dir / "data").string() + " --output-dir " + (dir / "out").string() +
                            " --exit-after-ms 500 > " + (dir / "log.txt").string() + " 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(timed.c_str())), 0) << slurp(dir / "log.txt");
  EXPECT_NE(slurp(dir / "log.txt").find("queue.json"), std::string::npos) << slurp(dir / "log.txt");
  for (const char* seed : {"abc", "-5"}) {
    EXPECT_EQ(run(std::string("--prompt fox --seed ") + seed + " --quit-when-idle"), 2) << seed;
    EXPECT_NE(slurp(dir / "log.txt").find("--seed must be an integer"), std::string::npos)
        << slurp(dir / "log.txt");
  }
}

// Under a file-size limit (`ulimit -f`) a write that crosses it fails as on a
// full disk, and the studio is not killed by SIGXFSZ: a script hears that the
// queue and the settings could not be saved, the exit status is 1, the lock
// is removed, and no file is left cut short (the settings as they were).
TEST(Studio, AFileSizeLimitIsSaidAndLeavesNoFileCutShort) {
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out");
  fs::create_directories(dir / "data");
  write_preset_with_a_cut_vae(dir, "p.json");
  const std::string settings =
      "[General]\nlast_preset=\"" + std::string(2000, 'x') + "\"\nlast_seed=7\n";
  std::ofstream(dir / "data" / "settings.ini") << settings;
  // Through a pipe (sh()), which the limit does not cut.
  const auto run = [&](const std::string& args) {
    return kinora::test::sh("cd '" + dir.string() +
                            "' && (ulimit -f 1; QT_QPA_PLATFORM=offscreen timeout 300 " + studio() +
                            " --data-dir data --output-dir out " + args + ")");
  };
  const auto scripted = run("--queue-preset p.json --quit-when-idle");
  EXPECT_EQ(scripted.code, 1) << scripted.out;
  EXPECT_NE(scripted.out.find("queue.json: the queue could not be saved: "), std::string::npos)
      << scripted.out;
  EXPECT_NE(scripted.out.find("File too large"), std::string::npos) << scripted.out;
  EXPECT_NE(scripted.out.find("settings.ini: the settings could not be saved"), std::string::npos)
      << scripted.out;
  EXPECT_EQ(slurp(dir / "data" / "settings.ini"), settings);
  for (const auto& e : fs::directory_iterator(dir / "data"))
    if (e.path().filename() != "settings.ini") ADD_FAILURE() << "left behind: " << e.path();

  const auto timed = run("--exit-after-ms 300");
  EXPECT_EQ(timed.code, 1) << timed.out;
  EXPECT_NE(timed.out.find("settings.ini: the settings could not be saved"), std::string::npos)
      << timed.out;
  EXPECT_EQ(slurp(dir / "data" / "settings.ini"), settings);
  EXPECT_FALSE(fs::exists(dir / "data" / "lock"));
}

TEST(Studio, RendersWithLivePreviewAndPlaysTheResultUnderXvfb) {
  if (std::system("command -v xvfb-run >/dev/null 2>&1") != 0) GTEST_SKIP() << "no xvfb-run";
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out");  // the studio makes no given output folder
  const auto shots = dir / "shots";
  // The embedded model when the checkout has it, else the fixture chain.
  std::string job = " --prompt 'a yellow triangle moving down on a blue background' --seed 11";
  if (!fs::exists(std::string(KINORA_SOURCE_DIR) + "/assets/kinora-tiny-wan-dit.safetensors")) {
    std::ofstream p(dir / "fixture.json");
    p << "{\"prompt\": \"a yellow triangle moving down\", \"seed\": 11, \"width\": 64,"
      << " \"height\": 64, \"frames\": 17, \"steps\": 12, \"precision\": \"fp32\","
      << " \"model\": \"" << fixture("wan21_dit_tiny.safetensors") << "\","
      << " \"vae\": \"" << fixture("wan21_vae_tiny.safetensors") << "\","
      << " \"text_encoder\": \"" << fixture("umt5_enc_tiny.safetensors") << "\","
      << " \"tokenizer\": \"" << fixture("spm_tiny.model") << "\"}";
    job = " --queue-preset " + (dir / "fixture.json").string();
  }
  const std::string cmd = "xvfb-run -a -s '-screen 0 1280x860x24' " + studio() + " --data-dir " +
                          (dir / "data").string() + " --output-dir " + (dir / "out").string() +
                          job + " --screenshots " + shots.string() + " --quit-when-idle > " +
                          (dir / "log.txt").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 0) << slurp(dir / "log.txt");
  EXPECT_TRUE(fs::exists(shots / "studio-sampling.png"));
  EXPECT_TRUE(fs::exists(shots / "studio-player.png"));
  int videos = 0;
  for (const auto& e : fs::directory_iterator(dir / "out"))
    videos += e.path().extension() == ".mp4";
  EXPECT_EQ(videos, 1);
  // Kept for docs/ when asked (KINORA_SCREENSHOTS=folder).
  if (const char* keep = std::getenv("KINORA_SCREENSHOTS"))
    for (const char* n : {"studio-sampling.png", "studio-player.png"})
      fs::copy_file(shots / n, fs::path(keep) / n, fs::copy_options::overwrite_existing);
}

// A FLUX image through the real window: a queued preset naming tiny FLUX,
// T5 and CLIP files renders a PNG, which the viewer shows.
TEST(Studio, RendersAFluxImageFromAPresetUnderXvfb) {
  if (std::system("command -v xvfb-run >/dev/null 2>&1") != 0) GTEST_SKIP() << "no xvfb-run";
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out");  // the studio makes no given output folder
  const auto flux = kinora::test::write_tiny_flux(dir);
  const auto tok = kinora::test::write_clip_tokenizer(dir / "clip_tokenizer");
  {
    std::ofstream p(dir / "flux.json");
    p << "{\"prompt\": \"a red fox\", \"seed\": 3, \"family\": \"flux\", \"width\": 64,"
      << " \"height\": 48, \"frames\": 1, \"steps\": 2, \"sampler\": \"flow_euler\","
      << " \"guidance\": 3.5, \"model\": \"" << flux.string() << "\","
      << " \"vae\": \"" << fixture("flux1_ae_tiny.safetensors") << "\","
      << " \"text_encoder\": \"" << fixture("t5_enc_tiny.safetensors") << "\","
      << " \"tokenizer\": \"" << fixture("spm_tiny.model") << "\","
      << " \"clip\": \"" << fixture("clip_l_tiny.safetensors") << "\","
      << " \"clip_tokenizer\": \"" << tok.string() << "\"}";
  }
  const auto shots = dir / "shots";
  const std::string cmd = "xvfb-run -a -s '-screen 0 1280x860x24' " + studio() + " --data-dir " +
                          (dir / "data").string() + " --output-dir " + (dir / "out").string() +
                          " --queue-preset " + (dir / "flux.json").string() + " --screenshots " +
                          shots.string() + " --quit-when-idle > " + (dir / "log.txt").string() +
                          " 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 0) << slurp(dir / "log.txt");
  int images = 0;
  for (const auto& e : fs::directory_iterator(dir / "out"))
    images += e.path().extension() == ".png";
  EXPECT_EQ(images, 1) << slurp(dir / "log.txt");
  EXPECT_TRUE(fs::exists(shots / "studio-player.png"));
}

// The embedded model, where the checkout has it: a 64×64×17 render in seconds.
bool have_embedded_model() {
  return fs::exists(std::string(KINORA_SOURCE_DIR) + "/assets/kinora-tiny-wan-dit.safetensors");
}
const char* const kEmbeddedPrompt = " --prompt 'a red circle moving left on a blue background'";

// `args` for the studio (offscreen), run in `cwd`; its exit status, and what it
// said in `log`.
int run_studio(const fs::path& cwd, const std::string& args, const fs::path& log,
               const std::string& env = "") {
  const std::string cmd = "cd '" + cwd.string() + "' && env " + env + " QT_QPA_PLATFORM=offscreen" +
                          " timeout 300 " + studio() + " " + args + " > '" + log.string() +
                          "' 2>&1";
  return WEXITSTATUS(std::system(cmd.c_str()));
}

// A second studio on a data folder that one is using says so and exits 1,
// without marking the first one's running job interrupted or adding its own.
// What a studio killed while writing its queue or settings left behind goes
// when a studio next starts on that data folder; a user's files stay.
TEST(Studio, AKilledStudiosTemporariesGoAtTheNextStart) {
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "data");
  // This host's tag, as kinora names temporaries (.x.tmp-TAG-PID), and a PID
  // past any live one.
  const std::string ours = kinora::temp_beside("x").filename().string();
  const std::string tag = ours.substr(7, ours.rfind('-') - 7);
  const std::string left[] = {".settings.ini.tmp-" + tag + "-4194303.ini",
                              ".queue.json.tmp-" + tag + "-4194303.json"};
  for (const auto& name : left) std::ofstream(dir / "data" / name) << "cut short";
  std::ofstream(dir / "data" / "notes.tmp-4194303.ini") << "a user's";
  const int rc = run_studio(dir, "--data-dir data --exit-after-ms 300", dir / "log.txt");
  EXPECT_EQ(rc, 0) << slurp(dir / "log.txt");
  for (const auto& name : left) EXPECT_FALSE(fs::exists(dir / "data" / name)) << name;
  EXPECT_EQ(slurp(dir / "data" / "notes.tmp-4194303.ini"), "a user's");
  EXPECT_TRUE(fs::exists(dir / "data" / "settings.ini"));
}

TEST(Studio, ASecondStudioOnOneDataFolderIsRefusedAndLeavesTheQueueAlone) {
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out");
  write_slow_job(dir / "slow.json");
  const auto data = (dir / "data").string(), out = (dir / "out").string();
  const pid_t first = start(
      {"--data-dir", data, "--output-dir", out, "--queue-preset", (dir / "slow.json").string()});
  const auto queue = dir / "data" / "queue.json";
  ASSERT_TRUE(job_runs(queue)) << "the job never started";
  const auto before = slurp(queue);
  const int rc = run_studio(
      dir,
      "--data-dir " + data + " --output-dir " + out + " --prompt 'a second one' --quit-when-idle",
      dir / "log.txt");
  ::kill(first, SIGKILL);
  wait_exit(first);
  EXPECT_EQ(rc, 1);
  const auto log = slurp(dir / "log.txt");
  EXPECT_NE(log.find("in use by another Kinora Studio"), std::string::npos) << log;
  EXPECT_NE(log.find(data), std::string::npos) << log;
  EXPECT_EQ(slurp(queue), before);
}

// Relative folders are kept absolute in the queue (a restart from elsewhere
// finds the same files); a given output folder that does not exist is
// refused, not made; a remembered one that is gone is said and the default
// used, the only folder the studio makes.
TEST(Studio, FoldersAreAbsoluteAndOnlyTheDefaultOutputFolderIsMade) {
  if (!have_embedded_model()) GTEST_SKIP() << "no embedded model in this checkout";
  kinora::test::TempDir tmp;
  const auto dir = fs::absolute(tmp.path());
  fs::create_directories(dir / "out");
  const std::string home = "-u XDG_CONFIG_HOME HOME='" + (dir / "home").string() + "'";
  EXPECT_EQ(run_studio(dir,
                       "--data-dir data --output-dir out" + std::string(kEmbeddedPrompt) +
                           " --quit-when-idle",
                       dir / "log.txt", home),
            0)
      << slurp(dir / "log.txt");
  const auto queue = slurp(dir / "data" / "queue.json");
  EXPECT_NE(queue.find("\"" + (dir / "out").string() + "/kinora-"), std::string::npos) << queue;
  EXPECT_EQ(queue.find("\"out/"), std::string::npos) << queue;

  EXPECT_EQ(run_studio(dir, "--data-dir data --output-dir a/b/c --exit-after-ms 100",
                       dir / "log.txt", home),
            1);
  EXPECT_NE(slurp(dir / "log.txt").find((dir / "a" / "b" / "c").string()), std::string::npos)
      << slurp(dir / "log.txt");
  EXPECT_FALSE(fs::exists(dir / "a"));

  std::ofstream(dir / "data" / "settings.ini")
      << "[General]\noutput_dir=" << (dir / "gone").string() << "\n";
  EXPECT_EQ(run_studio(dir, "--data-dir data --exit-after-ms 300", dir / "log.txt", home), 0)
      << slurp(dir / "log.txt");
  EXPECT_NE(slurp(dir / "log.txt").find((dir / "gone").string() + " (from the settings)"),
            std::string::npos)
      << slurp(dir / "log.txt");
  EXPECT_FALSE(fs::exists(dir / "gone"));
  EXPECT_TRUE(fs::is_directory(dir / "home" / "Videos" / "Kinora"));

  // A models folder that is not there, and a data folder that is a file:
  // refused at start, before anything is queued or rendered.
  std::ofstream(dir / "notes.txt") << "mine";
  for (const auto& [args, said] : std::vector<std::pair<std::string, std::string>>{
           {"--data-dir data --models-dir nomodels", "nomodels: no such folder"},
           {"--data-dir notes.txt",
            "--data-dir " + (dir / "notes.txt").string() + ": not a folder"},
           {"--data-dir /proc/none/data", "--data-dir /proc/none/data: cannot be made"}}) {
    EXPECT_EQ(run_studio(dir, args + " --output-dir out" + kEmbeddedPrompt + " --quit-when-idle",
                         dir / "log.txt", home),
              1)
        << args;
    EXPECT_NE(slurp(dir / "log.txt").find(said), std::string::npos) << slurp(dir / "log.txt");
  }
  EXPECT_EQ(slurp(dir / "notes.txt"), "mine");
}

// A lock that names no process (emptied or written over by hand) is no
// studio's once it is a few seconds old: the next studio takes it; a fresh
// one is refused, saying what it is.
TEST(Studio, ALockThatNamesNoProcessIsTakenOverWhenOld) {
  kinora::test::TempDir tmp;
  const auto dir = fs::absolute(tmp.path());
  fs::create_directories(dir / "data");
  fs::create_directories(dir / "out");
  std::ofstream(dir / "data" / "lock") << "garbage";
  EXPECT_EQ(
      run_studio(dir, "--data-dir data --output-dir out --exit-after-ms 100", dir / "log.txt"), 1);
  EXPECT_NE(slurp(dir / "log.txt").find("lock names no process"), std::string::npos)
      << slurp(dir / "log.txt");
  fs::last_write_time(dir / "data" / "lock",
                      fs::file_time_type::clock::now() - std::chrono::minutes(10));
  EXPECT_EQ(
      run_studio(dir, "--data-dir data --output-dir out --exit-after-ms 100", dir / "log.txt"), 0)
      << slurp(dir / "log.txt");
  // A lock that is a folder: no studio can keep a queue there; said.
  fs::remove(dir / "data" / "lock");
  fs::create_directories(dir / "data" / "lock");
  EXPECT_EQ(
      run_studio(dir, "--data-dir data --output-dir out --exit-after-ms 100", dir / "log.txt"), 1);
  EXPECT_NE(slurp(dir / "log.txt").find("lock cannot be made (it is a folder)"), std::string::npos)
      << slurp(dir / "log.txt");
}

// A LoRA named in a --prompt is looked up in --models-dir's loras/ as a
// queued preset's and `kinora generate --models-dir`'s are; the embedded
// model's own LoRA is found there or, when not, in its own folder.
TEST(Studio, APromptsLoraTagsAreFoundInTheModelsFolder) {
  if (!have_embedded_model()) GTEST_SKIP() << "no embedded model in this checkout";
  kinora::test::TempDir tmp;
  const auto dir = fs::absolute(tmp.path());
  for (const char* d : {"out", "models/loras", "models/diffusion_models"})
    fs::create_directories(dir / d);
  fs::copy_file(fs::path(KINORA_SOURCE_DIR) / "assets" / "loras" / "kinora-tiny-big.safetensors",
                dir / "models" / "loras" / "mybig.safetensors");
  const std::string prompt =
      " --prompt 'a big red circle moving left on a blue background <lora:mybig:0.6> "
      "<lora:kinora-tiny-big:0.2>'";
  EXPECT_EQ(run_studio(dir,
                       "--data-dir data --models-dir models --output-dir out" + prompt +
                           " --quit-when-idle",
                       dir / "log.txt"),
            0)
      << slurp(dir / "log.txt");
  const auto queue = slurp(dir / "data" / "queue.json");
  EXPECT_NE(queue.find("\"status\": \"done\""), std::string::npos) << queue;
  // Each LoRA's report line: said to the script, kept on the job.
  const auto log = slurp(dir / "log.txt");
  EXPECT_NE(log.find("LoRA mybig.safetensors"), std::string::npos) << log;
  EXPECT_NE(log.find("LoRA kinora-tiny-big.safetensors"), std::string::npos) << log;
  EXPECT_NE(queue.find("LoRA mybig.safetensors"), std::string::npos) << queue;
  EXPECT_NE(queue.find("\"models_dir\": \"" + (dir / "models").string() + "\""), std::string::npos)
      << queue;
}

// The player's screenshot is taken when a render finishes and plays,
// whether a failed job or a timed exit ends the run.
TEST(Studio, ThePlayerShotComesWhateverEndsTheRun) {
  if (!have_embedded_model()) GTEST_SKIP() << "no embedded model in this checkout";
  kinora::test::TempDir tmp;
  const auto dir = fs::absolute(tmp.path());
  fs::create_directories(dir / "out");

  // A job that fails (a VAE whose tensor does not fit) before one that renders.
  write_preset_with_a_cut_vae(dir, "bad.json");
  EXPECT_EQ(run_studio(dir,
                       "--data-dir data --output-dir out --queue-preset bad.json" +
                           std::string(kEmbeddedPrompt) + " --screenshots shots --quit-when-idle",
                       dir / "log.txt"),
            1)
      << slurp(dir / "log.txt");
  EXPECT_TRUE(fs::exists(dir / "shots" / "studio-player.png")) << slurp(dir / "log.txt");

  // A timed exit well after the render: its player shot too.
  fs::remove_all(dir / "out");
  fs::create_directories(dir / "out");
  EXPECT_EQ(run_studio(dir,
                       "--data-dir data2 --output-dir out" + std::string(kEmbeddedPrompt) +
                           " --screenshots shots2 --exit-after-ms 12000",
                       dir / "log.txt"),
            0)
      << slurp(dir / "log.txt");
  bool rendered = false;
  for (const auto& e : fs::directory_iterator(dir / "out"))
    rendered |= e.path().extension() == ".mp4";
  if (rendered) {  // on a machine that renders it within the 12 s
    EXPECT_TRUE(fs::exists(dir / "shots2" / "studio-player.png")) << slurp(dir / "log.txt");
  }
}

// A job whose output name is free but whose parameters file's name is taken
// (a z.mp4.json alone) renders to a free name, and the note says which file
// is there.
TEST(Studio, ARenamedJobSaysWhichFileIsThere) {
  kinora::test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "out2");
  write_preset_with_a_cut_vae(dir, "cut.json");
  std::ofstream(dir / "z.json") << "{\"output\": \"z.mp4\", " << slurp(dir / "cut.json").substr(1);
  std::ofstream(dir / "out2" / "z.mp4.json") << "my notes";
  EXPECT_EQ(
      run_studio(dir, "--data-dir data --output-dir out2 --queue-preset z.json --quit-when-idle",
                 dir / "log.txt"),
      1);  // the cut VAE
  const auto log = slurp(dir / "log.txt");
  EXPECT_NE(log.find((dir / "out2" / "z.mp4.json").string() +
                     " exists (the name of this job's parameters file); this job renders to " +
                     (dir / "out2" / "z-2.mp4").string()),
            std::string::npos)
      << log;
  EXPECT_EQ(slurp(dir / "out2" / "z.mp4.json"), "my notes");
}

}  // namespace
