// libFuzzer target: SafeTensors::parse on arbitrary bytes.
// A ttt::Error is the expected answer to a bad file; any other exception, a sanitizer report, or
// a broken invariant of an accepted file is a finding. Accepted files must survive a rewrite
// through SafeTensorsWriter unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "ttt/io/safetensors.hpp"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: invariant broken: %s\n", what);
  std::abort();
}

bool is_float(ttt::io::DType d) {
  using ttt::io::DType;
  return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64;
}
bool is_int(ttt::io::DType d) {
  using ttt::io::DType;
  return d == DType::I64 || d == DType::I32 || d == DType::I16 || d == DType::I8 || d == DType::U8;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ttt::io::SafeTensors;
  std::string bytes(reinterpret_cast<const char*>(data), size);
  std::optional<SafeTensors> parsed;
  try {
    parsed.emplace(SafeTensors::parse(std::move(bytes), "fuzz.safetensors"));
  } catch (const ttt::Error&) {
    return 0;  // rejected cleanly
  }
  const SafeTensors& st = *parsed;

  // Everything below runs on an accepted file and must not throw (except the wrong-dtype reads).
  uint64_t covered = 0;
  ttt::io::SafeTensorsWriter w;
  for (const std::string& name : st.names()) {
    const ttt::io::TensorInfo& t = st.info(name);
    if (t.name != name) finding("info().name differs from the key");
    if (t.nbytes() != uint64_t(t.numel()) * ttt::io::dtype_size(t.dtype)) finding("byte size != numel * dtype size");
    if (st.raw(name).size() != t.nbytes()) finding("raw() size != nbytes");
    covered += t.nbytes();
    if (is_float(t.dtype) && st.read_float(name, t.shape).size() != size_t(t.numel())) finding("read_float size");
    if (is_int(t.dtype) && st.read_int(name, t.shape).size() != size_t(t.numel())) finding("read_int size");
    try {
      if (is_float(t.dtype)) (void)st.read_int(name);
      else (void)st.read_float(name);
      finding("a read with the wrong dtype did not throw");
    } catch (const ttt::FormatError&) {
    }
    w.add_raw(name, t.dtype, t.shape, st.raw(name));
  }
  for (const auto& [k, v] : st.metadata()) w.set_metadata(k, v);

  // The data buffer is exactly the tensors: header + tensors == file.
  const uint64_t header_len = ttt::io::detail::load_le<uint64_t>(reinterpret_cast<const char*>(data));
  if (8 + header_len + covered != size) finding("tensors do not cover the data buffer exactly");

  const SafeTensors again = SafeTensors::parse(w.serialize(), "rewritten.safetensors");
  if (again.names() != st.names()) finding("rewrite changed the tensor names");
  if (again.metadata() != st.metadata()) finding("rewrite changed the metadata");
  for (const std::string& name : st.names()) {
    const auto &a = st.info(name), &b = again.info(name);
    if (a.dtype != b.dtype || a.shape != b.shape || st.raw(name) != again.raw(name))
      finding("rewrite changed a tensor");
  }
  return 0;
}
