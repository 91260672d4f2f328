#include "popgate/net/proxy_header.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <ostream>
#include <string>
#include <string_view>

using namespace popgate::net;
using namespace std::string_literals;
namespace bdata = boost::unit_test::data;

namespace {

std::string const v2_sig("\r\n\r\n\0\r\nQUIT\n", 12);

// A v2 header: signature, version/command, family/transport, length, body.
std::string v2(unsigned char ver_cmd, unsigned char fam, std::string const& body)
{
    std::string h = v2_sig;
    h += static_cast<char>(ver_cmd);
    h += static_cast<char>(fam);
    h += static_cast<char>(body.size() >> 8);
    h += static_cast<char>(body.size() & 0xff);
    return h + body;
}

std::string bytes(std::initializer_list<unsigned> v)
{
    std::string s;
    for (auto b : v) s += static_cast<char>(b);
    return s;
}

// 192.0.2.7:40001 -> 198.51.100.1:110
std::string const v4_block = bytes({192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x41, 0, 110});
// 2001:db8::7:40001 -> 2001:db8::1:25
std::string const v6_block = bytes({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
                                    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                    0x9c, 0x41, 0, 25});

}  // namespace

BOOST_AUTO_TEST_SUITE(proxy_header_v1, *boost::unit_test::label("unit"))

struct good_case {
    std::string_view in;
    std::string_view source;  // "" = none (keep the proxy's address)
    std::uint16_t port;
};
std::ostream& operator<<(std::ostream& os, good_case const& c) { return os << c.in; }

constexpr good_case good[]{
    {"PROXY TCP4 192.0.2.7 198.51.100.1 40001 110\r\n", "192.0.2.7", 40001},
    {"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", "0.0.0.0", 0},
    {"PROXY TCP6 2001:db8::7 2001:db8::1 40001 25\r\n", "2001:db8::7", 40001},
    {"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 1 2\r\n", "2001:db8::7", 1},
    {"PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n", "192.0.2.7", 1},
    {"PROXY UNKNOWN\r\n", "", 0},
    {"PROXY UNKNOWN whatever the proxy wrote\r\n", "", 0},
    // §2.1's worst case: 107 octets.
    {"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
     "", 0},
};

BOOST_DATA_TEST_CASE(parses_valid_lines, bdata::make(good), c)
{
    auto const r = parse_proxy_header(c.in);
    BOOST_TEST_REQUIRE((r.status == proxy_status::complete));
    BOOST_TEST(r.header.version == 1);
    BOOST_TEST(r.header.length == c.in.size());
    if (c.source.empty()) {
        BOOST_TEST(!r.header.source.has_value());
    } else {
        BOOST_TEST_REQUIRE(r.header.source.has_value());
        BOOST_TEST(r.header.source->to_string() == c.source);
        BOOST_TEST(r.header.port == c.port);
    }
}

BOOST_AUTO_TEST_CASE(client_bytes_after_the_line_are_not_its_own)
{
    std::string const in = "PROXY TCP4 192.0.2.7 198.51.100.1 40001 110\r\nUSER alice\r\n";
    auto const r = parse_proxy_header(in);
    BOOST_TEST_REQUIRE((r.status == proxy_status::complete));
    BOOST_TEST(in.substr(r.header.length) == "USER alice\r\n");
}

BOOST_AUTO_TEST_CASE(every_truncation_is_incomplete)
{
    std::string_view const line = "PROXY TCP6 2001:db8::7 2001:db8::1 40001 25\r\n";
    for (std::size_t n = 0; n < line.size(); ++n)
        BOOST_TEST((parse_proxy_header(line.substr(0, n)).status == proxy_status::incomplete), "n=" << n);
}

struct bad_case {
    std::string_view in;
};
std::ostream& operator<<(std::ostream& os, bad_case const& c) { return os << c.in; }

