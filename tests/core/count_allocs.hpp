#pragma once
// Counts every call into the C allocator of the process (Eigen allocates with malloc, not operator
// new) by interposing glibc's malloc family: `g_allocs` is the running count. It DEFINES those
// functions, so include it in exactly one translation unit of a test program.
#include <atomic>
#include <cstddef>

static std::atomic<long> g_allocs{0};

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* malloc(std::size_t n) {
  ++g_allocs;
  return __libc_malloc(n);
}
void* calloc(std::size_t a, std::size_t b) {
  ++g_allocs;
  return __libc_calloc(a, b);
}
void* realloc(void* p, std::size_t n) {
  ++g_allocs;
  return __libc_realloc(p, n);
}
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  ++g_allocs;
  *out = __libc_memalign(align, n);
  return *out ? 0 : 12;
}
void* aligned_alloc(std::size_t align, std::size_t n) {
  ++g_allocs;
  return __libc_memalign(align, n);
}
}
