#include "popgate/proto/pop3.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

using namespace popgate::proto;
namespace bdata = boost::unit_test::data;

namespace {

// The CRLF size of a whole message, through the streaming counter.
std::uint64_t wire_size(std::string_view data)
{
    crlf_counter c;
    c.feed(data);
    return c.size();
}

// Printable form of test bytes: CR, LF, NUL and others shown escaped.
std::string escaped(std::string_view s)
{
    std::string out;
    for (char const c : s) {
        if (c == '\r') out += "\\r";
        else if (c == '\n') out += "\\n";
        else if (c == '\0') out += "\\0";
        else out += c;
    }
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(pop3_parser, *boost::unit_test::label("unit"))

struct valid_case {
    std::string_view line;
    pop3_verb verb;
    std::string_view args;
};
std::ostream& operator<<(std::ostream& os, valid_case const& c) { return os << escaped(c.line); }

static valid_case const valid[]{
    {"USER alice", pop3_verb::user, "alice"},
    {"user alice", pop3_verb::user, "alice"},
    {"UsEr alice@example.org", pop3_verb::user, "alice@example.org"},
    {"PASS secret with spaces", pop3_verb::pass, "secret with spaces"},
    {"APOP mrose c4c9334bac560ecc979e58001b3e22fb", pop3_verb::apop, "mrose c4c9334bac560ecc979e58001b3e22fb"},
    {"AUTH PLAIN", pop3_verb::auth, "PLAIN"},
    {"AUTH", pop3_verb::auth, ""},
    {"STAT", pop3_verb::stat, ""},
    {"LIST", pop3_verb::list, ""},
    {"LIST 3", pop3_verb::list, "3"},
    {"UIDL", pop3_verb::uidl, ""},
    {"uidl 1", pop3_verb::uidl, "1"},
    {"TOP 1 10", pop3_verb::top, "1 10"},
    {"top 1 0", pop3_verb::top, "1 0"},
    {"RETR 1", pop3_verb::retr, "1"},
    {"DELE 2", pop3_verb::dele, "2"},
    {"RSET", pop3_verb::rset, ""},
    {"NOOP", pop3_verb::noop, ""},
    {"QUIT", pop3_verb::quit, ""},
    {"quit", pop3_verb::quit, ""},
    {"CAPA", pop3_verb::capa, ""},
    {"STLS", pop3_verb::stls, ""},
    {"STAT ", pop3_verb::stat, ""},      // trailing SP: empty argument
    {"USER  alice", pop3_verb::user, " alice"},   // args kept verbatim; helpers are strict
};

BOOST_DATA_TEST_CASE(parses_valid_lines, bdata::make(valid), c)
{
    auto r = parse_pop3(c.line);
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST((r->verb == c.verb));
    BOOST_TEST(r->args == c.args);
}

struct invalid_case {
    std::string_view line;
    errc error;
};
std::ostream& operator<<(std::ostream& os, invalid_case const& c) { return os << escaped(c.line); }

using namespace std::string_view_literals;
static invalid_case const invalid[]{
    {"", errc::empty_line},
    {"FOO", errc::unknown_command},
    {"US", errc::unknown_command},
    {"USERS alice", errc::unknown_command},
    {" USER alice", errc::unknown_command},
    {"USER\talice", errc::unknown_command},
    {"STARTTLS", errc::unknown_command},
    {"EHLO x", errc::unknown_command},
    {"USER al\0ice"sv, errc::nul_byte},
    {"\0"sv, errc::nul_byte},
    {"USER a\rb", errc::bare_cr_or_lf},
    {"USER a\nb", errc::bare_cr_or_lf},
};

BOOST_DATA_TEST_CASE(rejects_invalid_lines, bdata::make(invalid), c)
{
    auto r = parse_pop3(c.line);
    BOOST_TEST_REQUIRE(r.has_error());
    BOOST_TEST((r.error() == c.error));
}

BOOST_AUTO_TEST_CASE(line_length_limit_counts_crlf)
{
    // RFC 2449 §4: 255 octets including CRLF, so 253 without it.
    std::string line = "USER " + std::string(248, 'a');
    BOOST_TEST(line.size() == 253u);
    BOOST_TEST(parse_pop3(line).has_value());
    line += 'a';
    BOOST_TEST((parse_pop3(line).error() == errc::line_too_long));
    BOOST_TEST((parse_pop3(std::string(100000, 'A')).error() == errc::line_too_long));
    // Length is checked before content.
    BOOST_TEST((parse_pop3(std::string(300, '\0')).error() == errc::line_too_long));
    // A site's limits.pop3_max_line above RFC 2449's, CRLF still counted.
    line = "PASS " + std::string(995, 'p');
    BOOST_TEST(parse_pop3(line, 1002).has_value());
    BOOST_TEST((parse_pop3(line, 1001).error() == errc::line_too_long));
}

BOOST_AUTO_TEST_CASE(secret_args_marked)
{
    BOOST_TEST(pop3_secret_args(pop3_verb::pass));
    BOOST_TEST(pop3_secret_args(pop3_verb::apop));
    BOOST_TEST(pop3_secret_args(pop3_verb::auth));
    BOOST_TEST(!pop3_secret_args(pop3_verb::user));
    BOOST_TEST(!pop3_secret_args(pop3_verb::retr));
    BOOST_TEST(!pop3_secret_args(pop3_verb::quit));
}

BOOST_AUTO_TEST_CASE(verb_names_round_trip)
{
    for (auto v : {pop3_verb::user, pop3_verb::pass, pop3_verb::apop, pop3_verb::auth, pop3_verb::stat,
                   pop3_verb::list, pop3_verb::uidl, pop3_verb::top, pop3_verb::retr, pop3_verb::dele,
                   pop3_verb::rset, pop3_verb::noop, pop3_verb::quit, pop3_verb::capa, pop3_verb::stls}) {
        auto r = parse_pop3(to_string(v));
        BOOST_TEST_REQUIRE(r.has_value());
        BOOST_TEST((r->verb == v));
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pop3_arguments, *boost::unit_test::label("unit"))

struct number_case {
    std::string_view text;
    std::optional<std::uint32_t> value;   // nullopt: bad_number
};
std::ostream& operator<<(std::ostream& os, number_case const& c) { return os << '"' << c.text << '"'; }

static number_case const numbers[]{
    {"1", 1u},
    {"42", 42u},
    {"007", 7u},
    {"2147483647", 2147483647u},
    {"0", std::nullopt},
    {"00", std::nullopt},
    {"-1", std::nullopt},
    {"+1", std::nullopt},
    {"2147483648", std::nullopt},
    {"4294967296", std::nullopt},
    {"99999999999999999999999", std::nullopt},
    {"1 ", std::nullopt},
    {" 1", std::nullopt},
    {"1a", std::nullopt},
    {"0x10", std::nullopt},
    {"", std::nullopt},
};

BOOST_DATA_TEST_CASE(message_numbers, bdata::make(numbers), c)
{
    auto r = parse_msg_number(c.text);
    if (c.value) {
        BOOST_TEST_REQUIRE(r.has_value());
        BOOST_TEST(*r == *c.value);
    } else {
        BOOST_TEST_REQUIRE(r.has_error());
        BOOST_TEST((r.error() == errc::bad_number));
    }
}

struct top_case {
    std::string_view text;
    bool ok;
    std::uint32_t msg;
    std::uint32_t lines;
};
std::ostream& operator<<(std::ostream& os, top_case const& c) { return os << '"' << c.text << '"'; }

static top_case const tops[]{
    {"1 0", true, 1, 0},
    {"1 10", true, 1, 10},
    {"2147483647 4294967295", true, 2147483647u, 4294967295u},
    {"1", false, 0, 0},
    {"1 ", false, 0, 0},
    {" 1 0", false, 0, 0},
    {"0 1", false, 0, 0},
    {"1 -1", false, 0, 0},
    {"1 4294967296", true, 1, 4294967295u},  // past any message's last line: the whole body, as Dovecot
    {"1 000000000000000000000000000012", true, 1, 12},
    {"1 99999999999999999999999999999999", true, 1, 4294967295u},
    {"1 4294967296x", false, 0, 0},
    {"1  0", false, 0, 0},
    {"1 0 ", false, 0, 0},
    {"1 0 5", false, 0, 0},
    {"a 1", false, 0, 0},
    {"", false, 0, 0},
};

BOOST_DATA_TEST_CASE(top_arguments, bdata::make(tops), c)
{
    auto r = parse_top_args(c.text);
    BOOST_TEST(r.has_value() == c.ok);
    if (c.ok && r) {
        BOOST_TEST(r->first == c.msg);
        BOOST_TEST(r->second == c.lines);
    }
}

BOOST_AUTO_TEST_CASE(top_missing_count_is_bad_arguments)
{
    BOOST_TEST((parse_top_args("1").error() == errc::bad_arguments));
    BOOST_TEST((parse_top_args("0 1").error() == errc::bad_number));
}

struct apop_case {
    std::string_view text;
    bool ok;
    std::string_view name;
};
std::ostream& operator<<(std::ostream& os, apop_case const& c) { return os << '"' << c.text << '"'; }

static apop_case const apops[]{
    {"mrose c4c9334bac560ecc979e58001b3e22fb", true, "mrose"},
    {"alice@example.org C4C9334BAC560ECC979E58001B3E22FB", true, "alice@example.org"},
    {"mrose c4c9334bac560ecc979e58001b3e22f", false, ""},     // 31 digits
    {"mrose c4c9334bac560ecc979e58001b3e22fbb", false, ""},   // 33 digits
    {"mrose g4c9334bac560ecc979e58001b3e22fb", false, ""},
    {"mrose  c4c9334bac560ecc979e58001b3e22fb", false, ""},
    {" c4c9334bac560ecc979e58001b3e22fb", false, ""},
    {"mrose", false, ""},
    {"c4c9334bac560ecc979e58001b3e22fb", false, ""},
    {"", false, ""},
};

BOOST_DATA_TEST_CASE(apop_arguments, bdata::make(apops), c)
{
    auto r = parse_apop_args(c.text);
    BOOST_TEST(r.has_value() == c.ok);
    if (c.ok && r) {
        BOOST_TEST(r->first == c.name);
        BOOST_TEST(r->second.size() == 32u);
    }
    if (!c.ok && !r) BOOST_TEST((r.error() == errc::bad_arguments));
}

BOOST_AUTO_TEST_CASE(reply_helpers)
{
    BOOST_TEST(pop3_ok("2 320") == "+OK 2 320\r\n");
    BOOST_TEST(pop3_err("no such message") == "-ERR no such message\r\n");
    BOOST_TEST(pop3_ok("") == "+OK\r\n");
    BOOST_TEST(pop3_err("") == "-ERR\r\n");
    // A reply can never become two lines.
    BOOST_TEST(pop3_err("a\r\n+OK b") == "-ERR a  +OK b\r\n");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pop3_apop_timestamp, *boost::unit_test::label("unit"))

// RFC 1939 §7 as clients check it: "<local@domain>", one '@', non-empty
// parts, only [A-Za-z0-9._-] otherwise (mpop refuses '+', '/', '=').
bool apop_timestamp_ok(std::string_view ts)
{
    auto const ok = [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == '-';
    };
    if (ts.size() < 5 || ts.front() != '<' || ts.back() != '>') return false;
    auto const inner = ts.substr(1, ts.size() - 2);
    auto const at = inner.find('@');
    if (at == inner.npos || at == 0 || at + 1 == inner.size() || inner.find('@', at + 1) != inner.npos) return false;
    for (std::size_t i = 0; i < inner.size(); ++i)
        if (i != at && !ok(inner[i])) return false;
    return true;
}

BOOST_AUTO_TEST_CASE(timestamp_format)
{
    auto const ts = make_apop_timestamp(1896, 1700000000, 0xdeadbeefu, "mail.example.org");
    BOOST_TEST(ts == "<1896.1700000000.00000000deadbeef@mail.example.org>");
    BOOST_TEST(apop_timestamp_ok(ts));
}

BOOST_AUTO_TEST_CASE(timestamp_sanitises_host)
{
    auto const ts = make_apop_timestamp(1, 2, ~std::uint64_t{0}, "a+b/c=d@e f>g<");
    BOOST_TEST(ts == "<1.2.ffffffffffffffff@a-b-c-d-e-f-g->");
    BOOST_TEST(apop_timestamp_ok(ts));
    BOOST_TEST(apop_timestamp_ok(make_apop_timestamp(1, 2, 3, "")));
    BOOST_TEST(apop_timestamp_ok(make_apop_timestamp(1, 2, 3, std::string(1000, 'h'))));
    BOOST_TEST(make_apop_timestamp(1, 2, 3, std::string(1000, 'h')).size() < 300u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pop3_stuffing, *boost::unit_test::label("unit"))

namespace {

// Reference on the whole message, built from lines rather than a byte state
// machine: split at LF, drop one CR before each LF, stuff, join with CRLF.
std::string reference(std::string_view msg, std::optional<std::uint32_t> top)
{
    std::vector<std::string> lines;
    std::size_t pos = 0;
    while (pos < msg.size()) {
        auto const nl = msg.find('\n', pos);
        if (nl == msg.npos) {
            lines.emplace_back(msg.substr(pos));   // last line without a line end
            break;
        }
        std::string l{msg.substr(pos, nl - pos)};
        if (!l.empty() && l.back() == '\r') l.pop_back();
        lines.push_back(std::move(l));
        pos = nl + 1;
    }
    std::string out;
    bool header = true;
    std::uint32_t body = 0;
    for (auto const& l : lines) {
        if (top && !header && body >= *top) break;
        if (!l.empty() && l.front() == '.') out += '.';
        out += l;
        out += "\r\n";
        if (top) {
            if (header) header = !l.empty();
            else ++body;
        }
    }
    return out + ".\r\n";
}

std::string stuff(std::vector<std::string_view> const& chunks, std::optional<std::uint32_t> top)
{
    pop3_stuffer s{top};
    std::string out;
    for (auto c : chunks) s.feed(c, out);
    s.finish(out);
    return out;
}

std::string label(std::optional<std::uint32_t> top) { return top ? "TOP " + std::to_string(*top) : "RETR"; }

}  // namespace

struct message_case {
    std::string_view msg;
};
std::ostream& operator<<(std::ostream& os, message_case const& c) { return os << escaped(c.msg); }

static message_case const messages[]{
    {""},
    {"\n"},
    {"\r\n"},
    {"."},
    {".\r\n"},
    {"..\n.\n"},
    {"Subject: x\n\nbody\n"},
    {"Subject: x\r\n\r\nbody\r\n"},
    {"Subject: x\r\n\r\n.leading dot\r\n..two\r\n.\r\nlast line no newline"},
    {"Subject: x\n\n.a\n.b\r\n\n.\n\n"},
    {"A: 1\r\nB: 2\r\n"},                       // header only, no separator
    {"A: 1\r\nB: 2"},                           // header only, no final line end
    {"A: 1\r\n\r\n"},                           // separator, empty body
    {"A: 1\n\nb1\nb2\nb3\nb4\nb5\nb6\n"},
    {"bare\rcr\r\r\n.\rx\r"},                   // bare CRs are content, even at the end
    {"\r\r\n\r"},
    {"mixed\r\nends\nhere\r\n\n.\r\n..\n"},
};

static std::optional<std::uint32_t> const tops[]{std::nullopt, 0u, 1u, 2u, 5u};

BOOST_DATA_TEST_CASE(every_two_chunk_split_matches_reference, bdata::make(messages), c)
{
    for (auto const top : tops) {
        auto const want = reference(c.msg, top);
        BOOST_TEST_CONTEXT(label(top))
        {
            BOOST_TEST(escaped(stuff({c.msg}, top)) == escaped(want));
            for (std::size_t i = 0; i <= c.msg.size(); ++i) {
                BOOST_TEST_CONTEXT("split at " << i)
                BOOST_TEST(escaped(stuff({c.msg.substr(0, i), c.msg.substr(i)}, top)) == escaped(want));
            }
        }
    }
}

BOOST_DATA_TEST_CASE(every_three_chunk_split_matches_reference, bdata::make(messages), c)
{
    for (auto const top : tops) {
        auto const want = reference(c.msg, top);
        std::size_t mismatches = 0;
        for (std::size_t i = 0; i <= c.msg.size(); ++i)
            for (std::size_t j = i; j <= c.msg.size(); ++j)
                if (stuff({c.msg.substr(0, i), c.msg.substr(i, j - i), c.msg.substr(j)}, top) != want)
                    ++mismatches;
        BOOST_TEST(mismatches == 0u, label(top) << ": " << mismatches << " mismatching splits");
    }
}

BOOST_DATA_TEST_CASE(byte_by_byte_matches_reference, bdata::make(messages), c)
{
    for (auto const top : tops) {
        std::vector<std::string_view> bytes;
        for (std::size_t i = 0; i < c.msg.size(); ++i) bytes.push_back(c.msg.substr(i, 1));
        BOOST_TEST(escaped(stuff(bytes, top)) == escaped(reference(c.msg, top)), label(top));
    }
}

// Hand-written expectations so the reference itself is checked too.
BOOST_AUTO_TEST_CASE(known_outputs)
{
    BOOST_TEST(stuff({""}, std::nullopt) == ".\r\n");
    BOOST_TEST(stuff({"a"}, std::nullopt) == "a\r\n.\r\n");
    BOOST_TEST(stuff({".\n"}, std::nullopt) == "..\r\n.\r\n");
    BOOST_TEST(stuff({"H: v\n\n.b\nc"}, std::nullopt) == "H: v\r\n\r\n..b\r\nc\r\n.\r\n");
    BOOST_TEST(stuff({"H: v\r", "\n\r", "\n.b\r\nc\r\n"}, 0u) == "H: v\r\n\r\n.\r\n");
    BOOST_TEST(stuff({"H: v\n\n.b\nc\nd\n"}, 1u) == "H: v\r\n\r\n..b\r\n.\r\n");
    BOOST_TEST(stuff({"H: v\n"}, 0u) == "H: v\r\n.\r\n");
    BOOST_TEST(stuff({"a\rb"}, std::nullopt) == "a\rb\r\n.\r\n");
}

BOOST_AUTO_TEST_CASE(done_signals_top_is_complete)
{
    std::string out;
    pop3_stuffer top0{0u};
    top0.feed("H: v\r\n", out);
    BOOST_TEST(!top0.done());
    top0.feed("\r", out);
    BOOST_TEST(!top0.done());   // CR alone does not end the separator yet
    top0.feed("\nbody\r\n", out);
    BOOST_TEST(top0.done());
    top0.feed("more body\r\n", out);   // ignored
    top0.finish(out);
    BOOST_TEST(out == "H: v\r\n\r\n.\r\n");

    pop3_stuffer retr;
    retr.feed("H: v\n\nbody\n", out);
    BOOST_TEST(!retr.done());
    retr.finish(out);
    BOOST_TEST(retr.done());
}

BOOST_AUTO_TEST_CASE(finish_twice_adds_one_terminator)
{
    pop3_stuffer s;
    std::string out;
    s.feed("x", out);
    s.finish(out);
    s.finish(out);
    BOOST_TEST(out == "x\r\n.\r\n");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pop3_sizes, *boost::unit_test::label("unit"))

struct size_case {
    std::string_view data;
    std::uint64_t size;
};
std::ostream& operator<<(std::ostream& os, size_case const& c) { return os << escaped(c.data); }

static size_case const sizes[]{
    {"", 0},       {"a", 1},          {"\n", 2},     {"\r\n", 2},           {"a\nb\n", 6},
    {"a\r\nb\n", 6}, {"\r", 1},       {"\r\r\n", 3}, {"\n\n", 4},           {".\n", 3},
    {"H: v\n\nbody", 12},
};

BOOST_DATA_TEST_CASE(crlf_size_counts_wire_octets, bdata::make(sizes), c)
{
    BOOST_TEST(wire_size(c.data) == c.size);
    for (std::size_t i = 0; i <= c.data.size(); ++i) {
        crlf_counter k;
        k.feed(c.data.substr(0, i));
        k.feed(c.data.substr(i));
        BOOST_TEST(k.size() == c.size, "split at " << i);
    }
}

// The size LIST reports must match what RETR sends, minus stuffing and terminator.
BOOST_DATA_TEST_CASE(size_matches_retr_output, bdata::make(pop3_stuffing::messages), c)
{
    std::string out;
    pop3_stuffer s;
    s.feed(c.msg, out);
    s.finish(out);
    std::uint64_t stuffed = 0;
    for (std::size_t i = 0; i < out.size(); ++i)
        if (out[i] == '.' && (i == 0 || out[i - 1] == '\n')) ++stuffed;   // includes terminator dot
    std::uint64_t wire = out.size() - stuffed - 2;   // minus terminator CRLF
    // A message without a final line end gets a CRLF that is not part of its size.
    bool const ends_with_line_end = c.msg.empty() || c.msg.back() == '\n';
    if (!ends_with_line_end) wire -= 2;
    BOOST_TEST(wire_size(c.msg) == wire);
}

BOOST_AUTO_TEST_SUITE_END()
