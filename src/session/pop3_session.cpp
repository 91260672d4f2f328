// placeholder until the POP3 session lands
#include "popgate/session/sessions.hpp"
namespace popgate::session {
boost::asio::awaitable<void> serve_pop3(boost::asio::ip::tcp::socket, daemon::listener_info const&, daemon::context&) { co_return; }
}
