#include "popgate/io/line_io.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace popgate::io {

std::size_t write_nowait(asio::ip::tcp::socket& sock, asio::const_buffer data, boost::system::error_code& ec) noexcept
{
    ec.clear();
    // Asio's flag, not a system call: set once per socket, not per write.
    if (!sock.non_blocking()) sock.non_blocking(true, ec);
    std::size_t sent = 0;
    while (!ec && sent < data.size()) sent += sock.write_some(data + sent, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) ec.clear();
    return sent;
}

void send_nowait(asio::ip::tcp::socket& sock, std::string_view bytes) noexcept
{
    boost::system::error_code ignored;
    write_nowait(sock, asio::buffer(bytes.data(), bytes.size()), ignored);
}

void close_now(asio::ip::tcp::socket& sock) noexcept
{
    boost::system::error_code ignored;
    sock.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
}

asio::awaitable<void> watchdog(asio::ip::tcp::socket& sock, session_clock& c, std::function<void()> last_words)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    alarm_guard const registered(c, timer);
    while (!c.finished) {
        auto const now = clock::now();
        if (c.deadline <= now || c.shutdown) {
            c.expired = true;
            if (last_words) last_words();
            // The session then ends as timed out.
            close_now(sock);
            co_return;
        }
        // Wake at the deadline; if the session moved it meanwhile, wait again.
        timer.expires_at(c.deadline);
        auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (!ec) continue;
        // Woken early: by session_clock::set (go round again), or cancelled
        // because the session is over. Asked of this frame's own cancellation
        // state, which does not throw: co_awaiting another awaitable in a
        // cancelled frame throws operation_aborted, and that exception (thrown,
        // then rethrown by the || operator's group) cost 8% of the CPU of a
        // short SMTP session (perf, smtp-decision c=50).
        auto const cs = co_await asio::this_coro::cancellation_state;
        if (c.finished || cs.cancelled() != asio::cancellation_type::none) co_return;
    }
}

struct op_deadline::state {
    explicit state(asio::any_io_executor ex) : timer(std::move(ex)) {}
    asio::steady_timer timer;
    clock::time_point deadline = clock::time_point::max();
    asio::ip::tcp::socket* sock = nullptr;  // while an operation runs
    bool sleeping = false;
    bool expired = false;
};

op_deadline::op_deadline(asio::any_io_executor ex) : st_(std::make_shared<state>(std::move(ex))) {}

op_deadline::~op_deadline()
{
    st_->sock = nullptr;
    if (st_->sleeping) st_->timer.cancel();  // its handler then finds nothing to do
}

void op_deadline::start(asio::ip::tcp::socket& sock, clock::duration d)
{
    st_->sock = &sock;
    st_->expired = false;
    st_->deadline = clock::now() + d;
    if (!st_->sleeping)
        sleep(st_);
    else if (st_->deadline < st_->timer.expiry())
        st_->timer.cancel();  // a shorter limit than the one it sleeps to: it wakes and sleeps again
}

bool op_deadline::stop() noexcept
{
    st_->sock = nullptr;
    return st_->expired;
}

void op_deadline::sleep(std::shared_ptr<state> st)
{
    st->sleeping = true;
    st->timer.expires_at(st->deadline);
    auto& timer = st->timer;
    timer.async_wait([st = std::move(st)](boost::system::error_code) { wake(st); });
}

void op_deadline::wake(std::shared_ptr<state> const& st)
{
    st->sleeping = false;
    if (!st->sock) return;  // nothing running (or the owner is gone): the next start() sleeps again
    if (st->deadline > clock::now()) {
        sleep(st);  // the running operation began after the one this sleep was for
        return;
    }
    st->expired = true;
    close_now(*st->sock);
    st->sock = nullptr;
}

asio::awaitable<read_status> line_reader::read(stream& s, std::string& line, session_clock& c, clock::duration idle,
                                              std::optional<clock::time_point> limit)
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
            // What follows this line (pipelined) began now at the latest.
            if (lf + 1 < buf_.size()) begun_ = clock::now();
            else begun_.reset();
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
        if (!buf_.empty() && !begun_) begun_ = clock::now();
        // The earliest of: idle from now, the begun line's own time, the limit.
        auto deadline = clock::now() + idle;
        bool slow = false;
        if (begun_ && command_time_ != clock::duration::max() && *begun_ + command_time_ < deadline) {
            deadline = *begun_ + command_time_;
            slow = true;
        }
        if (limit && *limit < deadline) {
            deadline = *limit;
            slow = true;
        }
        c.set(deadline);
        char chunk[4096];
        auto [ec, n] = co_await s.read_some(asio::buffer(chunk));
        if (ec) {
            if (c.expired) co_return slow ? read_status::too_slow : read_status::timed_out;
            co_return ec == asio::error::eof ? read_status::eof : read_status::error;
        }
        buf_.append(chunk, n);
    }
}

asio::awaitable<bool> write_all(stream& s, std::string_view data, session_clock& c, clock::duration idle)
{
    c.arm(idle);
    auto const ec = co_await s.write(asio::buffer(data));
    co_return !ec;
}

}  // namespace popgate::io
