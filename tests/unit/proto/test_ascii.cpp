#include "popgate/proto/ascii.hpp"

#include <boost/test/unit_test.hpp>

using namespace popgate::proto;

BOOST_AUTO_TEST_SUITE(ascii)

BOOST_AUTO_TEST_CASE(protocol_words_compare_without_case)
{
    BOOST_TEST(iequals("cram-md5", "CRAM-MD5"));
    BOOST_TEST(iequals("PostMaster", "postmaster"));
    BOOST_TEST(iequals("", ""));
    BOOST_TEST(!iequals("PLAIN", "PLAI"));
    BOOST_TEST(!iequals("LOGIN", "LOGON"));
    // '@' and '`' sit one below 'A' and 'a'; '[' and '{' one above 'Z' and
    // 'z': a fold by arithmetic alone would pair them.
    BOOST_TEST(!iequals("@", "`"));
    BOOST_TEST(!iequals("[", "{"));
}

BOOST_AUTO_TEST_CASE(bytes_above_ascii_never_fold)
{
    // Latin-1 'Ä' (0xC4) and 'ä' (0xE4) are one letter under a Latin-1
    // locale's tolower; in a protocol word they are two different bytes.
    BOOST_TEST(!iequals("\xC4", "\xE4"));
    BOOST_TEST(ascii_lower('\xC4') == '\xC4');
    BOOST_TEST(ascii_upper('\xE4') == '\xE4');
}

BOOST_AUTO_TEST_CASE(prefixes_compare_without_case)
{
    BOOST_TEST(istarts_with("ipv6:2001:db8::1", "IPv6:"));
    BOOST_TEST(!istarts_with("IPv", "IPv6:"));
    BOOST_TEST(!istarts_with("IPv4:1.2.3.4", "IPv6:"));
}

BOOST_AUTO_TEST_SUITE_END()
