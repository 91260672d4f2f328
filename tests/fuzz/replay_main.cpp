// Without libFuzzer (the g++ build), each fuzz target links this driver: it
// runs every seed in the corpus directory, then mutates seeds at random for
// the given number of seconds. A quick smoke in ctest; the real, coverage-
// guided runs use the `fuzz` preset (clang, -fsanitize=fuzzer): tests/fuzz/README.md.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size);

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s CORPUS_DIR [SECONDS]\n", argv[0]);
        return 2;
    }
    double const seconds = argc > 2 ? std::atof(argv[2]) : 2.0;
    std::vector<std::string> seeds;
    for (auto const& e : std::filesystem::directory_iterator(argv[1])) {
        std::ifstream f(e.path(), std::ios::binary);
        seeds.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    for (auto const& s : seeds) LLVMFuzzerTestOneInput(reinterpret_cast<std::uint8_t const*>(s.data()), s.size());
    if (seeds.empty()) seeds.emplace_back();
    std::mt19937_64 rng(0x5eed);  // fixed: a failure reproduces
    auto const until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    std::size_t runs = 0;
    static char const interesting[] = "\r\n.\0:<>@[]/=\" \\%{}";
    while (std::chrono::steady_clock::now() < until) {
        std::string s = seeds[rng() % seeds.size()];
        for (int k = 0, n = 1 + static_cast<int>(rng() % 8); k < n; ++k) {
            std::size_t const pos = s.empty() ? 0 : rng() % (s.size() + 1);
            switch (rng() % 5) {
            case 0: s.insert(pos, 1, static_cast<char>(rng())); break;
            case 1: s.insert(pos, 1, interesting[rng() % (sizeof interesting - 1)]); break;
            case 2: if (pos < s.size()) s.erase(pos, 1 + rng() % 4); break;
            case 3: if (pos < s.size()) s[pos] = static_cast<char>(rng()); break;
            case 4: if (!s.empty()) s.insert(pos, s.substr(rng() % s.size(), 1 + rng() % 16)); break;
            }
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<std::uint8_t const*>(s.data()), s.size());
        ++runs;
    }
    std::printf("%zu seeds, %zu mutated runs, no failure\n", seeds.size() - (seeds.size() == 1 && seeds[0].empty()), runs);
    return 0;
}
