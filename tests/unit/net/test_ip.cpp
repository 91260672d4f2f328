#include "popgate/net/ip.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

using namespace popgate::net;
namespace bdata = boost::unit_test::data;

namespace {

ip_address ip(std::string_view text)
{
    auto a = parse_ip(text);
    BOOST_TEST_REQUIRE(a.has_value(), "test address does not parse: " << text);
    return *a;
}

}  // namespace

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(ip_parse, *boost::unit_test::label("unit"))

struct good_case {
    std::string_view text;
    bool v4;
    std::string_view printed;  // to_string() of the parsed address
};
std::ostream& operator<<(std::ostream& os, good_case const& c) { return os << c.text; }

constexpr good_case good[]{
    {"192.0.2.7", true, "192.0.2.7"},
    {"0.0.0.0", true, "0.0.0.0"},
    {"255.255.255.255", true, "255.255.255.255"},
    {"10.0.0.1", true, "10.0.0.1"},
    {"100.200.0.9", true, "100.200.0.9"},
    {"::", false, "::"},
    {"::1", false, "::1"},
    {"2001:db8::1", false, "2001:db8::1"},
    {"2001:DB8::1", false, "2001:db8::1"},  // RFC 5952 §4.3: printed lowercase
    {"2001:0db8:0000:0000:0000:0000:0000:0001", false, "2001:db8::1"},  // §4.1, §4.2.1
    {"2001:db8:0:0:1:0:0:1", false, "2001:db8::1:0:0:1"},                // §4.2.3: first longest run
    {"2001:db8:0:1:1:1:1:1", false, "2001:db8:0:1:1:1:1:1"},             // §4.2.2: not for one field
    {"2001:0:0:1::1", false, "2001:0:0:1::1"},                           // longest run wins
    {"fe80::abcd:ef01", false, "fe80::abcd:ef01"},
    {"1::", false, "1::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
    // No dotted tail for anything but a mapped address (glibc prints these two
    // as "::1.2.3.4" and "::0.1.0.0").
    {"::102:304", false, "::102:304"},
    {"::1:0", false, "::1:0"},
    {"::1.2.3.4", false, "::102:304"},
    {"64:ff9b::192.0.2.7", false, "64:ff9b::c000:207"},
    // IPv4-mapped IPv6 is the IPv4 client.
    {"::ffff:192.0.2.7", true, "192.0.2.7"},
    {"::FFFF:192.0.2.7", true, "192.0.2.7"},
    {"::ffff:c000:207", true, "192.0.2.7"},
    {"0:0:0:0:0:ffff:127.0.0.1", true, "127.0.0.1"},
};

BOOST_DATA_TEST_CASE(parses_and_prints, bdata::make(good), c)
{
    std::string why = "untouched";
    auto const a = parse_ip(c.text, &why);
    BOOST_TEST_REQUIRE(a.has_value());
    BOOST_TEST(a->v4 == c.v4);
    BOOST_TEST(a->to_string() == c.printed);
    BOOST_TEST(why == "untouched");
    // The printed form parses back to the same address.
    auto const again = parse_ip(a->to_string());
    BOOST_TEST_REQUIRE(again.has_value());
    BOOST_TEST((*again == *a));
}

struct bad_case {
    std::string_view text;
};
std::ostream& operator<<(std::ostream& os, bad_case const& c) { return os << '\'' << c.text << '\''; }

constexpr bad_case bad[]{
    {""},
    {" "},
    {"localhost"},
    {"1.2.3"},              // shorthand
    {"10.1"},
    {"1"},
    {"1.2.3.4.5"},
    {"256.1.1.1"},
    {"1.2.3.256"},
    {"01.2.3.4"},           // leading zeros: octal to some parsers
    {"1.2.3.04"},
    {"1.02.3.4"},
    {"00.0.0.0"},
    {"0x7f.0.0.1"},
    {"1.2.3.4 "},
    {" 1.2.3.4"},
    {"1.2.3.4\n"},
    {"1.2.3.-4"},
    {"1..2.3"},
    {"[::1]"},              // brackets
    {"[2001:db8::1]"},
    {"fe80::1%eth0"},       // zone ids
    {"fe80::1%1"},
    {":::"},
    {"1::2::3"},
    {"2001:db8::1::"},
    {"12345::1"},
    {"g::1"},
    {"1:2:3:4:5:6:7:8:9"},
    {"1:2:3:4:5:6:7"},
    {"::ffff:256.0.0.1"},
    {"::ffff:01.2.3.4x"},
    {"2001:db8::1/64"},     // a network is not an address
    {"192.0.2.7/32"},
    {"0000:0000:0000:0000:0000:0000:0000:0000:0000:0000"},  // longer than 45
};

BOOST_DATA_TEST_CASE(refuses, bdata::make(bad), c)
{
    std::string why;
    auto const a = parse_ip(c.text, &why);
    BOOST_TEST(!a.has_value());
    BOOST_TEST(!why.empty());
}

BOOST_AUTO_TEST_CASE(refuses_embedded_nul)
{
    using namespace std::string_view_literals;
    BOOST_TEST(!parse_ip("1.2.3.4\0"sv).has_value());
    BOOST_TEST(!parse_ip("::1\0abc"sv).has_value());
}

BOOST_AUTO_TEST_CASE(why_names_the_input)
{
    std::string why;
    BOOST_TEST(!parse_ip("999.1.1.1", &why).has_value());
    BOOST_TEST(why.find("999.1.1.1") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(from_v4_matches_parse)
{
    auto const a = ip_address::from_v4(0xC0000207u);
    BOOST_TEST(a.v4);
    BOOST_TEST(a.to_string() == "192.0.2.7");
    BOOST_TEST((a == ip("192.0.2.7")));
    BOOST_TEST((a == ip("::ffff:192.0.2.7")));
    BOOST_TEST((a != ip("192.0.2.8")));
}

BOOST_AUTO_TEST_CASE(from_v6_matches_parse_and_folds_mapped)
{
    // The bytes accept(2) gives: fe80::1 (a link-local peer, whatever its zone).
    std::array<std::uint8_t, 16> b{0xfe, 0x80};
    b[15] = 1;
    auto const ll = ip_address::from_v6(b);
    BOOST_TEST(!ll.v4);
    BOOST_TEST(ll.to_string() == "fe80::1");
    BOOST_TEST((ll == ip("fe80::1")));
    // ::ffff:192.0.2.7 from a dual-stack socket is the IPv4 client.
    std::array<std::uint8_t, 16> m{};
    m[10] = m[11] = 0xff;
    m[12] = 192, m[13] = 0, m[14] = 2, m[15] = 7;
    auto const mapped = ip_address::from_v6(m);
    BOOST_TEST(mapped.v4);
    BOOST_TEST((mapped == ip("192.0.2.7")));
    BOOST_TEST(mapped.to_string() == "192.0.2.7");
}

BOOST_AUTO_TEST_CASE(v4_and_v6_with_same_tail_differ)
{
    // ::c000:207 is a (deprecated IPv4-compatible) IPv6 address, not 192.0.2.7.
    auto const v6 = ip("::c000:207");
    BOOST_TEST(!v6.v4);
    BOOST_TEST((v6 != ip("192.0.2.7")));
}

BOOST_AUTO_TEST_CASE(hand_built_mapped_address_keeps_dotted_tail)
{
    // RFC 5952 §5. parse_ip never returns this (it folds to IPv4), but a
    // default-built address with the mapped bytes still prints sensibly.
    auto a = ip_address::from_v4(0xC0000207u);
    a.v4 = false;
    BOOST_TEST(a.to_string() == "::ffff:192.0.2.7");
    BOOST_TEST(ip_address{}.to_string() == "::");
}

struct loopback_case {
    std::string_view text;
    bool loopback;
};
std::ostream& operator<<(std::ostream& os, loopback_case const& c) { return os << c.text; }

constexpr loopback_case loopbacks[]{
    {"127.0.0.1", true},   {"127.255.255.254", true}, {"127.1.2.3", true}, {"::1", true},
    {"::ffff:127.0.0.1", true},
    {"128.0.0.1", false},  {"126.255.255.255", false}, {"0.0.0.0", false}, {"::", false},
    {"::2", false},        {"::127.0.0.1", false},     {"1::1", false},    {"10.127.0.1", false},
};

BOOST_DATA_TEST_CASE(is_loopback, bdata::make(loopbacks), c)
{
    BOOST_TEST(ip(c.text).is_loopback() == c.loopback);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(ip_cidr, *boost::unit_test::label("unit"))

struct cidr_case {
    std::string_view text;
    std::string_view printed;
    unsigned prefix;
    bool v4;
};
std::ostream& operator<<(std::ostream& os, cidr_case const& c) { return os << c.text; }

constexpr cidr_case good_cidrs[]{
    {"192.0.2.0/24", "192.0.2.0/24", 24, true},
    {"0.0.0.0/0", "0.0.0.0/0", 0, true},
    {"192.0.2.7/32", "192.0.2.7/32", 32, true},
    {"192.0.2.7", "192.0.2.7/32", 32, true},  // a bare address is a host network
    {"128.0.0.0/1", "128.0.0.0/1", 1, true},
    {"10.0.0.0/8", "10.0.0.0/8", 8, true},
    {"::/0", "::/0", 0, false},
    {"2001:db8::/32", "2001:db8::/32", 32, false},
    {"2001:DB8::/32", "2001:db8::/32", 32, false},
    {"2001:db8::1/128", "2001:db8::1/128", 128, false},
    {"2001:db8::1", "2001:db8::1/128", 128, false},
    {"8000::/1", "8000::/1", 1, false},
    {"::ffff:192.0.2.0/24", "192.0.2.0/24", 24, true},  // mapped text is an IPv4 network
};

BOOST_DATA_TEST_CASE(parses, bdata::make(good_cidrs), c)
{
    std::string why = "untouched";
    auto const n = parse_cidr(c.text, &why);
    BOOST_TEST_REQUIRE(n.has_value());
    BOOST_TEST(n->to_string() == c.printed);
    BOOST_TEST(n->prefix == c.prefix);
    BOOST_TEST(n->base.v4 == c.v4);
    BOOST_TEST(n->max_prefix() == (c.v4 ? 32u : 128u));
    BOOST_TEST(why == "untouched");
}

struct bad_cidr_case {
    std::string_view text;
    std::string_view why_has;  // a word the explanation must contain
};
std::ostream& operator<<(std::ostream& os, bad_cidr_case const& c) { return os << '\'' << c.text << '\''; }

constexpr bad_cidr_case bad_cidrs[]{
    {"10.0.0.0/33", "prefix"},
    {"10.0.0.0/-1", "prefix"},
    {"10.0.0.0/08", "prefix"},
    {"10.0.0.0/00", "prefix"},
    {"10.0.0.0/", "prefix"},
    {"10.0.0.0/+8", "prefix"},
    {"10.0.0.0/8/8", "prefix"},
    {"2001:db8:8000::/32", "host bits"},
    {"10.0.0.0/8 ", "prefix"},
    {"10.0.0.0/1000", "prefix"},
    {"10.0.0.0/4294967304", "prefix"},  // 2^32 + 8 must not wrap to 8
    {"10.0.0.0/x", "prefix"},
    {"2001:db8::/129", "prefix"},
    {"2001:db8::/-1", "prefix"},
    {"2001:db8::/064", "prefix"},
    {"::ffff:10.0.0.0/104", "'::ffff:10.0.0.0' is IPv4-mapped: its prefix length counts the IPv4 bits (0..32); "
                            "write the IPv4 network 10.0.0.0/8"},  // mapped = IPv4
    {"::ffff:10.0.0.0/x", "bad prefix length '/x' (0..32)"},
    {"192.168.1.0/255.255.255.0", "'/255.255.255.0' is a netmask, not a prefix length; write /24"},
    {"10.0.0.0/255.0.255.0", "is a netmask, not a prefix length; write /0../32"},
    {"10.0.0.0/0.0.0.0", "write /0"},
    {"", "IP"},
    {"/8", "IP"},
    {"10.0.0/8", "IPv4"},
    {"x", "IPv4"},
    {"[2001:db8::]/32", "IPv6"},
    // host bits below the prefix: almost always a typo
    {"192.0.2.5/24", "host bits"},
    {"10.0.0.1/8", "host bits"},
    {"128.0.0.1/1", "host bits"},
    {"1.0.0.0/0", "host bits"},
    {"2001:db8::1/64", "host bits"},
    {"2001:db8:4000::/33", "host bits"},
    {"::1/0", "host bits"},
};

BOOST_DATA_TEST_CASE(refuses, bdata::make(bad_cidrs), c)
{
    std::string why;
    auto const n = parse_cidr(c.text, &why);
    BOOST_TEST(!n.has_value());
    BOOST_TEST(why.find(c.why_has) != std::string::npos, "why = " << why);
}

BOOST_AUTO_TEST_CASE(host_bits_message_names_the_network)
{
    std::string why;
    BOOST_TEST(!parse_cidr("192.0.2.5/24", &why).has_value());
    BOOST_TEST(why.find("192.0.2.0/24") != std::string::npos, why);
}

BOOST_AUTO_TEST_CASE(allow_host_bits_masks)
{
    auto const a = parse_cidr("192.0.2.5/24", nullptr, true);
    BOOST_TEST_REQUIRE(a.has_value());
    BOOST_TEST(a->to_string() == "192.0.2.0/24");
    auto const b = parse_cidr("2001:db8:1:2:3:4:5:6/64", nullptr, true);
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST(b->to_string() == "2001:db8:1:2::/64");
    auto const c = parse_cidr("255.255.255.255/0", nullptr, true);
    BOOST_TEST_REQUIRE(c.has_value());
    BOOST_TEST(c->to_string() == "0.0.0.0/0");
    // Still refused: a bad prefix is not a host-bits matter.
    BOOST_TEST(!parse_cidr("192.0.2.5/33", nullptr, true).has_value());
}

struct contains_case {
    std::string_view network;
    std::string_view client;
    bool inside;
};
std::ostream& operator<<(std::ostream& os, contains_case const& c)
{
    return os << c.network << " contains " << c.client << " = " << c.inside;
}

constexpr contains_case contains_cases[]{
    {"192.0.2.0/24", "192.0.2.0", true},
    {"192.0.2.0/24", "192.0.2.255", true},
    {"192.0.2.0/24", "192.0.3.0", false},
    {"192.0.2.0/24", "192.0.1.255", false},
    {"192.0.2.0/24", "::ffff:192.0.2.9", true},  // a mapped client is the IPv4 client
    {"192.0.2.0/24", "::ffff:192.0.3.9", false},
    {"192.0.2.0/24", "::c000:209", false},       // IPv4-compatible is IPv6
    {"0.0.0.0/0", "0.0.0.0", true},
    {"0.0.0.0/0", "255.255.255.255", true},
    {"0.0.0.0/0", "::ffff:1.2.3.4", true},
    {"0.0.0.0/0", "::1", false},                 // families never mix
    {"0.0.0.0/0", "::ffff:0:0", true},           // = 0.0.0.0
    {"192.0.2.7/32", "192.0.2.7", true},
    {"192.0.2.7/32", "192.0.2.6", false},
    {"192.0.2.7/32", "192.0.2.8", false},
    {"192.0.2.7", "192.0.2.7", true},
    {"128.0.0.0/1", "128.0.0.0", true},
    {"128.0.0.0/1", "255.255.255.255", true},
    {"128.0.0.0/1", "127.255.255.255", false},
    {"0.0.0.0/1", "127.255.255.255", true},
    {"0.0.0.0/1", "128.0.0.0", false},
    {"10.0.0.0/31", "10.0.0.1", true},
    {"10.0.0.0/31", "10.0.0.2", false},
    {"10.1.128.0/17", "10.1.255.255", true},
    {"10.1.128.0/17", "10.1.127.255", false},
    {"::/0", "::", true},
    {"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
    {"::/0", "192.0.2.7", false},
    {"::/0", "::ffff:192.0.2.7", false},         // folded to IPv4 first
    {"2001:db8::/32", "2001:db8:ffff::1", true},
    {"2001:db8::/32", "2001:db9::", false},
    {"2001:db8::/32", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false},
    {"2001:db8::1/128", "2001:db8::1", true},
    {"2001:db8::1/128", "2001:db8::", false},
    {"2001:db8::1/128", "2001:db8::2", false},
    {"8000::/1", "8000::", true},
    {"8000::/1", "ffff::", true},
    {"8000::/1", "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
    {"2001:db8:1:2::/64", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
    {"2001:db8:1:2::/64", "2001:db8:1:3::", false},
    {"2001:db8::/127", "2001:db8::1", true},
    {"2001:db8::/127", "2001:db8::2", false},
};

BOOST_DATA_TEST_CASE(contains, bdata::make(contains_cases), c)
{
    std::string why;
    auto const n = parse_cidr(c.network, &why);
    BOOST_TEST_REQUIRE(n.has_value(), why);
    BOOST_TEST(n->contains(ip(c.client)) == c.inside);
}

BOOST_AUTO_TEST_CASE(mask_keeps_prefix_bits)
{
    BOOST_TEST(mask(ip("192.0.2.255"), 24).to_string() == "192.0.2.0");
    BOOST_TEST(mask(ip("255.255.255.255"), 1).to_string() == "128.0.0.0");
    BOOST_TEST(mask(ip("255.255.255.255"), 0).to_string() == "0.0.0.0");
    BOOST_TEST(mask(ip("255.255.255.255"), 0).v4);  // IPv4 stays IPv4 (mapped prefix kept)
    BOOST_TEST(mask(ip("255.255.255.255"), 32).to_string() == "255.255.255.255");
    BOOST_TEST(mask(ip("255.255.255.255"), 99).to_string() == "255.255.255.255");
    BOOST_TEST(mask(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1).to_string() == "8000::");
    BOOST_TEST(mask(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 63).to_string() == "ffff:ffff:ffff:fffe::");
    BOOST_TEST(mask(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 0).to_string() == "::");
    BOOST_TEST(mask(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 128).to_string() ==
               "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    BOOST_TEST(mask(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 200).to_string() ==
               "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(ip_grant_key, *boost::unit_test::label("unit"))

struct key_case {
    std::string_view client;
    unsigned prefix;
    std::string_view key;
};
std::ostream& operator<<(std::ostream& os, key_case const& c) { return os << c.client << " /" << c.prefix; }

constexpr key_case keys[]{
    {"192.0.2.7", 64, "192.0.2.7"},  // IPv4 as is, whatever the IPv6 prefix
    {"192.0.2.7", 0, "192.0.2.7"},
    {"192.0.2.7", 8, "192.0.2.7"},
    {"::ffff:192.0.2.7", 64, "192.0.2.7"},
    {"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::"},
    {"2001:db8:1:2::5", 64, "2001:db8:1:2::"},
    {"2001:DB8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::"},
    {"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"},
    {"2001:db8:1:2:3:4:5:6", 200, "2001:db8:1:2:3:4:5:6"},  // clamped to 128
    {"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::"},
    {"2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::"},
    {"2001:db8:1:ff02:3:4:5:6", 56, "2001:db8:1:ff00::"},
    {"2001:db8:1:2:3:4:5:6", 0, "::"},
    // ::/8 (reserved) whole: ::1 is one host, and ::/64 held it with every
    // IPv4-compatible address a proxy may name.
    {"::1", 64, "::1"},
    {"::1", 128, "::1"},
    {"::5", 48, "::5"},
    {"::203.0.113.7", 64, "::cb00:7107"},
    {"ff::1", 64, "ff::1"},
    {"100::1", 64, "100::"},  // just past ::/8: masked as usual
    // Link-local (fe80::/10) whole, whatever the prefix: fe80::/64 is every link's.
    {"fe80::1", 64, "fe80::1"},
    {"fe80::a:b:c:d", 48, "fe80::a:b:c:d"},
    {"febf::1", 64, "febf::1"},
    {"fec0::1", 64, "fec0::"},  // just past fe80::/10: site-local, masked as usual
    {"fe7f::1", 64, "fe7f::"},  // just before it
};

BOOST_DATA_TEST_CASE(normalises, bdata::make(keys), c)
{
    auto const k = grant_key(ip(c.client), c.prefix);
    BOOST_TEST(k.to_string() == c.key);
    BOOST_TEST(k.v4 == ip(c.client).v4);
}

BOOST_AUTO_TEST_CASE(privacy_addresses_of_one_64_share_a_key)
{
    auto const a = grant_key(ip("2001:db8:1:2:1111:2222:3333:4444"), 64);
    auto const b = grant_key(ip("2001:db8:1:2:5555:6666:7777:8888"), 64);
    auto const other = grant_key(ip("2001:db8:1:3:1111:2222:3333:4444"), 64);
    BOOST_TEST((a == b));
    BOOST_TEST((a != other));
}

// Limits and failure counts take link-local clients by the prefix too: a
// host cannot escape them with fresh fe80:: addresses. Elsewhere the same
// key as the grant.
BOOST_AUTO_TEST_CASE(limit_key_masks_link_local_too)
{
    BOOST_TEST(limit_key(ip("fe80::1"), 64).to_string() == "fe80::");
    BOOST_TEST((limit_key(ip("fe80::1"), 64) == limit_key(ip("fe80::2:3"), 64)));
    BOOST_TEST(limit_key(ip("fe80::1"), 128).to_string() == "fe80::1");
    for (auto const& c : keys) {
        bool const link_local = c.client.starts_with("fe8") || c.client.starts_with("feb");
        if (!link_local) BOOST_TEST((limit_key(ip(c.client), c.prefix) == grant_key(ip(c.client), c.prefix)), c);
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// The canonical spelling of hand-written text (issue 17 item 6): what the
// admin command refuses and the daemon warns about, with what to write.
BOOST_AUTO_TEST_SUITE(ip_spelling, *boost::unit_test::label("unit"))

struct spelling_case {
    std::string_view text;
    std::string_view problem;  // "" = canonical; else the end of the message
};
std::ostream& operator<<(std::ostream& os, spelling_case const& c) { return os << '\'' << c.text << '\''; }

constexpr spelling_case addresses[]{
    {"192.0.2.7", ""},
    {"::1", ""},
    {"::", ""},
    {"2001:db8::1:0:0:1", ""},
    {"::ffff:1", ""},
    {"0::1", "; write ::1"},
    {"0:0:0:0:0:0:0:1", "; write ::1"},
    {"2001:DB8::1", "; write 2001:db8::1"},
    {"2001:0db8::1", "; write 2001:db8::1"},
    {"2001:db8:0:0:1::1", "; write 2001:db8::1:0:0:1"},
    {"2001:db8::1:1:1:1:1", "; write 2001:db8:0:1:1:1:1:1"},
    {"::ffff:7f00:3", "IPv4-mapped IPv6 '::ffff:7f00:3' is not accepted; write the IPv4 address 127.0.0.3"},
    {"::ffff:192.0.2.7", "IPv4-mapped IPv6 '::ffff:192.0.2.7' is not accepted; write the IPv4 address 192.0.2.7"},
};

BOOST_DATA_TEST_CASE(addresses_in_canonical_form, bdata::make(addresses), c)
{
    auto const problem = spelling_problem(c.text, ip(c.text));
    if (c.problem.empty()) BOOST_TEST(problem.empty(), problem);
    else BOOST_TEST(problem.ends_with(c.problem), problem);
}

constexpr spelling_case networks[]{
    {"192.0.2.0/24", ""},
    {"192.0.2.7", ""},  // a bare address stays bare
    {"192.0.2.7/32", ""},
    {"2001:db8::/32", ""},
    {"2001:db8::1", ""},
    {"0::1", "; write ::1"},
    {"0::1/128", "; write ::1/128"},
    {"2001:0db8::/32", "; write 2001:db8::/32"},
    {"::ffff:192.0.2.0/24", "IPv4-mapped IPv6 '::ffff:192.0.2.0/24' is not accepted; write the IPv4 network 192.0.2.0/24"},
    {"::ffff:7f00:3", "write the IPv4 network 127.0.0.3"},
};

BOOST_DATA_TEST_CASE(networks_in_canonical_form, bdata::make(networks), c)
{
    auto const n = parse_cidr(c.text);
    BOOST_TEST_REQUIRE(n.has_value());
    auto const problem = spelling_problem(c.text, *n);
    if (c.problem.empty()) BOOST_TEST(problem.empty(), problem);
    else BOOST_TEST(problem.ends_with(c.problem), problem);
}

BOOST_AUTO_TEST_CASE(host_bits_message_names_the_network_and_the_host)
{
    std::string why;
    BOOST_TEST(!parse_cidr("127.0.7.9/16", &why).has_value());
    BOOST_TEST(why == "host bits set in '127.0.7.9/16'; write the network 127.0.0.0/16, or 127.0.7.9/32 for one address");
    BOOST_TEST(!parse_cidr("2001:db8::1/32", &why).has_value());
    BOOST_TEST(why == "host bits set in '2001:db8::1/32'; write the network 2001:db8::/32, or 2001:db8::1/128 for one "
                      "address");
}

BOOST_AUTO_TEST_SUITE_END()
