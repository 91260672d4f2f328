#include "popgate/log/log.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>

namespace popgate::log {
namespace {

// Appends to `path`, never through a symlink. A file made here is 0640, like
// the one the daemon prepares at start, whatever the umask (077 once
// running); one that exists (made by logrotate's `create`) keeps its mode.
std::FILE* open_log(std::string const& path, std::string& why)
{
    constexpr int flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW;
    int fd = ::open(path.c_str(), flags | O_CREAT | O_EXCL, 0640);
    if (fd >= 0) {
        (void)::fchmod(fd, 0640);  // best effort: failing, the file stays 0600, stricter
    } else if (errno == EEXIST) {
        fd = ::open(path.c_str(), flags);
    }
    if (fd < 0) {
        why = path + ": " + std::strerror(errno);
        return nullptr;
    }
    std::FILE* f = ::fdopen(fd, "a");
    if (!f) {
        why = path + ": " + std::strerror(errno);
        ::close(fd);
    }
    return f;
}

// A file sink that can open its path again. spdlog's basic_file_sink cannot:
// after logrotate (or `mv`) it would write into the renamed file for ever.
class reopenable_file_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    reopenable_file_sink(std::string path, int opened) : path_(std::move(path))
    {
        std::string why;
        file_ = opened >= 0 ? ::fdopen(opened, "a") : open_log(path_, why);
        if (!file_ && opened >= 0) {
            why = path_ + ": " + std::strerror(errno);
            ::close(opened);
        }
        if (!file_) throw std::runtime_error("log.file: cannot open " + why);
    }
    ~reopenable_file_sink() override { std::fclose(file_); }
    reopenable_file_sink(reopenable_file_sink const&) = delete;
    reopenable_file_sink& operator=(reopenable_file_sink const&) = delete;

    // The new file is opened before the old one is closed: if it cannot be,
    // logging goes on where it was.
    bool reopen(std::string& why)
    {
        std::FILE* f = open_log(path_, why);
        if (!f) return false;
        std::lock_guard lock(mutex_);
        std::fflush(file_);
        std::fclose(file_);
        file_ = f;
        return true;
    }

protected:
    void sink_it_(spdlog::details::log_msg const& msg) override
    {
        spdlog::memory_buf_t line;
        formatter_->format(msg, line);
        std::fwrite(line.data(), 1, line.size(), file_);
    }
    void flush_() override { std::fflush(file_); }

private:
    std::string path_;
    std::FILE* file_ = nullptr;
};

// syslog(3)'s priority for a level, as spdlog's syslog sink maps it.
int priority(spdlog::level::level_enum l) noexcept
{
    switch (l) {
    case spdlog::level::trace:
    case spdlog::level::debug: return LOG_DEBUG;
    case spdlog::level::warn: return LOG_WARNING;
    case spdlog::level::err: return LOG_ERR;
    case spdlog::level::critical: return LOG_CRIT;
    default: return LOG_INFO;
    }
}

// Under systemd with StandardError=journal, JOURNAL_STREAM holds
// "DEVICE:INODE" of the stream stderr is connected to (systemd.exec(5)). A
// child whose stderr was redirected inherits the variable, so it counts only
// when it names stderr itself, as sd_journal_stream_fd(3) advises.
bool stderr_is_journal()
{
    char const* v = std::getenv("JOURNAL_STREAM");
    if (!v) return false;
    std::string_view const s(v);
    auto const colon = s.find(':');
    if (colon == std::string_view::npos) return false;
    unsigned long long dev = 0, ino = 0;
    auto const d = std::from_chars(s.data(), s.data() + colon, dev);
    auto const i = std::from_chars(s.data() + colon + 1, s.data() + s.size(), ino);
    if (d.ec != std::errc() || d.ptr != s.data() + colon || i.ec != std::errc() || i.ptr != s.data() + s.size())
        return false;
    struct stat st{};
    if (::fstat(STDERR_FILENO, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
}

// stderr read by journald: each line starts with "<N>", N the syslog
// priority (sd-daemon(3)); journald takes it off and records PRIORITY=N,
// and stamps the time itself. So the message is the line as it is
// ("sid=... pop3 login ..."), as through syslog, and `journalctl -p err`
// finds the errors.
class journal_stream_sink final : public spdlog::sinks::base_sink<std::mutex> {
protected:
    void sink_it_(spdlog::details::log_msg const& msg) override
    {
        spdlog::memory_buf_t text;
        formatter_->format(msg, text);
        std::string line{'<', static_cast<char>('0' + priority(msg.level)), '>'};
        line.append(text.data(), text.size());
        std::fwrite(line.data(), 1, line.size(), stderr);  // one write: stderr is unbuffered
    }
    void flush_() override { std::fflush(stderr); }
};

// Set once by setup() before the threads start; reopen() runs on the signal loop.
std::shared_ptr<reopenable_file_sink> file_sink;

}  // namespace

void setup(std::string_view level, destination to, std::string const& file, int opened)
{
    std::shared_ptr<spdlog::sinks::sink> sink;
    file_sink.reset();
    bool stamped = true;  // the line carries our time and level
    switch (to) {
    case destination::stderr_stream:
        if (stderr_is_journal()) {
            sink = std::make_shared<journal_stream_sink>();
            stamped = false;
        } else {
            sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        }
        break;
    case destination::file:
        file_sink = std::make_shared<reopenable_file_sink>(file, opened);
        opened = -1;
        sink = file_sink;
        break;
    case destination::syslog:
        // syslog stamps the time and host and maps the level to a priority;
        // the line is ours as it is ("popgate[PID]: sid=... pop3 login ...").
        sink = std::make_shared<spdlog::sinks::syslog_sink_mt>("popgate", LOG_PID | LOG_NDELAY, LOG_MAIL, false);
        stamped = false;
        break;
    }
    auto logger = std::make_shared<spdlog::logger>("popgate", std::move(sink));
    logger->set_pattern(stamped ? "%Y-%m-%dT%H:%M:%S.%e%z %l %v" : "%v");
    logger->set_level(spdlog::level::from_str(std::string(level)));
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(std::move(logger));
    if (opened >= 0) ::close(opened);  // not the file destination's
}

bool reopen(std::string& why)
{
    return !file_sink || file_sink->reopen(why);
}

namespace {

constexpr bool bare_ok(unsigned char c) noexcept
{
    return c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
}

}  // namespace

std::string line_shape(std::string_view keyword, std::size_t length)
{
    return "keyword=" + std::string(keyword.empty() ? "-" : keyword) + " length=" + std::to_string(length);
}

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
