// Pure POP3 session logic: the state table, CAPA per connection, and the
// maildrop view (numbers, sizes, UIDs, deletion marks) behind STAT/LIST/UIDL/
// DELE/RSET/RETR.
#include "popgate/session/pop3/pop3_state.hpp"

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

using namespace popgate;
using namespace popgate::session;
using proto::pop3_verb;

namespace {

pop3_maildrop three()
{
    return pop3_maildrop({{"1700000000.M1P1.h", "/m/cur/a", 120},
                          {"1700000001.M1P1.h", "/m/cur/b", 200},
                          {"1700000002.M1P1.h", "/m/cur/c", 3}});
}

}  // namespace

BOOST_AUTO_TEST_SUITE(pop3_state, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(state_table)
{
    using enum pop3_phase;
    for (auto v : {pop3_verb::user, pop3_verb::pass, pop3_verb::apop, pop3_verb::auth, pop3_verb::stls}) {
        BOOST_TEST(pop3_allowed(v, authorization));
        BOOST_TEST(!pop3_allowed(v, transaction));
    }
    for (auto v : {pop3_verb::stat, pop3_verb::list, pop3_verb::uidl, pop3_verb::top, pop3_verb::retr,
                   pop3_verb::dele, pop3_verb::rset, pop3_verb::noop}) {
        BOOST_TEST(!pop3_allowed(v, authorization));
        BOOST_TEST(pop3_allowed(v, transaction));
    }
    for (auto v : {pop3_verb::capa, pop3_verb::quit}) {
        BOOST_TEST(pop3_allowed(v, authorization));
        BOOST_TEST(pop3_allowed(v, transaction));
    }
}

BOOST_AUTO_TEST_CASE(capa_lists_only_what_is_offered)
{
    pop3_offer o{.stls = true, .plaintext = true, .cram_md5 = true};
    BOOST_TEST(pop3_capa(o, pop3_phase::authorization) ==
               "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
               "USER\r\nSTLS\r\nSASL PLAIN LOGIN CRAM-MD5\r\nIMPLEMENTATION popgate\r\n.\r\n");
    o = {.stls = false, .plaintext = false, .cram_md5 = true};
    BOOST_TEST(pop3_capa(o, pop3_phase::authorization) ==
               "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
               "SASL CRAM-MD5\r\nIMPLEMENTATION popgate\r\n.\r\n");
    o = {.stls = false, .plaintext = false, .cram_md5 = false};
    BOOST_TEST(pop3_capa(o, pop3_phase::authorization).find("SASL") == std::string::npos);
    // After login nothing about authentication or STLS is offered.
    o = {.stls = true, .plaintext = true, .cram_md5 = true};
    BOOST_TEST(pop3_capa(o, pop3_phase::transaction) ==
               "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
               "IMPLEMENTATION popgate\r\n.\r\n");
    BOOST_TEST(pop3_auth_list({.stls = false, .plaintext = true, .cram_md5 = false}) ==
               "+OK Supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n");
}

BOOST_AUTO_TEST_CASE(stat_list_uidl)
{
    auto m = three();
    BOOST_TEST(m.stat() == "+OK 3 323\r\n");
    BOOST_TEST(m.list("") == "+OK 3 messages (323 octets)\r\n1 120\r\n2 200\r\n3 3\r\n.\r\n");
    BOOST_TEST(m.list("2") == "+OK 2 200\r\n");
    BOOST_TEST(m.list("002") == "+OK 2 200\r\n");
    BOOST_TEST(m.list("4") == "-ERR no such message, only 3 messages in maildrop\r\n");
    BOOST_TEST(m.list("0") == "-ERR invalid message number\r\n");
    BOOST_TEST(m.list("x") == "-ERR invalid message number\r\n");
    BOOST_TEST(m.uidl("") ==
               "+OK\r\n1 1700000000.M1P1.h\r\n2 1700000001.M1P1.h\r\n3 1700000002.M1P1.h\r\n.\r\n");
    BOOST_TEST(m.uidl("3") == "+OK 3 1700000002.M1P1.h\r\n");
}

BOOST_AUTO_TEST_CASE(dele_hides_and_rset_restores)
{
    auto m = three();
    BOOST_TEST(m.dele("2") == "+OK message 2 deleted\r\n");
    BOOST_TEST(m.dele("2") == "-ERR message 2 already deleted\r\n");
    BOOST_TEST(m.stat() == "+OK 2 123\r\n");
    BOOST_TEST(m.list("") == "+OK 2 messages (123 octets)\r\n1 120\r\n3 3\r\n.\r\n");
    BOOST_TEST(m.list("2") == "-ERR message 2 already deleted\r\n");
    BOOST_TEST(m.uidl("2") == "-ERR message 2 already deleted\r\n");
    BOOST_TEST(m.uidl("") == "+OK\r\n1 1700000000.M1P1.h\r\n3 1700000002.M1P1.h\r\n.\r\n");
    BOOST_TEST(m.find("2").msg == nullptr);
    BOOST_TEST(m.find("2").error == "-ERR message 2 already deleted\r\n");
    BOOST_TEST(m.find(3).msg->path == "/m/cur/c");
    auto const marked = m.marked();
    BOOST_TEST_REQUIRE(marked.size() == 1u);
    BOOST_TEST(marked[0].uid == "1700000001.M1P1.h");
    BOOST_TEST(m.rset() == "+OK maildrop has 3 messages (323 octets)\r\n");
    BOOST_TEST(m.marked().empty());
    BOOST_TEST(m.stat() == "+OK 3 323\r\n");
}

BOOST_AUTO_TEST_CASE(empty_maildrop)
{
    pop3_maildrop m({});
    BOOST_TEST(m.stat() == "+OK 0 0\r\n");
    BOOST_TEST(m.list("") == "+OK 0 messages (0 octets)\r\n.\r\n");
    BOOST_TEST(m.uidl("") == "+OK\r\n.\r\n");
    BOOST_TEST(m.dele("1") == "-ERR no such message, only 0 messages in maildrop\r\n");
}

BOOST_AUTO_TEST_SUITE_END()
