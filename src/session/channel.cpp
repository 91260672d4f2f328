#include "popgate/session/channel.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace popgate::session {

asio::awaitable<bool> channel::flush()
{
    if (out_.empty()) co_return true;
    std::string data = std::move(out_);
    out_.clear();
    co_return co_await io::write_all(conn_.stream, data, conn_.clock, idle_);
}

asio::awaitable<bool> channel::send(std::string_view bytes)
{
    queue(bytes);
    co_return co_await flush();
}

asio::awaitable<io::read_status> channel::read_line(std::string& line, std::optional<io::clock::time_point> limit)
{
    auto const rs = co_await reader_.read(conn_.stream, line, conn_.clock, idle_, limit);
    if (rs == io::read_status::ok) conn_.clock.arm(idle_);
    co_return rs;
}

void channel::write_log(std::vector<log_line> const& lines) const
{
    for (auto const& l : lines) spdlog::log(l.level, "sid={} {}", conn_.sid, l.text);
}

asio::awaitable<void> pause(std::chrono::milliseconds d)
{
    if (d.count() <= 0) co_return;
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

}  // namespace popgate::session
