// The byte corpus: files and directories, EOS between documents, the validation split, seeded
// windows whose generator state round-trips, and errors that name the path.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <ttt/train/data.hpp>

using namespace ttt;
using namespace ttt::train;
namespace test_data {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("ttt_test_data_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}
void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}
std::vector<int64_t> ids(const std::string& s) { return ByteTokenizer().encode(s); }

TEST_CASE("load_byte_corpus: a file; a directory recursively, sorted, EOS between non-empty documents") {
  const fs::path d = scratch("dir");
  write(d / "one.txt", "ab");
  CHECK(load_byte_corpus(d / "one.txt") == ids("ab"));
  write(d / "b" / "z.txt", "cd");
  write(d / "a.txt", "\xff");
  write(d / "b" / "empty.txt", "");
  write(d / "c" / "deep" / "x", "e");
  std::vector<int64_t> want{255, ByteTokenizer::eos, 'c', 'd', ByteTokenizer::eos, 'e', ByteTokenizer::eos, 'a', 'b'};
  CHECK(load_byte_corpus(d) == want);  // a.txt, b/empty.txt (skipped), b/z.txt, c/deep/x, one.txt
  fs::remove_all(d);
}

TEST_CASE("load_byte_corpus: errors name the path") {
  const fs::path d = scratch("err");
  auto msg = [](const fs::path& p) {
    try {
      load_byte_corpus(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(msg(d / "missing").find((d / "missing").string() + ": no such file") != std::string::npos);
  write(d / "empty.txt", "");
  CHECK(msg(d / "empty.txt").find("no data") != std::string::npos);
  fs::create_directories(d / "emptydir");
  CHECK(msg(d / "emptydir").find((d / "emptydir").string()) != std::string::npos);
  CHECK(msg(d / "emptydir").find("no data") != std::string::npos);
  fs::remove_all(d);
}

TEST_CASE("TextData: split, window shape, determinism, generator state round trip") {
  std::vector<int64_t> t(1000);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int64_t(i % 256);
  TextData d(t, 16, 0.1, 42);
  CHECK(d.train_tokens().size() == 900);
  CHECK(d.val_tokens().size() == 100);
  CHECK(d.val_tokens().front() == t[900]);
  const auto vw = d.val_windows(3);
  REQUIRE(vw.size() == 3);
  CHECK(vw[0].size() == 17);
  CHECK(vw[1].front() == vw[0].back());  // consecutive windows share one token
  CHECK(d.val_windows(0).size() == 6);   // (100 - 1) / 16
  TextData e(t, 16, 0.1, 42), f(t, 16, 0.1, 43);
  const auto b1 = d.sample(4);
  CHECK(b1 == e.sample(4));
  CHECK(b1 != f.sample(4));
  for (const auto& w : b1) {
    REQUIRE(w.size() == 17);
    CHECK(w[16] == (w[0] + 16) % 256);  // a contiguous window...
    CHECK(w[0] + 16 < 900);             // ...of the training split
  }
  const std::string state = d.rng_state();
  const auto next = d.sample(5);
  TextData g(t, 16, 0.1, 7);
  g.set_rng_state(state);
  CHECK(g.sample(5) == next);
  CHECK_THROWS_AS(g.set_rng_state("garbage"), FormatError);
  CHECK(TextData(t, 16, 0.0, 1).val_windows(4).empty());
}

TEST_CASE("TextData: too little data for seq_len, or for the validation split") {
  const std::vector<int64_t> t(100, 7);
  CHECK_NOTHROW(TextData(t, 99, 0.0, 0));
  CHECK_THROWS_WITH_AS(TextData(t, 100, 0.0, 0, "corpus.txt"),
                       doctest::Contains("corpus.txt: 100 tokens is too short for seq_len 100"), Error);
  CHECK_THROWS_WITH_AS(TextData(t, 95, 0.1, 0, "c"), doctest::Contains("90 after holding out 10 for validation) is too short for seq_len 95"), Error);
  CHECK_THROWS_WITH_AS(TextData(t, 20, 0.1, 0, "c"), doctest::Contains("validation split (10 tokens)"), Error);
  CHECK_THROWS_AS(TextData(t, 0, 0.0, 0), Error);
  CHECK_THROWS_AS(TextData(t, 8, 1.0, 0), Error);
}

}  // namespace test_data
