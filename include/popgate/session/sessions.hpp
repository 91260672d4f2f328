#pragma once
// Entry points of the protocol sessions: one coroutine per connection, run on
// its own strand. Each owns its socket, TLS (implicit or upgraded), timeouts and
// logging, and never lets an exception escape (the daemon survives any session).
#include "popgate/daemon/context.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace popgate::session {

boost::asio::awaitable<void> serve_pop3(boost::asio::ip::tcp::socket sock, daemon::listener_info const& l,
                                        daemon::context& ctx);
boost::asio::awaitable<void> serve_smtp(boost::asio::ip::tcp::socket sock, daemon::listener_info const& l,
                                        daemon::context& ctx);

}  // namespace popgate::session
