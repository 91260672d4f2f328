#pragma once
// Line-oriented I/O shared by the POP3 and SMTP sessions: bounded lines,
// a per-session deadline enforced by a watchdog, and writes that cannot block
// forever (a client that never reads is cut off at the same deadline).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace popgate::session {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

// Deadline shared by a session and its watchdog (both on the session's strand).
struct session_clock {
    clock::time_point deadline = clock::time_point::max();
    bool expired = false;
    bool finished = false;
    // The watchdog's timer while it sleeps (set by the watchdog itself).
    asio::steady_timer* alarm = nullptr;
    void arm(clock::duration d) { set(clock::now() + d); }
    // Fix (issue 5): the watchdog sleeps until the deadline it last saw. A
    // deadline moved EARLIER (the TLS handshake bound after STLS/STARTTLS, the
    // DATA bound below the idle timeout) must wake it, or the shorter limit
    // would only be enforced once the longer one ran out.
    void set(clock::time_point t)
    {
        bool const earlier = t < deadline;
        deadline = t;
        if (earlier && alarm) alarm->cancel();
    }
};

// Registers `t` as the clock's alarm for the watchdog's lifetime.
struct alarm_guard {
    session_clock& c;
    alarm_guard(session_clock& sc, asio::steady_timer& t) : c(sc) { c.alarm = &t; }
    ~alarm_guard() { c.alarm = nullptr; }
    alarm_guard(alarm_guard const&) = delete;
    alarm_guard& operator=(alarm_guard const&) = delete;
};

// After the watchdog's timer wait failed: true when it was only woken by
// session_clock::set (go round again), false when the watchdog itself was
// cancelled (the session is over).
asio::awaitable<bool> woken_early(session_clock const& c);

// Closes `sock` when the deadline passes; ends when the session has finished.
asio::awaitable<void> watchdog(asio::ip::tcp::socket& sock, session_clock& c);

enum class read_status { ok, eof, timed_out, too_long, error };

// Reads CRLF-terminated lines. A line longer than `max` (CRLF included) is
// reported once as too_long and then skipped up to its end, so the session stays
// in step with the client. The CRLF is stripped; a bare LF also ends a line and
// is left in place as "\n" at the end of `line` so the caller can refuse it.
class line_reader {
public:
    explicit line_reader(std::size_t max) : max_(max) {}

    template <class Stream>
    asio::awaitable<read_status> read(Stream& s, std::string& line, session_clock& c, clock::duration idle);

    // Bytes received but not yet consumed (pipelined commands).
    std::string& pending() noexcept { return buf_; }
    bool has_pending() const noexcept { return !buf_.empty(); }
    void set_max(std::size_t m) noexcept { max_ = m; }
    void clear() noexcept { buf_.clear(); discarding_ = false; }

private:
    std::size_t max_;
    std::string buf_;
    bool discarding_ = false;
};

template <class Stream>
asio::awaitable<read_status> line_reader::read(Stream& s, std::string& line, session_clock& c, clock::duration idle)
{
    std::size_t scanned = 0;
    for (;;) {
        auto const lf = buf_.find('\n', scanned);
        if (lf != std::string::npos) {
            if (discarding_) {
                buf_.erase(0, lf + 1);
                discarding_ = false;
                scanned = 0;
                continue;
            }
            if (lf + 1 > max_) {
                buf_.erase(0, lf + 1);
                co_return read_status::too_long;
            }
            bool const crlf = lf > 0 && buf_[lf - 1] == '\r';
            line.assign(buf_, 0, crlf ? lf - 1 : lf);
            if (!crlf) line.push_back('\n');  // mark the bare LF for the caller
            buf_.erase(0, lf + 1);
            co_return read_status::ok;
        }
        scanned = buf_.size();
        if (discarding_) {
            buf_.clear();
            scanned = 0;
        } else if (buf_.size() >= max_) {
            // No end in sight: drop what we have and skip to the next LF.
            buf_.clear();
            scanned = 0;
            discarding_ = true;
            co_return read_status::too_long;
        }
        char chunk[4096];
        c.arm(idle);
        auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable));
        if (ec) {
            if (c.expired) co_return read_status::timed_out;
            co_return ec == asio::error::eof ? read_status::eof : read_status::error;
        }
        buf_.append(chunk, n);
    }
}

// Writes all of `data`; false if the peer is gone or the deadline passed.
template <class Stream>
asio::awaitable<bool> write_all(Stream& s, std::string_view data, session_clock& c, clock::duration idle)
{
    c.arm(idle);
    auto [ec, n] = co_await asio::async_write(s, asio::buffer(data), asio::as_tuple(asio::use_awaitable));
    (void)n;
    co_return !ec;
}

}  // namespace popgate::session
