// F16 / BF16 conversions: known bit patterns, every 16-bit pattern against an independent formula,
// and round-to-nearest-even on the way back.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <doctest/doctest.h>

#include "ttt/io/safetensors.hpp"

namespace test_half {

using ttt::io::bf16_to_float;
using ttt::io::float_to_bf16;
using ttt::io::float_to_half;
using ttt::io::half_to_float;

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

/// binary16 value by the textbook formula, in double.
double half_by_formula(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double sign = s ? -1.0 : 1.0;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  if (e == 0) return sign * std::ldexp(double(m), -24);
  return sign * std::ldexp(double(1024 + m), e - 25);
}

TEST_CASE("half_to_float: known bit patterns") {
  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0xC000) == -2.0f);
  CHECK(half_to_float(0x3555) == 0.333251953125f);
  CHECK(half_to_float(0x7BFF) == 65504.0f);
  CHECK(half_to_float(0x0400) == 0x1p-14f);              // smallest normal
  CHECK(half_to_float(0x0001) == 0x1p-24f);              // smallest subnormal
  CHECK(half_to_float(0x03FF) == 1023.0f * 0x1p-24f);    // largest subnormal
  CHECK(half_to_float(0x8001) == -0x1p-24f);
  CHECK(bits(half_to_float(0x0000)) == 0x00000000u);
  CHECK(bits(half_to_float(0x8000)) == 0x80000000u);     // -0 keeps its sign
  CHECK(half_to_float(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(half_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(half_to_float(0x7E00)));
  CHECK(bits(half_to_float(0x7C01)) == 0x7F802000u);     // NaN payload kept
}

TEST_CASE("half_to_float: all 65536 patterns match the formula and round-trip") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t x = static_cast<uint16_t>(h);
    const float f = half_to_float(x);
    const double want = half_by_formula(x);
    CAPTURE(h);
    if (std::isnan(want)) {
      CHECK(std::isnan(f));
      CHECK(std::isnan(half_to_float(float_to_half(f))));
    } else {
      CHECK(double(f) == want);
      CHECK(std::signbit(f) == bool(x & 0x8000));
      CHECK(float_to_half(f) == x);
    }
  }
}

TEST_CASE("float_to_half: rounding to nearest even") {
  CHECK(float_to_half(1.0f) == 0x3C00);
  CHECK(float_to_half(1.0f + 0x1p-11f) == 0x3C00);        // tie -> even (down)
  CHECK(float_to_half(1.0f + 3 * 0x1p-11f) == 0x3C02);    // tie -> even (up)
  CHECK(float_to_half(1.0f + 0x1p-11f + 0x1p-20f) == 0x3C01);
  CHECK(float_to_half(65504.0f) == 0x7BFF);
  CHECK(float_to_half(65519.99f) == 0x7BFF);
  CHECK(float_to_half(65520.0f) == 0x7C00);                // halfway to 2^16: ties to inf
  CHECK(float_to_half(1e10f) == 0x7C00);
  CHECK(float_to_half(-1e10f) == 0xFC00);
  CHECK(float_to_half(0x1p-24f) == 0x0001);
  CHECK(float_to_half(0x1p-25f) == 0x0000);                // tie -> even zero
  CHECK(float_to_half(0x1.000002p-25f) == 0x0001);
  CHECK(float_to_half(3 * 0x1p-25f) == 0x0002);            // 1.5 ulp: tie -> 2
  CHECK(float_to_half(0x1p-14f - 0x1p-25f) == 0x0400);     // tie between 0x3FF and 0x400 -> even
  CHECK(float_to_half(1e-30f) == 0x0000);
  CHECK(float_to_half(-1e-30f) == 0x8000);
  CHECK(float_to_half(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK((float_to_half(std::numeric_limits<float>::quiet_NaN()) & 0x7FFF) > 0x7C00);
}

TEST_CASE("float_to_half picks the nearest half for random floats") {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> mag(-30.0f, 17.0f);
  for (int i = 0; i < 20000; ++i) {
    const float x = std::exp2(mag(rng)) * (i % 2 ? -1.0f : 1.0f);
    const uint16_t h = float_to_half(x);
    CAPTURE(x);
    if (std::fabs(x) >= 65520.0f) {
      CHECK((h & 0x7FFF) == 0x7C00);
      continue;
    }
    const double err = std::fabs(double(half_to_float(h)) - x);
    // Neighbours in magnitude, same sign.
    const uint16_t mag_bits = h & 0x7FFF, sign = h & 0x8000;
    if (mag_bits < 0x7BFF) CHECK(err <= std::fabs(double(half_to_float(uint16_t(sign | (mag_bits + 1)))) - x));
    if (mag_bits > 0) CHECK(err <= std::fabs(double(half_to_float(uint16_t(sign | (mag_bits - 1)))) - x));
  }
}

TEST_CASE("bf16 conversions") {
  CHECK(bf16_to_float(0x3F80) == 1.0f);
  CHECK(bf16_to_float(0xC000) == -2.0f);
  CHECK(bf16_to_float(0x4049) == 3.140625f);
  CHECK(bf16_to_float(0x0001) == 0x1p-133f);  // a float subnormal, exact
  CHECK(bf16_to_float(0x7F7F) == 0x1.FEp127f);
  CHECK(bf16_to_float(0x7F80) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bf16_to_float(0x7FC0)));
  CHECK(bits(bf16_to_float(0x8000)) == 0x80000000u);

  CHECK(float_to_bf16(1.0f) == 0x3F80);
  CHECK(float_to_bf16(3.14159265f) == 0x4049);
  CHECK(float_to_bf16(std::bit_cast<float>(0x3F808000u)) == 0x3F80);  // tie -> even (down)
  CHECK(float_to_bf16(std::bit_cast<float>(0x3F818000u)) == 0x3F82);  // tie -> even (up)
  CHECK(float_to_bf16(std::bit_cast<float>(0x3F808001u)) == 0x3F81);
  CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds to inf
  CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
  CHECK(float_to_bf16(std::bit_cast<float>(0x00008000u)) == 0x0000);   // subnormal tie -> even
  CHECK(float_to_bf16(std::bit_cast<float>(0x00018000u)) == 0x0002);
  const uint16_t nan = float_to_bf16(std::bit_cast<float>(0x7F800001u));  // payload only in the low bits
  CHECK(std::isnan(bf16_to_float(nan)));

  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t x = static_cast<uint16_t>(b);
    const float f = bf16_to_float(x);
    CAPTURE(b);
    CHECK(bits(f) == (b << 16));
    if (std::isnan(f)) CHECK(std::isnan(bf16_to_float(float_to_bf16(f))));
    else CHECK(float_to_bf16(f) == x);
  }
}

}  // namespace test_half
