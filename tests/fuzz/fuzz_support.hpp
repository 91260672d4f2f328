#pragma once
// Shared by the fuzz targets: a check that aborts (so libFuzzer and the replay
// driver both report it) and a cursor that splits the input into parts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define POPGATE_FUZZ_CHECK(cond)                                                          \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            std::abort();                                                                 \
        }                                                                                 \
    } while (0)

inline std::string_view as_view(std::uint8_t const* data, std::size_t size)
{
    return {reinterpret_cast<char const*>(data), size};
}
