#include "popgate/mail/received.hpp"

#include <boost/test/unit_test.hpp>

using namespace popgate::mail;

BOOST_AUTO_TEST_SUITE(received, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(date_is_rfc5322_utc)
{
    BOOST_TEST(rfc5322_date(0) == "Thu, 01 Jan 1970 00:00:00 +0000");
    BOOST_TEST(rfc5322_date(1709251199) == "Thu, 29 Feb 2024 23:59:59 +0000");
}

BOOST_AUTO_TEST_CASE(protocol_names_rfc3848)
{
    BOOST_TEST(received_protocol(false, false, false) == "SMTP");
    BOOST_TEST(received_protocol(true, false, false) == "ESMTP");
    BOOST_TEST(received_protocol(true, true, false) == "ESMTPS");
    BOOST_TEST(received_protocol(true, false, true) == "ESMTPA");
    BOOST_TEST(received_protocol(true, true, true) == "ESMTPSA");
    // AUTH after HELO: still an authenticated submission (RFC 4954 §7).
    BOOST_TEST(received_protocol(false, false, true) == "ESMTPA");
    BOOST_TEST(received_protocol(false, true, true) == "ESMTPSA");
}

BOOST_AUTO_TEST_CASE(header_layout)
{
    auto const h = received_header({"client.example", "192.0.2.7", "gw.test", "ESMTPS", "ABC123", 0});
    BOOST_TEST(h == "Received: from client.example (unknown [192.0.2.7])\r\n"
                    "\tby gw.test (popgate) with ESMTPS id ABC123;\r\n"
                    "\tThu, 01 Jan 1970 00:00:00 +0000\r\n");
}

BOOST_AUTO_TEST_CASE(ipv6_literal_tagged)
{
    auto const h = received_header({"x", "2001:db8::1", "gw", "ESMTP", "Q", 0});
    BOOST_TEST(h.find("(unknown [IPv6:2001:db8::1])") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(peer_text_cannot_break_the_header)
{
    auto const h = received_header({"evil)\r\nX-Injected: 1 (", "192.0.2.7", "gw", "ESMTP", "Q", 0});
    BOOST_TEST(h.find("X-Injected: 1") == std::string::npos);
    BOOST_TEST(h.rfind("Received: from evil___X-Injected:_1__ (unknown", 0) == 0);
    BOOST_TEST(received_header({"", "192.0.2.7", "gw", "SMTP", "Q", 0}).rfind("Received: from unknown (", 0) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
