#pragma once
// A fresh directory per unit test, removed with everything in it afterwards.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <system_error>

namespace popgate::test {

struct temp_dir {
    std::filesystem::path path;
    explicit temp_dir(std::string const& tag = "unit")
    {
        static std::atomic<unsigned> n{0};
        auto const stamp = std::chrono::steady_clock::now().time_since_epoch().count();
        path = std::filesystem::temp_directory_path() /
               ("popgate-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(stamp) + "-" +
                std::to_string(n++));
        std::filesystem::create_directory(path);
    }
    ~temp_dir()
    {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    temp_dir(temp_dir const&) = delete;
    temp_dir& operator=(temp_dir const&) = delete;
};

}  // namespace popgate::test
