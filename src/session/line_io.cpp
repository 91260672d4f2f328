#include "popgate/session/line_io.hpp"

namespace popgate::session {

asio::awaitable<void> watchdog(asio::ip::tcp::socket& sock, session_clock& c)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    alarm_guard const registered(c, timer);
    while (!c.finished) {
        auto const now = clock::now();
        if (c.deadline <= now) {
            c.expired = true;
            boost::system::error_code ignored;
            // Closing the TCP socket fails every pending operation of the
            // session, TLS or not; the session then ends as timed out.
            sock.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
            sock.close(ignored);
            co_return;
        }
        // Wake at the deadline; if the session moved it meanwhile, wait again.
        timer.expires_at(c.deadline);
        auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec && !co_await woken_early(c)) co_return;  // cancelled: the session is over
    }
}

asio::awaitable<bool> woken_early(session_clock const& c)
{
    auto const cs = co_await asio::this_coro::cancellation_state;
    co_return !c.finished && cs.cancelled() == asio::cancellation_type::none;
}

}  // namespace popgate::session
