#pragma once
/// \file io/safetensors.hpp
/// A strict reader and a writer for the safetensors format: this header includes them all
/// (io/dtype.hpp: dtypes and 16-bit float conversions; io/safetensors_reader.hpp: SafeTensors;
/// io/safetensors_writer.hpp: SafeTensorsWriter; io/bytes.hpp: little-endian byte helpers).
///
/// Layout: an 8-byte little-endian u64 N, then N bytes of JSON header, then the data buffer:
/// \code
///   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
///    "__metadata__": {"key": "value"}}
/// \endcode
/// Offsets are relative to the start of the data buffer. The reader rejects anything the format does
/// not allow (overlaps, gaps, trailing bytes, sizes that do not match shapes, ...) with a FormatError
/// that starts with the file's name; it never reads outside the buffer and never loads unaligned.
///
/// \code
///   auto st = ttt::io::SafeTensors::load("model.safetensors");
///   std::vector<float> w = st.read_float("model.embed_tokens.weight", {97, 64});
///
///   ttt::io::SafeTensorsWriter out;
///   out.add("w", {97, 64}, w);
///   out.save("copy.safetensors");
/// \endcode
#include "bytes.hpp"
#include "dtype.hpp"
#include "safetensors_reader.hpp"
#include "safetensors_writer.hpp"
