#include "popgate/config/config.hpp"
#include "popgate/daemon/fd_limit.hpp"

#include <boost/test/unit_test.hpp>

using namespace popgate;
using daemon::cap_sessions_to_fds;

namespace {

// Settings with one listener of each protocol named.
config::settings serving(std::initializer_list<char const*> protocols)
{
    config::settings s;
    for (auto const* p : protocols) {
        config::listener l;
        l.name = p;
        l.protocol = p;
        s.listeners.push_back(l);
    }
    return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fd_limit, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(enough_descriptors_change_nothing)
{
    auto s = serving({"pop3", "http"});  // 1000 mail sessions, 256 service sessions
    cap_sessions_to_fds(s, 65536, 4, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_sessions == 1000u);
    BOOST_TEST(s.max_service_sessions == 256u);
    // 64 + 4 x 2 for the daemon, 3 per mail session, 1 per service session.
    s.max_sessions = 10;
    cap_sessions_to_fds(s, 72 + 30 + 256, 2, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_sessions == 10u);
    BOOST_TEST(s.max_service_sessions == 256u);
}

BOOST_AUTO_TEST_CASE(too_few_descriptors_share_what_there_is)
{
    auto s = serving({"pop3", "policy"});
    // 200 descriptors for sessions: the services keep half (100), the mail
    // clients get a third of the rest each.
    cap_sessions_to_fds(s, 72 + 200, 2, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_service_sessions == 100u);
    BOOST_TEST(s.max_sessions == 33u);
    // Services that need less than half leave the rest to mail clients.
    s = serving({"pop3", "http"});
    s.max_service_sessions = 20;
    cap_sessions_to_fds(s, 72 + 200, 2, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_service_sessions == 20u);
    BOOST_TEST(s.max_sessions == 60u);
    // None left at all: still one of each.
    s = serving({"pop3", "http"});
    cap_sessions_to_fds(s, 10, 2, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_service_sessions == 1u);
    BOOST_TEST(s.max_sessions == 1u);
}

BOOST_AUTO_TEST_CASE(policy_and_http_each_have_their_places)
{
    auto s = serving({"pop3", "policy", "http", "http"});
    BOOST_TEST(daemon::service_protocols(s.listeners) == 2u);
    // 64 + 4 x 2 for the daemon; 3 per mail session, 1 per service session.
    s.max_sessions = 10;
    cap_sessions_to_fds(s, 72 + 30 + 2 * 256, 2, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_sessions == 10u);
    BOOST_TEST(s.max_service_sessions == 256u);
    // 200 descriptors: half for the two services (50 each), the rest for mail.
    s = serving({"pop3", "policy", "http"});
    cap_sessions_to_fds(s, 72 + 200, 2, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_service_sessions == 50u);
    BOOST_TEST(s.max_sessions == 33u);
}

BOOST_AUTO_TEST_CASE(without_a_service_listener_the_mail_clients_get_everything)
{
    auto s = serving({"pop3", "smtp"});
    cap_sessions_to_fds(s, 72 + 200, 2, daemon::service_protocols(s.listeners));
    BOOST_TEST(s.max_sessions == 66u);
    BOOST_TEST(s.max_service_sessions == 256u);  // set aside for nobody, left as configured
}

BOOST_AUTO_TEST_SUITE_END()
