// storage.group's refusals (daemon/state_dirs.hpp why_not_shareable): the
// database needs a directory of its own, not a systemd-managed one.
#include "popgate/config/config.hpp"
#include "popgate/daemon/state_dirs.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <string>

namespace {

popgate::config::settings packaged(std::string const& database, std::string const& group = "postfix")
{
    popgate::config::settings s;
    s.database = database;
    s.database_group = group;
    s.maildir = "/var/lib/popgate/mail/%u";
    s.relay_drop = "/var/lib/popgate/relay-drop";
    s.tls.cert_file = "/var/lib/popgate/tls/cert.pem";
    s.tls.key_file = "/var/lib/popgate/tls/key.pem";
    return s;
}

// Sets an environment variable for the scope of the object.
struct env_var {
    char const* name;
    env_var(char const* n, char const* v) : name{n} { ::setenv(n, v, 1); }
    ~env_var() { ::unsetenv(name); }
};

bool has(std::string const& text, std::string const& part) { return text.find(part) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_SUITE(state_dirs, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(database_in_a_directory_of_its_own_may_be_shared)
{
    using popgate::daemon::why_not_shareable;
    BOOST_TEST(why_not_shareable(packaged("/var/lib/popgate/db/popgate.db")) == "");
    BOOST_TEST(why_not_shareable(packaged("/var/lib/popgate/popgate.db", "")) == "");  // no storage.group
    // A sibling whose name starts like the state directory is not inside it.
    auto s = packaged("/var/lib/popgate-db/popgate.db");
    BOOST_TEST(why_not_shareable(s) == "");
}

BOOST_AUTO_TEST_CASE(database_beside_other_state_is_refused)
{
    using popgate::daemon::why_not_shareable;
    auto const why = why_not_shareable(packaged("/var/lib/popgate/popgate.db"));
    BOOST_TEST(has(why, "storage.group: the database's directory /var/lib/popgate also holds mail.maildir "
                        "(/var/lib/popgate/mail)"),
               why);
    BOOST_TEST(has(why, "(for example /var/lib/popgate/db/popgate.db)"), why);
    // The TLS key, the relay drop, the log file: each counts, "x/./" and "x/" alike.
    auto s = packaged("/srv/pg/./popgate.db");
    s.maildir = "/srv/mail/%u";
    s.relay_drop = "/srv/drop";
    s.tls.key_file = "/srv/pg/tls/key.pem";
    BOOST_TEST(has(why_not_shareable(s), "also holds tls.key_file"), why_not_shareable(s));
    s.tls.key_file = "/srv/tls/key.pem";
    s.tls.cert_file = "/srv/tls/cert.pem";
    s.log_file = "/srv/pg/popgate.log";
    BOOST_TEST(has(why_not_shareable(s), "also holds log.file"), why_not_shareable(s));
    s.log_file = "";
    s.relay_drop = "/srv/pg/";
    BOOST_TEST(has(why_not_shareable(s), "also holds mail.relay_drop"), why_not_shareable(s));
    s.upstream_host = "mx.example";  // then there is no relay drop
    BOOST_TEST(why_not_shareable(s) == "");
}

BOOST_AUTO_TEST_CASE(database_in_a_systemd_managed_directory_is_refused)
{
    using popgate::daemon::why_not_shareable;
    auto s = packaged("/srv/state/popgate.db");
    s.maildir = "/srv/mail/%u";
    s.relay_drop = "/srv/drop";
    s.tls.cert_file = "/srv/tls/cert.pem";
    s.tls.key_file = "/srv/tls/key.pem";
    BOOST_TEST(why_not_shareable(s) == "");
    {
        env_var const e("STATE_DIRECTORY", "/srv/other:/srv/state/");
        auto const why = why_not_shareable(s);
        BOOST_TEST(has(why, "/srv/state/ is systemd's STATE_DIRECTORY"), why);
        s.database = "/srv/state/db/popgate.db";
        BOOST_TEST(why_not_shareable(s) == "");
    }
}

BOOST_AUTO_TEST_SUITE_END()