constexpr bad_case bad[]{
    {"USER alice\r\n"},                                          // a client talking straight to us
    {"EHLO client.example\r\n"},
    {"proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n"},               // case matters
    {"PROXY\r\n"},
    {"PROXY  TCP4 192.0.2.7 198.51.100.1 1 2\r\n"},              // two spaces
    {"PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n"},
    {"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n"},                 // a port missing
    {"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n"},             // a field too many
    {"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n"},              // trailing space
    {"PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n"},              // leading zero
    {"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n"},             // IPv6 on a TCP4 line
    {"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n"},                // IPv4 on a TCP6 line
    {"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n"},
    {"PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n"},
    {"PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n"},
    {"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n"},                 // bare LF
    {"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\rX"},                // CR without LF
    {"PROXY TCP4 evil ip=192.0.2.66 1 2\r\n"},
};

BOOST_DATA_TEST_CASE(refuses_garbage, bdata::make(bad), c)
{
    auto const r = parse_proxy_header(c.in);
    BOOST_TEST((r.status == proxy_status::invalid));
    BOOST_TEST(!r.why.empty());
}

BOOST_AUTO_TEST_CASE(refuses_a_line_longer_than_107_octets)
{
    std::string const long_unknown = "PROXY UNKNOWN " + std::string(92, 'f') + "\r\n";  // 107 + 1
    BOOST_TEST(long_unknown.size() == 108u);
    BOOST_TEST((parse_proxy_header(long_unknown).status == proxy_status::invalid));
    // No CRLF in 107 octets: refused without waiting for more.
    BOOST_TEST((parse_proxy_header("PROXY UNKNOWN " + std::string(93, 'f')).status == proxy_status::invalid));
    BOOST_TEST((parse_proxy_header("PROXY UNKNOWN " + std::string(92, 'f')).status == proxy_status::incomplete));
    // CR as the 107th octet: its LF would be the 108th.
    BOOST_TEST((parse_proxy_header("PROXY UNKNOWN " + std::string(92, 'f') + "\r").status ==
                proxy_status::invalid));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(proxy_header_v2, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(proxy_tcp4)
{
    auto const h = v2(0x21, 0x11, v4_block);
    auto const r = parse_proxy_header(h + "EHLO x\r\n");
    BOOST_TEST_REQUIRE((r.status == proxy_status::complete));
    BOOST_TEST(r.header.version == 2);
    BOOST_TEST(r.header.length == 28u);
    BOOST_TEST_REQUIRE(r.header.source.has_value());
    BOOST_TEST(r.header.source->to_string() == "192.0.2.7");
    BOOST_TEST(r.header.source->v4);
    BOOST_TEST(r.header.port == 40001);
}

BOOST_AUTO_TEST_CASE(proxy_tcp6)
{
    auto const r = parse_proxy_header(v2(0x21, 0x21, v6_block));
    BOOST_TEST_REQUIRE((r.status == proxy_status::complete));
    BOOST_TEST(r.header.length == 52u);
    BOOST_TEST_REQUIRE(r.header.source.has_value());
    BOOST_TEST(r.header.source->to_string() == "2001:db8::7");
    BOOST_TEST(!r.header.source->v4);
    BOOST_TEST(r.header.port == 40001);
}

BOOST_AUTO_TEST_CASE(ipv4_mapped_source_is_the_ipv4_client)
{
    auto block = v6_block;
    block.replace(0, 16, bytes({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7}));
    auto const r = parse_proxy_header(v2(0x21, 0x21, block));
    BOOST_TEST_REQUIRE(r.header.source.has_value());
    BOOST_TEST(r.header.source->to_string() == "192.0.2.7");
    BOOST_TEST((*r.header.source == *parse_ip("192.0.2.7")));
}

BOOST_AUTO_TEST_CASE(tlvs_are_skipped)
{
    // PP2_TYPE_AUTHORITY "mail.example", PP2_TYPE_NOOP of 3 octets.
    auto const tlvs = bytes({0x02, 0, 12}) + "mail.example" + bytes({0x04, 0, 3, 0, 0, 0});
    auto const h = v2(0x21, 0x11, v4_block + tlvs);
    auto const r = parse_proxy_header(h + "+client");
    BOOST_TEST_REQUIRE((r.status == proxy_status::complete));
    BOOST_TEST(r.header.length == h.size());
    BOOST_TEST(r.header.source->to_string() == "192.0.2.7");
}

BOOST_AUTO_TEST_CASE(local_keeps_the_proxy_address)
{
    // A health check: LOCAL, usually UNSPEC with no addresses...
    auto r = parse_proxy_header(v2(0x20, 0x00, ""));
    BOOST_TEST_REQUIRE((r.status == proxy_status::complete));
    BOOST_TEST(r.header.length == 16u);
    BOOST_TEST(!r.header.source.has_value());
    // ...but the address block is skipped whatever it says (§2.2).
    r = parse_proxy_header(v2(0x20, 0x11, v4_block));
    BOOST_TEST_REQUIRE((r.status == proxy_status::complete));
    BOOST_TEST(r.header.length == 28u);
    BOOST_TEST(!r.header.source.has_value());
}

BOOST_AUTO_TEST_CASE(unserved_families_keep_the_proxy_address)
{
    for (unsigned char fam : {0x00, 0x12, 0x22, 0x31, 0x32}) {
        auto const r = parse_proxy_header(v2(0x21, fam, std::string(fam >> 4 == 3 ? 216 : 36, '\0')));
        BOOST_TEST_REQUIRE((r.status == proxy_status::complete), "fam=" << unsigned{fam});
        BOOST_TEST(!r.header.source.has_value());
    }
}

BOOST_AUTO_TEST_CASE(every_truncation_is_incomplete)
{
    auto const h = v2(0x21, 0x21, v6_block);
    for (std::size_t n = 0; n < h.size(); ++n)
        BOOST_TEST((parse_proxy_header(std::string_view(h).substr(0, n)).status == proxy_status::incomplete),
                   "n=" << n);
}

BOOST_AUTO_TEST_CASE(refuses_bad_version_command_family)
{
    BOOST_TEST((parse_proxy_header(v2(0x11, 0x11, v4_block)).status == proxy_status::invalid));  // version 1
    BOOST_TEST((parse_proxy_header(v2(0x31, 0x11, v4_block)).status == proxy_status::invalid));  // version 3
    BOOST_TEST((parse_proxy_header(v2(0x22, 0x11, v4_block)).status == proxy_status::invalid));  // command 2
    BOOST_TEST((parse_proxy_header(v2(0x21, 0x41, v4_block)).status == proxy_status::invalid));  // family 4
    BOOST_TEST((parse_proxy_header(v2(0x21, 0x13, v4_block)).status == proxy_status::invalid));  // transport 3
}

BOOST_AUTO_TEST_CASE(refuses_an_address_block_too_short)
{
    BOOST_TEST((parse_proxy_header(v2(0x21, 0x11, v4_block.substr(0, 11))).status == proxy_status::invalid));
    BOOST_TEST((parse_proxy_header(v2(0x21, 0x21, v4_block)).status == proxy_status::invalid));
}

BOOST_AUTO_TEST_CASE(refuses_an_oversized_header_at_once)
{
    // The length alone decides: nothing past the 16 fixed octets is awaited.
    auto const big = v2_sig + "\x21\x11"s + bytes({0x04, 0x01});  // 1025
    BOOST_TEST((parse_proxy_header(big).status == proxy_status::invalid));
    auto const most = v2(0x21, 0x11, v4_block + bytes({0x04, 0x03, 0xf1}) + std::string(0x3f1, '\0'));
    BOOST_TEST(most.size() == proxy_header_max);
    BOOST_TEST((parse_proxy_header(most).status == proxy_status::complete));
    auto const max_len = v2_sig + "\x21\x11"s + bytes({0xff, 0xff});
    BOOST_TEST((parse_proxy_header(max_len).status == proxy_status::invalid));
}

BOOST_AUTO_TEST_CASE(refuses_a_broken_signature)
{
    auto h = v2(0x21, 0x11, v4_block);
    h[4] = 'x';
    BOOST_TEST((parse_proxy_header(h).status == proxy_status::invalid));
    BOOST_TEST((parse_proxy_header("\r\n\r\nX").status == proxy_status::invalid));
    BOOST_TEST((parse_proxy_header("\x16\x03\x01\x02\x00"s).status == proxy_status::invalid));  // a TLS ClientHello
    BOOST_TEST((parse_proxy_header("\r\n").status == proxy_status::incomplete));
}

BOOST_AUTO_TEST_SUITE_END()
