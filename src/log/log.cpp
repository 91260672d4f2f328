#include "popgate/log/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <random>

namespace popgate::log {

void setup(std::string_view level, std::string const& file)
{
    std::shared_ptr<spdlog::logger> logger;
    if (file.empty())
        logger = std::make_shared<spdlog::logger>("popgate", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    else
        logger = std::make_shared<spdlog::logger>(
            "popgate", std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, false));
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
    logger->set_level(spdlog::level::from_str(std::string(level)));
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(std::move(logger));
}

std::string escape(std::string_view in, std::size_t cap)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(std::min(in.size(), cap) + 8);
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (out.size() >= cap) {
            out += "...";
            break;
        }
        auto const c = static_cast<unsigned char>(in[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
    return out;
}

std::string new_session_id()
{
    static std::atomic<std::uint32_t> counter{std::random_device{}()};
    // A multiplicative hash spreads consecutive ids so they read as distinct.
    std::uint32_t const v = counter.fetch_add(1, std::memory_order_relaxed) * 2654435761u;
    static constexpr char hex[] = "0123456789abcdef";
    std::string s(8, '0');
    for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = hex[(v >> (28 - 4 * i)) & 0xf];
    return s;
}

}  // namespace popgate::log
