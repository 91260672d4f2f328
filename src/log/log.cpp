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

namespace {

constexpr bool bare_ok(unsigned char c) noexcept
{
    return c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
}

}  // namespace

std::string field(std::string_view in, std::size_t cap)
{
    static constexpr char hex[] = "0123456789abcdef";
    bool const cut = in.size() > cap;
    if (cut) in = in.substr(0, cap);
    bool bare = !in.empty();
    for (char const ch : in) bare = bare && bare_ok(static_cast<unsigned char>(ch));
    if (bare) return cut ? std::string(in) + "..." : std::string(in);

    std::string out;
    out.reserve(in.size() + 8);
    out += '"';
    for (char const ch : in) {
        auto const c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c == ' ' || bare_ok(c)) {
            out += ch;
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
    if (cut) out += "...";
    out += '"';
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
