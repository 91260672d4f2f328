#pragma once
// Line-oriented I/O shared by the POP3 and SMTP sessions: bounded lines,
// a per-session deadline enforced by a watchdog, and writes that cannot block
// forever (a client that never reads is cut off at the same deadline).
#include "popgate/io/stream.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace popgate::io {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

// Deadline shared by a session and its watchdog (both on the session's strand).
struct session_clock {
    clock::time_point deadline = clock::time_point::max();
    bool expired = false;
    bool finished = false;
    // Cut at the end of a SIGTERM drain (server/open_sessions.hpp), not by
    // a limit: the session ends as "shutdown".
    bool shutdown = false;
    // The upstream's reply to the end of a message is awaited: the drain
    // spares the session until it is in (the upstream may have queued the
    // message; cut now, the client would send it again). Read by the drain
    // from another thread.
    std::atomic<bool> awaiting_verdict = false;
    // The watchdog's timer while it sleeps (set by the watchdog itself).
    asio::steady_timer* alarm = nullptr;
    void arm(clock::duration d) { set(clock::now() + d); }
    // The watchdog sleeps until the deadline it last saw: a deadline moved
    // EARLIER (the TLS handshake bound, the DATA bound below the idle
    // timeout) wakes it, or the shorter limit would only be enforced once
    // the longer one ran out. (A deadline the session moves later after the
    // drain's cut does not save it: the watchdog cuts on `shutdown` itself.)
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

// Writes what the socket's send buffer takes now and never waits; returns
// how much. `ec` is set only by a real error: a full buffer is not one (the
// caller waits for the rest, asynchronously and under its own deadline).
std::size_t write_nowait(asio::ip::tcp::socket& sock, asio::const_buffer data,
                         boost::system::error_code& ec) noexcept;

// write_nowait with errors ignored: last words before a close (a timeout,
// a refusal, a QUIT to an upstream we leave).
void send_nowait(asio::ip::tcp::socket& sock, std::string_view bytes) noexcept;

// Shuts both directions, then closes: every operation pending on the socket
// fails at once, TLS or not. Errors are ignored (the peer may be gone).
void close_now(asio::ip::tcp::socket& sock) noexcept;

// Closes `sock` when the deadline passes; ends when the session has finished.
// `last_words`, when given, is called just before the close: it may send a
// line (best effort, without blocking), in clear or through TLS.
asio::awaitable<void> watchdog(asio::ip::tcp::socket& sock, session_clock& c,
                               std::function<void()> last_words = {});

// A deadline for one operation at a time on a socket, for a caller that
// runs many short ones (the upstream client: a command, its reply, the next
// command). Racing each operation against watchdog() costs two coroutines,
// a timer and a cancellation per operation; here start() is a clock read.
// One timer sleeps until the deadline it last saw; when it wakes it closes
// the socket if an operation is still running past its deadline (which
// ends that operation, TLS or not), sleeps on if the deadline has moved
// later, and stops when no operation is running. The next start() wakes
// it again. Everything runs on the owner's executor: an I/O thread's own
// context, so no locks.
class op_deadline {
public:
    explicit op_deadline(asio::any_io_executor ex);
    ~op_deadline();
    op_deadline(op_deadline const&) = delete;
    op_deadline& operator=(op_deadline const&) = delete;

    // An operation on `sock` begins now and must end within `d`.
    void start(asio::ip::tcp::socket& sock, clock::duration d);
    // It ended. true: it ended because the deadline passed and the socket
    // was closed.
    bool stop() noexcept;

private:
    struct state;
    static void sleep(std::shared_ptr<state> st);
    static void wake(std::shared_ptr<state> const& st);
    std::shared_ptr<state> st_;  // shared with the sleeping timer's handler
};

// timed_out: no command began within the idle timeout; too_slow: a line (or
// an exchange, see `limit`) began and was not complete in time.
enum class read_status { ok, eof, timed_out, too_slow, too_long, error };

// Reads CRLF-terminated lines. A line longer than `max` (CRLF included) is
// reported once as too_long and then skipped up to its end, so the session stays
// in step with the client. The CRLF is stripped; a bare LF also ends a line and
// is left in place as "\n" at the end of `line` so the caller can refuse it.
//
// Deadlines: waiting for the first byte of a line is bounded by `idle`
// (re-armed by every read); once a line has begun it must be complete within
// `command_time` of its first byte, however the rest trickles in. `limit`,
// when set, bounds the whole read (an AUTH exchange, USER to PASS).
class line_reader {
public:
    explicit line_reader(std::size_t max, clock::duration command_time = clock::duration::max())
        : max_(max), command_time_(command_time)
    {
    }

    asio::awaitable<read_status> read(stream& s, std::string& line, session_clock& c, clock::duration idle,
                                      std::optional<clock::time_point> limit = std::nullopt);

    // Bytes received but not yet consumed (pipelined commands). A caller
    // that consumes or replaces them itself (DATA) calls restart_timing().
    std::string& pending() noexcept { return buf_; }
    void restart_timing() noexcept { begun_.reset(); }
    bool has_pending() const noexcept { return !buf_.empty(); }
    // Whether a whole line is already buffered (RFC 2920: the client is not
    // waiting for our replies yet).
    bool line_pending() const noexcept { return buf_.find('\n') != std::string::npos; }
    void set_max(std::size_t m) noexcept { max_ = m; }
    std::size_t max() const noexcept { return max_; }
    void clear() noexcept
    {
        buf_.clear();
        discarding_ = false;
        begun_.reset();
    }

private:
    std::size_t max_;
    clock::duration command_time_;
    std::optional<clock::time_point> begun_;  // first byte of the unfinished line
    std::string buf_;
    bool discarding_ = false;
};

// Writes all of `data`; false if the peer is gone or the deadline passed.
asio::awaitable<bool> write_all(stream& s, std::string_view data, session_clock& c, clock::duration idle);

}  // namespace popgate::io
