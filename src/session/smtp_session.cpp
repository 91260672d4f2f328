// placeholder until the SMTP session lands
#include "popgate/session/sessions.hpp"
namespace popgate::session {
boost::asio::awaitable<void> serve_smtp(boost::asio::ip::tcp::socket, daemon::listener_info const&, daemon::context&) { co_return; }
}
