#include "popgate/proto/sasl.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

using namespace popgate::proto;
namespace bdata = boost::unit_test::data;
using namespace std::string_view_literals;
using step_kind = sasl_step::kind;

namespace {

// Printable form of test bytes: NUL, CR, LF shown escaped.
std::string shown(std::string_view s)
{
    std::string out;
    for (char const c : s) {
        if (c == '\0') out += "\\0";
        else if (c == '\r') out += "\\r";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

char const* kind_name(step_kind k)
{
    switch (k) {
    case step_kind::challenge: return "challenge";
    case step_kind::check_password: return "check_password";
    case step_kind::check_cram: return "check_cram";
    case step_kind::failed: return "failed";
    case step_kind::cancelled: return "cancelled";
    }
    return "?";
}

// Evaluates `step` once (it is often a call that advances the state machine).
#define CHECK_KIND(step, want)                                                                     \
    do {                                                                                           \
        auto const kind_ = (step).what;                                                            \
        BOOST_TEST((kind_ == (want)), "got " << kind_name(kind_) << ", want " << kind_name(want)); \
    } while (0)

constexpr std::string_view rfc2195_challenge = "<1896.697170952@postoffice.reston.mci.net>";

}  // namespace

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(sasl_base64, *boost::unit_test::label("unit"))

struct b64_case {
    std::string_view plain;
    std::string_view encoded;
};
std::ostream& operator<<(std::ostream& os, b64_case const& c) { return os << shown(c.plain); }

// RFC 4648 §10, plus a few with bytes a text table would not show.
constexpr b64_case vectors[]{
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
    {"\0alice\0secret"sv, "AGFsaWNlAHNlY3JldA=="},
    {"\xff\xfe\xfd"sv, "//79"},
    {"\xfb\xff"sv, "+/8="},
    {"\0"sv, "AA=="},
};

BOOST_DATA_TEST_CASE(rfc4648_vectors, bdata::make(vectors), c)
{
    BOOST_TEST(base64_encode(c.plain) == c.encoded);
    auto const d = base64_decode(c.encoded);
    BOOST_TEST_REQUIRE(d.has_value());
    BOOST_TEST(*d == c.plain);
}

BOOST_AUTO_TEST_CASE(round_trips_every_byte_and_length)
{
    std::string all;
    for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
    for (std::size_t n = 0; n <= all.size(); ++n) {
        auto const in = std::string_view(all).substr(all.size() - n);
        auto const enc = base64_encode(in);
        BOOST_TEST(enc.size() == (n + 2) / 3 * 4);
        auto const dec = base64_decode(enc);
        BOOST_TEST_REQUIRE(dec.has_value(), "n=" << n);
        BOOST_TEST((*dec == in), "n=" << n);
    }
}

struct bad_b64_case {
    std::string_view text;
};
std::ostream& operator<<(std::ostream& os, bad_b64_case const& c) { return os << '\'' << shown(c.text) << '\''; }

constexpr bad_b64_case bad_b64[]{
    {"Zg="},          // wrong length
    {"Zg"},           // missing padding
    {"Z"},
    {"Zm9vY"},
    {"="},
    {"===="},
    {"Z==="},         // at most two '='
    {"Zg==Zg=="},     // '=' in the middle
    {"Zm=v"},
    {"Zg=a"},         // data after '='
    {"Zm9v YmFy"},    // whitespace
    {"Zm9vYmFy "},
    {" Zm9vYmFy"},
    {"Zm9v\r\nYmFy"},
    {"Zm9vYmF\ty"},
    {"Zm9v    "},
    {"Zm9v!mFy"},     // bad characters
    {"Zm9v-_Fy"},     // base64url is not base64
    {"Zm9v\0mFy"sv},
    {"Zm9v\xc3\xa9mF"sv},
};

BOOST_DATA_TEST_CASE(refuses_bad_base64, bdata::make(bad_b64), c)
{
    auto const d = base64_decode(c.text);
    BOOST_TEST_REQUIRE(!d.has_value());
    BOOST_TEST((d.error() == errc::bad_base64));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(sasl_mechanism_names, *boost::unit_test::label("unit"))

struct mech_case {
    std::string_view text;
    std::optional<sasl_mech> mech;
};
std::ostream& operator<<(std::ostream& os, mech_case const& c) { return os << '\'' << c.text << '\''; }

mech_case const mechs[]{
    {"PLAIN", sasl_mech::plain},       {"plain", sasl_mech::plain},       {"pLaIn", sasl_mech::plain},
    {"LOGIN", sasl_mech::login},       {"login", sasl_mech::login},       {"CRAM-MD5", sasl_mech::cram_md5},
    {"cram-md5", sasl_mech::cram_md5}, {"Cram-Md5", sasl_mech::cram_md5}, {"", std::nullopt},
    {"CRAM_MD5", std::nullopt},        {"CRAM-MD", std::nullopt},         {"PLAIN ", std::nullopt},
    {" PLAIN", std::nullopt},          {"PLAINX", std::nullopt},          {"SCRAM-SHA-256", std::nullopt},
    {"GSSAPI", std::nullopt},          {"XOAUTH2", std::nullopt},         {"PLAIN\0"sv, std::nullopt},
};

BOOST_DATA_TEST_CASE(parses_case_insensitively, bdata::make(mechs), c)
{
    auto const m = parse_sasl_mech(c.text);
    BOOST_TEST(m.has_value() == c.mech.has_value());
    if (m && c.mech) BOOST_TEST((*m == *c.mech));
}

BOOST_AUTO_TEST_CASE(names_and_plaintext_flag)
{
    BOOST_TEST(sasl_mech_name(sasl_mech::plain) == "PLAIN");
    BOOST_TEST(sasl_mech_name(sasl_mech::login) == "LOGIN");
    BOOST_TEST(sasl_mech_name(sasl_mech::cram_md5) == "CRAM-MD5");
    for (auto m : {sasl_mech::plain, sasl_mech::login, sasl_mech::cram_md5}) {
        auto const back = parse_sasl_mech(sasl_mech_name(m));
        BOOST_TEST_REQUIRE(back.has_value());
        BOOST_TEST((*back == m));
    }
    BOOST_TEST(sasl_is_plaintext(sasl_mech::plain));
    BOOST_TEST(sasl_is_plaintext(sasl_mech::login));
    BOOST_TEST(!sasl_is_plaintext(sasl_mech::cram_md5));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(sasl_plain, *boost::unit_test::label("unit"))

struct plain_case {
    std::string_view message;
    bool ok;
    std::string_view authcid;
    std::string_view password;
};
std::ostream& operator<<(std::ostream& os, plain_case const& c) { return os << shown(c.message); }

constexpr plain_case plain_cases[]{
    {"\0alice\0secret"sv, true, "alice", "secret"},
    {"alice\0alice\0secret"sv, true, "alice", "secret"},     // authzid = authcid
    {"\0alice\0pass word with spaces"sv, true, "alice", "pass word with spaces"},
    {"\0al ice\0x"sv, true, "al ice", "x"},
    {"\0alice@example.org\0\xc3\xa9t\xc3\xa9"sv, true, "alice@example.org", "\xc3\xa9t\xc3\xa9"},
    {"bob\0alice\0secret"sv, false, "", ""},                // proxy authorization refused
    {"Alice\0alice\0secret"sv, false, "", ""},              // authzid compared exactly
    {"alice\0secret"sv, false, "", ""},                     // one NUL
    {"\0alicesecret"sv, false, "", ""},
    {"alicesecret"sv, false, "", ""},                       // no NUL
    {""sv, false, "", ""},
    {"\0\0secret"sv, false, "", ""},                        // empty authcid
    {"\0alice\0"sv, false, "", ""},                         // empty password
    {"\0alice\0sec\0ret"sv, false, "", ""},                 // a third NUL
    {"\0\0"sv, false, "", ""},
};

BOOST_DATA_TEST_CASE(parse_plain_messages, bdata::make(plain_cases), c)
{
    auto const r = parse_plain(c.message);
    BOOST_TEST(r.has_value() == c.ok);
    if (r && c.ok) {
        BOOST_TEST(r->authcid == c.authcid);
        BOOST_TEST(r->password == c.password);
    }
    if (!r) BOOST_TEST((r.error() == errc::bad_arguments));
    // The same through the state machine, as an initial response and as a
    // response to the empty challenge.
    sasl_server with_ir(sasl_mech::plain);
    auto const s1 = with_ir.start(base64_encode(c.message));
    CHECK_KIND(s1, c.ok ? step_kind::check_password : step_kind::failed);
    sasl_server without_ir(sasl_mech::plain);
    auto const ch = without_ir.start(std::nullopt);
    CHECK_KIND(ch, step_kind::challenge);
    BOOST_TEST(ch.challenge.empty());
    auto const s2 = without_ir.next(base64_encode(c.message));
    CHECK_KIND(s2, c.ok ? step_kind::check_password : step_kind::failed);
    if (c.ok) {
        BOOST_TEST(s1.authcid == c.authcid);
        BOOST_TEST(s1.password == c.password);
        BOOST_TEST(s2.authcid == c.authcid);
        BOOST_TEST(s2.password == c.password);
    } else {
        BOOST_TEST(s1.authcid.empty());
        BOOST_TEST(s1.password.empty());
        BOOST_TEST(s1.error.has_value());
    }
}

BOOST_AUTO_TEST_CASE(equals_sign_is_an_empty_initial_response)
{
    // RFC 4954 §4: "=" is an empty response; empty is not a PLAIN message.
    sasl_server s(sasl_mech::plain);
    auto const r = s.start("="sv);
    CHECK_KIND(r, step_kind::failed);
    BOOST_TEST((r.error == errc::bad_arguments));
}

BOOST_AUTO_TEST_CASE(bad_base64_response_fails)
{
    sasl_server s(sasl_mech::plain);
    auto const r = s.start("AGFsaWNlAHNlY3JldA="sv);  // one '=' short
    CHECK_KIND(r, step_kind::failed);
    BOOST_TEST((r.error == errc::bad_base64));
}

BOOST_AUTO_TEST_CASE(nothing_after_completion)
{
    sasl_server s(sasl_mech::plain);
    auto const r = s.start(base64_encode("\0alice\0secret"sv));
    CHECK_KIND(r, step_kind::check_password);
    auto const again = s.next(base64_encode("\0bob\0secret"sv));
    CHECK_KIND(again, step_kind::failed);
    BOOST_TEST(again.authcid.empty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(sasl_login, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(two_steps)
{
    sasl_server s(sasl_mech::login);
    auto const c1 = s.start(std::nullopt);
    CHECK_KIND(c1, step_kind::challenge);
    BOOST_TEST(c1.challenge == "Username:");
    auto const c2 = s.next(base64_encode("alice"));
    CHECK_KIND(c2, step_kind::challenge);
    BOOST_TEST(c2.challenge == "Password:");
    BOOST_TEST(c2.authcid.empty());  // nothing to check yet
    auto const done = s.next(base64_encode("s3cret pass"));
    CHECK_KIND(done, step_kind::check_password);
    BOOST_TEST(done.authcid == "alice");
    BOOST_TEST(done.password == "s3cret pass");
    CHECK_KIND(s.next(base64_encode("more")), step_kind::failed);
}

BOOST_AUTO_TEST_CASE(initial_response_is_the_user_name)
{
    sasl_server s(sasl_mech::login);
    auto const c = s.start(base64_encode("bob"));
    CHECK_KIND(c, step_kind::challenge);
    BOOST_TEST(c.challenge == "Password:");
    auto const done = s.next(base64_encode("pw"));
    CHECK_KIND(done, step_kind::check_password);
    BOOST_TEST(done.authcid == "bob");
    BOOST_TEST(done.password == "pw");
}

BOOST_AUTO_TEST_CASE(empty_or_nul_fields_fail)
{
    {
        sasl_server s(sasl_mech::login);
        s.start(std::nullopt);
        auto const r = s.next("");
        CHECK_KIND(r, step_kind::failed);
    }
    {
        sasl_server s(sasl_mech::login);
        s.start(std::nullopt);
        s.next(base64_encode("alice"));
        CHECK_KIND(s.next(""), step_kind::failed);
    }
    {
        sasl_server s(sasl_mech::login);
        s.start(std::nullopt);
        auto const r = s.next(base64_encode("al\0ice"sv));
        CHECK_KIND(r, step_kind::failed);
        BOOST_TEST((r.error == errc::nul_byte));
    }
    {
        sasl_server s(sasl_mech::login);
        s.start(std::nullopt);
        s.next(base64_encode("alice"));
        auto const r = s.next(base64_encode("pa\0ss"sv));
        CHECK_KIND(r, step_kind::failed);
        BOOST_TEST((r.error == errc::nul_byte));
    }
    {
        // CRAM-MD5 too: on PostgreSQL the lookup of such a name was a store
        // failure ([SYS/TEMP], no failure counted, no delay).
        sasl_server s(sasl_mech::cram_md5, "<1.2@gw>");
        s.start(std::nullopt);
        auto const r = s.next(base64_encode("al\0ice 0123456789abcdef0123456789abcdef"sv));
        CHECK_KIND(r, step_kind::failed);
        BOOST_TEST((r.error == errc::nul_byte));
    }
}

BOOST_AUTO_TEST_CASE(star_cancels_at_any_step)
{
    {
        sasl_server s(sasl_mech::login);
        s.start(std::nullopt);
        CHECK_KIND(s.next("*"), step_kind::cancelled);
        CHECK_KIND(s.next(base64_encode("alice")), step_kind::failed);  // over
    }
    {
        sasl_server s(sasl_mech::login);
        s.start(std::nullopt);
        s.next(base64_encode("alice"));
        auto const r = s.next("*");
        CHECK_KIND(r, step_kind::cancelled);
        BOOST_TEST(r.authcid.empty());
        BOOST_TEST(r.password.empty());
        CHECK_KIND(s.next(base64_encode("pw")), step_kind::failed);
    }
    {
        sasl_server s(sasl_mech::plain);
        s.start(std::nullopt);
        CHECK_KIND(s.next("*"), step_kind::cancelled);
    }
}

BOOST_AUTO_TEST_CASE(restart_after_failure)
{
    sasl_server s(sasl_mech::login);
    s.start(std::nullopt);
    CHECK_KIND(s.next("!!!!"), step_kind::failed);
    CHECK_KIND(s.start(std::nullopt), step_kind::challenge);
    CHECK_KIND(s.next(base64_encode("alice")), step_kind::challenge);
    CHECK_KIND(s.next(base64_encode("pw")), step_kind::check_password);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(sasl_cram_md5, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(start_sends_the_challenge)
{
    sasl_server s(sasl_mech::cram_md5, std::string(rfc2195_challenge));
    auto const c = s.start(std::nullopt);
    CHECK_KIND(c, step_kind::challenge);
    BOOST_TEST(c.challenge == rfc2195_challenge);
    // RFC 2195 §2 example response.
    auto const r = s.next("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");
    CHECK_KIND(r, step_kind::check_cram);
    BOOST_TEST(r.authcid == "tim");
    BOOST_TEST(r.digest == "b913a602c7eda7a495b4e6e7334d3890");
    BOOST_TEST(r.password.empty());
}

struct cram_case {
    std::string_view response;  // decoded
    bool ok;
    std::string_view authcid;
    std::string_view digest;
};
std::ostream& operator<<(std::ostream& os, cram_case const& c) { return os << shown(c.response); }

constexpr cram_case cram_cases[]{
    {"tim b913a602c7eda7a495b4e6e7334d3890", true, "tim", "b913a602c7eda7a495b4e6e7334d3890"},
    {"tim B913A602C7EDA7A495B4E6E7334D3890", true, "tim", "b913a602c7eda7a495b4e6e7334d3890"},
    {"John Q Smith b913a602c7eda7a495b4e6e7334d3890", true, "John Q Smith", "b913a602c7eda7a495b4e6e7334d3890"},
    {"a@b.example 00000000000000000000000000000000", true, "a@b.example", "00000000000000000000000000000000"},
    {"tim b913a602c7eda7a495b4e6e7334d389", false, "", ""},     // 31 hex digits
    {"tim b913a602c7eda7a495b4e6e7334d38900", false, "", ""},   // 33
    {"tim g913a602c7eda7a495b4e6e7334d3890", false, "", ""},    // not hex
    {"tim b913a602c7eda7a495b4e6e7334d389 ", false, "", ""},
    {" b913a602c7eda7a495b4e6e7334d3890", false, "", ""},       // no user
    {"b913a602c7eda7a495b4e6e7334d3890", false, "", ""},        // no space
    {"", false, "", ""},
    {"tim  b913a602c7eda7a495b4e6e7334d389", false, "", ""},
};

BOOST_DATA_TEST_CASE(parses_responses, bdata::make(cram_cases), c)
{
    sasl_server s(sasl_mech::cram_md5, "<1.2@host>");
    CHECK_KIND(s.start(std::nullopt), step_kind::challenge);
    auto const r = s.next(base64_encode(c.response));
    CHECK_KIND(r, c.ok ? step_kind::check_cram : step_kind::failed);
    if (c.ok) {
        BOOST_TEST(r.authcid == c.authcid);
        BOOST_TEST(r.digest == c.digest);
    } else {
        BOOST_TEST((r.error == errc::bad_arguments));
        BOOST_TEST(r.authcid.empty());
    }
}

BOOST_AUTO_TEST_CASE(initial_response_is_refused)
{
    // RFC 2195: the server speaks first.
    sasl_server s(sasl_mech::cram_md5, "<1.2@host>");
    auto const r = s.start(base64_encode("tim b913a602c7eda7a495b4e6e7334d3890"));
    CHECK_KIND(r, step_kind::failed);
    BOOST_TEST(r.authcid.empty());
    sasl_server t(sasl_mech::cram_md5, "<1.2@host>");
    CHECK_KIND(t.start("="sv), step_kind::failed);
}

BOOST_AUTO_TEST_CASE(star_cancels)
{
    sasl_server s(sasl_mech::cram_md5, "<1.2@host>");
    s.start(std::nullopt);
    CHECK_KIND(s.next("*"), step_kind::cancelled);
    CHECK_KIND(s.next(base64_encode("tim b913a602c7eda7a495b4e6e7334d3890")), step_kind::failed);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(sasl_limits, *boost::unit_test::label("unit"))

std::string plain_of_size(std::size_t n)
{
    std::string m = std::string("\0alice\0"sv);
    m.append(n - m.size(), 'p');
    return m;
}

BOOST_AUTO_TEST_CASE(response_up_to_max_is_accepted)
{
    sasl_server s(sasl_mech::plain);
    auto const r = s.start(base64_encode(plain_of_size(sasl_server::max_response)));
    CHECK_KIND(r, step_kind::check_password);
    BOOST_TEST(r.password.size() == sasl_server::max_response - 7);
}

BOOST_AUTO_TEST_CASE(overlong_response_is_refused)
{
    for (auto const n : {sasl_server::max_response + 1, sasl_server::max_response + 2,
                         sasl_server::max_response + 3, std::size_t{100000}}) {
        sasl_server s(sasl_mech::plain);
        auto const r = s.start(base64_encode(plain_of_size(n)));
        CHECK_KIND(r, step_kind::failed);
        BOOST_TEST((r.error == errc::too_long), "n=" << n);
        BOOST_TEST(r.password.empty());
    }
    // Refused by length before decoding: even garbage gets too_long.
    sasl_server s(sasl_mech::login);
    s.start(std::nullopt);
    auto const r = s.next(std::string(6000, '!'));
    BOOST_TEST((r.error == errc::too_long));
}

BOOST_AUTO_TEST_SUITE_END()
