#include "popgate/proto/smtp.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace popgate::proto;
namespace bdata = boost::unit_test::data;

namespace {

// The first parameter with this (upper-case) keyword, or nullptr.
mail_param const* find(mail_args const& a, std::string_view keyword)
{
    for (auto const& p : a.params)
        if (p.keyword == keyword) return &p;
    return nullptr;
}

// Printable form of a test input with CR/LF/NUL made visible.
std::string visible(std::string_view s)
{
    std::string out;
    for (char c : s) {
        if (c == '\r') out += "\\r";
        else if (c == '\n') out += "\\n";
        else if (c == '\0') out += "\\0";
        else out.push_back(c);
    }
    return out;
}

}  // namespace

// ======================================================================
BOOST_AUTO_TEST_SUITE(smtp_parser, *boost::unit_test::label("unit"))

struct cmd_case {
    std::string_view line;
    smtp_verb verb;
    std::string_view args;
};
std::ostream& operator<<(std::ostream& os, cmd_case const& c) { return os << visible(c.line); }

static cmd_case const valid_commands[]{
    {"EHLO client.example.org", smtp_verb::ehlo, "client.example.org"},
    {"helo x", smtp_verb::helo, "x"},
    {"MAIL FROM:<a@b.example>", smtp_verb::mail, "<a@b.example>"},
    {"mail from:<a@b.example> SIZE=10", smtp_verb::mail, "<a@b.example> SIZE=10"},
    {"MAIL FROM:   <a@b.example>", smtp_verb::mail, "<a@b.example>"},
    {"MAIL FROM:<>", smtp_verb::mail, "<>"},
    {"RCPT TO:<c@d.example>", smtp_verb::rcpt, "<c@d.example>"},
    {"Rcpt To: <c@d.example>", smtp_verb::rcpt, "<c@d.example>"},
    {"DATA", smtp_verb::data, ""},
    {"data ", smtp_verb::data, ""},
    {"RSET", smtp_verb::rset, ""},
    {"NOOP hello", smtp_verb::noop, "hello"},
    {"QUIT", smtp_verb::quit, ""},
    {"VRFY bob", smtp_verb::vrfy, "bob"},
    {"HELP", smtp_verb::help, ""},
    {"StartTLS", smtp_verb::starttls, ""},
    {"AUTH PLAIN AGJvYgBzZWNyZXQ=", smtp_verb::auth, "PLAIN AGJvYgBzZWNyZXQ="},
    {"EXPN list", smtp_verb::expn, "list"},
};

BOOST_DATA_TEST_CASE(parses_valid_lines, bdata::make(valid_commands), c)
{
    auto r = parse_smtp(c.line);
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST((r->verb == c.verb));
    BOOST_TEST(r->args == c.args);
}

struct bad_cmd_case {
    std::string_view line;
    errc error;
};
std::ostream& operator<<(std::ostream& os, bad_cmd_case const& c) { return os << visible(c.line); }

using namespace std::string_view_literals;
static bad_cmd_case const invalid_commands[]{
    {"", errc::empty_line},
    {"FOO bar", errc::unknown_command},
    {"EHLOX", errc::unknown_command},
    {" EHLO x", errc::unknown_command},
    {"EHLO\tx", errc::unknown_command},
    {"MAIL", errc::bad_arguments},
    {"MAIL <a@b>", errc::bad_arguments},
    {"MAIL  FROM:<a@b>", errc::bad_arguments},      // exactly one space after MAIL
    {"MAIL FROM <a@b>", errc::bad_arguments},
    {"RCPT FROM:<a@b>", errc::bad_arguments},
    {"RCPT", errc::bad_arguments},
    {"DATA\r", errc::bare_cr_or_lf},
    {"NOOP a\nRSET", errc::bare_cr_or_lf},
    {"MAIL FROM:<a@b>\rRCPT TO:<c@d>", errc::bare_cr_or_lf},
    {"NOOP a\0b"sv, errc::nul_byte},
};

BOOST_DATA_TEST_CASE(rejects_invalid_lines, bdata::make(invalid_commands), c)
{
    auto r = parse_smtp(c.line);
    BOOST_TEST_REQUIRE(r.has_error());
    BOOST_TEST((r.error() == c.error));
}

BOOST_AUTO_TEST_CASE(line_limit_counts_crlf)
{
    // RFC 5321 §4.5.3.1.4: 512 octets including CRLF, so 510 without.
    auto const ok = "NOOP " + std::string(505, 'a');
    BOOST_TEST(ok.size() == 510u);
    BOOST_TEST(parse_smtp(ok).has_value());
    BOOST_TEST((parse_smtp(ok + "a").error() == errc::line_too_long));
}

BOOST_AUTO_TEST_CASE(configurable_limit_for_auth)
{
    auto const line = "AUTH PLAIN " + std::string(2000, 'Q');
    BOOST_TEST((parse_smtp(line).error() == errc::line_too_long));
    auto r = parse_smtp(line, 4096);
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST((r->verb == smtp_verb::auth));
}

BOOST_AUTO_TEST_CASE(args_view_the_line)
{
    std::string const line = "MAIL FROM:<a@b>";
    auto r = parse_smtp(line);
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->args.data() == line.data() + 10);
}

BOOST_AUTO_TEST_CASE(verb_names)
{
    BOOST_TEST(verb_name(smtp_verb::starttls) == "STARTTLS");
    BOOST_TEST(verb_name(smtp_verb::mail) == "MAIL");
}

BOOST_AUTO_TEST_CASE(command_table)
{
    static_assert(spec_for(smtp_verb::auth).secret_args);
    static_assert(spec_for(smtp_verb::rcpt).allowed_in(smtp_phase::in_mail));
    static_assert(!spec_for(smtp_verb::rcpt).allowed_in(smtp_phase::greeted));
    static_assert(spec_for(smtp_verb::data).allowed_in(smtp_phase::in_rcpt));
    static_assert(!spec_for(smtp_verb::data).allowed_in(smtp_phase::in_mail));
    static_assert(!spec_for(smtp_verb::mail).allowed_in(smtp_phase::connected));
    static_assert(!spec_for(smtp_verb::starttls).allowed_in(smtp_phase::in_mail));

    // RFC 2920 §3.1: these must end a pipelined group.
    for (auto v : {smtp_verb::ehlo, smtp_verb::data, smtp_verb::vrfy, smtp_verb::expn,
                   smtp_verb::help, smtp_verb::noop, smtp_verb::quit, smtp_verb::starttls,
                   smtp_verb::auth})
        BOOST_TEST(spec_for(v).ends_group, verb_name(v));
    for (auto v : {smtp_verb::mail, smtp_verb::rcpt, smtp_verb::rset})
        BOOST_TEST(!spec_for(v).ends_group, verb_name(v));

    for (auto v : {smtp_verb::ehlo, smtp_verb::helo, smtp_verb::starttls, smtp_verb::noop,
                   smtp_verb::rset, smtp_verb::quit})
        BOOST_TEST(spec_for(v).pre_tls, verb_name(v));
    for (auto v : {smtp_verb::mail, smtp_verb::rcpt, smtp_verb::data, smtp_verb::auth,
                   smtp_verb::vrfy, smtp_verb::expn, smtp_verb::help})
        BOOST_TEST(!spec_for(v).pre_tls, verb_name(v));

    for (auto v : {smtp_verb::helo, smtp_verb::ehlo, smtp_verb::mail, smtp_verb::rcpt,
                   smtp_verb::data, smtp_verb::rset, smtp_verb::noop, smtp_verb::quit,
                   smtp_verb::vrfy, smtp_verb::help, smtp_verb::starttls, smtp_verb::auth,
                   smtp_verb::expn}) {
        BOOST_TEST((spec_for(v).verb == v));
        BOOST_TEST(spec_for(v).secret_args == (v == smtp_verb::auth));
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ======================================================================
BOOST_AUTO_TEST_SUITE(smtp_address, *boost::unit_test::label("unit"))

struct path_case {
    std::string_view args;
    std::string_view local;
    std::string_view domain;
    std::string_view canonical;  // to_string()
};
std::ostream& operator<<(std::ostream& os, path_case const& c) { return os << c.args; }

static path_case const valid_paths[]{
    {"<alice@example.com>", "alice", "example.com", "alice@example.com"},
    {"<first.last+tag@mail.example-1.org>", "first.last+tag", "mail.example-1.org",
     "first.last+tag@mail.example-1.org"},
    {"<\"john doe\"@example.com>", "john doe", "example.com", "\"john doe\"@example.com"},
    {"<\"a\\\"b\"@x>", "a\"b", "x", "\"a\\\"b\"@x"},
    {"<\"a\\\\b\"@x>", "a\\b", "x", "\"a\\\\b\"@x"},
    {"<\"plain\"@x>", "plain", "x", "plain@x"},         // quotes not needed: dropped
    {"<\"a..b\"@x>", "a..b", "x", "\"a..b\"@x"},
    {"<@relay.example:user@c.example>", "user", "c.example", "user@c.example"},
    {"<@a.example,@b.example:user@c.example>", "user", "c.example", "user@c.example"},
    {"<@[192.0.2.9]:user@c.example>", "user", "c.example", "user@c.example"},
    {"<u@[192.0.2.1]>", "u", "[192.0.2.1]", "u@[192.0.2.1]"},
    {"<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]", "u@[IPv6:2001:db8::1]"},
    {"<u@[IPv6:2001:db8:0:0:0:0:0:1]>", "u", "[IPv6:2001:db8:0:0:0:0:0:1]",
     "u@[IPv6:2001:db8:0:0:0:0:0:1]"},
    {"<u@[IPv6:::ffff:192.0.2.1]>", "u", "[IPv6:::ffff:192.0.2.1]", "u@[IPv6:::ffff:192.0.2.1]"},
    {"<u@[ipv6:::]>", "u", "[ipv6:::]", "u@[ipv6:::]"},
    {"  <u@x>", "u", "x", "u@x"},
    {"<u@x>   ", "u", "x", "u@x"},
};

BOOST_DATA_TEST_CASE(parses_valid_paths, bdata::make(valid_paths), c)
{
    for (auto parse : {&parse_mail_from, &parse_rcpt_to}) {
        auto r = parse(c.args);
        BOOST_TEST_REQUIRE(r.has_value());
        BOOST_TEST(!r->path.null_path);
        BOOST_TEST(r->path.local == c.local);
        BOOST_TEST(r->path.domain == c.domain);
        BOOST_TEST(r->path.to_string() == c.canonical);
        BOOST_TEST(r->params.empty());
    }
}

struct bad_path_case {
    std::string_view args;
    errc error;
};
std::ostream& operator<<(std::ostream& os, bad_path_case const& c) { return os << c.args; }

static bad_path_case const invalid_paths[]{
    {"", errc::bad_address},
    {"alice@example.com", errc::bad_address},        // brackets required
    {"<alice@example.com", errc::bad_address},
    {"alice@example.com>", errc::bad_address},
    {"<alice>", errc::bad_address},                  // no domain
    {"<@example.com>", errc::bad_address},
    {"<alice@>", errc::bad_address},
    {"<.alice@x>", errc::bad_address},
    {"<alice.@x>", errc::bad_address},
    {"<al..ice@x>", errc::bad_address},
    {"<al ice@x>", errc::bad_address},
    {"<al(ice@x>", errc::bad_address},
    {"<\"unterminated@x>", errc::bad_address},
    {"<\"a\"b@x>", errc::bad_address},
    {"<\"tab\there\"@x>", errc::bad_address},
    {"<a@b@c>", errc::bad_address},
    {"<a@-x.example>", errc::bad_address},
    {"<a@x-.example>", errc::bad_address},
    {"<a@x..example>", errc::bad_address},
    {"<a@x.example.>", errc::bad_address},
    {"<a@x_y.example>", errc::bad_address},
    {"<a@[192.0.2.256]>", errc::bad_address},
    {"<a@[192.0.2]>", errc::bad_address},
    {"<a@[192.0.2.1.5]>", errc::bad_address},
    {"<a@[IPv6:1::2::3]>", errc::bad_address},
    {"<a@[IPv6:1:2:3:4:5:6:7]>", errc::bad_address},
    {"<a@[IPv6:1:2:3:4:5:6:7:8:9]>", errc::bad_address},
    {"<a@[IPv6:12345::1]>", errc::bad_address},
    {"<a@[IPv6:1.2.3.4::]>", errc::bad_address},
    {"<a@[tag:stuff]>", errc::bad_address},
    {"<a@[192.0.2.1>", errc::bad_address},
    {"<@a.example user@c.example>", errc::bad_address},
    {"<@:user@c.example>", errc::bad_address},
    {"<@a.example,user@c.example>", errc::bad_address},
    {"<a@x>SIZE=1", errc::bad_address},
    {"<a@x> <b@y>", errc::bad_parameter},
    {"<a@x> SIZE=", errc::bad_parameter},
    {"<a@x> -SIZE=1", errc::bad_parameter},
    {"<a@x> SI_ZE=1", errc::bad_parameter},
    {"<a@x> SIZE=1=2", errc::bad_parameter},
    {"<a@x> SIZE=1 size=2", errc::bad_parameter},     // duplicate keyword
    {"<a@x> =1", errc::bad_parameter},
    {"<a@x> K=v\x7f", errc::bad_parameter},
};

BOOST_DATA_TEST_CASE(rejects_invalid_paths, bdata::make(invalid_paths), c)
{
    for (auto parse : {&parse_mail_from, &parse_rcpt_to}) {
        auto r = parse(c.args);
        BOOST_TEST_REQUIRE(r.has_error());
        BOOST_TEST((r.error() == c.error));
    }
}

BOOST_AUTO_TEST_CASE(null_reverse_path)
{
    auto r = parse_mail_from("<>");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->path.null_path);
    BOOST_TEST(r->path.to_string() == "");

    auto p = parse_mail_from("<> BODY=7BIT");
    BOOST_TEST_REQUIRE(p.has_value());
    BOOST_TEST(p->path.null_path);
    BOOST_TEST(p->params.size() == 1u);

    BOOST_TEST((parse_rcpt_to("<>").error() == errc::bad_address));
}

BOOST_AUTO_TEST_CASE(postmaster_without_domain)
{
    for (auto s : {"<postmaster>", "<Postmaster>", "<POSTMASTER>"}) {
        auto r = parse_rcpt_to(s);
        BOOST_TEST_REQUIRE(r.has_value(), s);
        BOOST_TEST(r->path.local == "postmaster");
        BOOST_TEST(r->path.domain == "");
        BOOST_TEST(r->path.to_string() == "postmaster");
    }
    BOOST_TEST((parse_mail_from("<postmaster>").error() == errc::bad_address));
    BOOST_TEST((parse_rcpt_to("<\"postmaster\">").error() == errc::bad_address));
    BOOST_TEST((parse_rcpt_to("<@a.example:postmaster>").error() == errc::bad_address));
    BOOST_TEST((parse_rcpt_to("<webmaster>").error() == errc::bad_address));
    auto full = parse_rcpt_to("<postmaster@example.com>");
    BOOST_TEST_REQUIRE(full.has_value());
    BOOST_TEST(full->path.domain == "example.com");
}

BOOST_AUTO_TEST_CASE(parameters)
{
    auto r = parse_mail_from("<a@x> SIZE=123 body=8BITMIME  RET ");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST_REQUIRE(r->params.size() == 3u);
    BOOST_TEST(r->params[0].keyword == "SIZE");
    BOOST_TEST(r->params[0].value == "123");
    BOOST_TEST(r->params[1].keyword == "BODY");
    BOOST_TEST(r->params[1].value == "8BITMIME");
    BOOST_TEST(r->params[2].keyword == "RET");
    BOOST_TEST(r->params[2].value == "");
    BOOST_TEST_REQUIRE(find(*r, "SIZE") != nullptr);
    BOOST_TEST(find(*r, "SIZE")->value == "123");
    BOOST_TEST(find(*r, "ENVID") == nullptr);

    auto rc = parse_rcpt_to("<a@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40x");
    BOOST_TEST_REQUIRE(rc.has_value());
    BOOST_TEST(rc->params.size() == 2u);
    BOOST_TEST(rc->params[1].value == "rfc822;a+40x");
}

BOOST_AUTO_TEST_CASE(size_param)
{
    BOOST_TEST(parse_size_param("0").value() == 0u);
    BOOST_TEST(parse_size_param("123").value() == 123u);
    BOOST_TEST(parse_size_param("18446744073709551615").value() == UINT64_MAX);
    BOOST_TEST((parse_size_param("18446744073709551616").error() == errc::out_of_range));
    BOOST_TEST((parse_size_param("99999999999999999999").error() == errc::out_of_range));
    BOOST_TEST((parse_size_param("123456789012345678901").error() == errc::bad_number));
    BOOST_TEST((parse_size_param("").error() == errc::bad_number));
    BOOST_TEST((parse_size_param("-1").error() == errc::bad_number));
    BOOST_TEST((parse_size_param("12k").error() == errc::bad_number));
}

BOOST_AUTO_TEST_CASE(body_param)
{
    BOOST_TEST((parse_body_param("7BIT").value() == body_type::seven_bit));
    BOOST_TEST((parse_body_param("8bitmime").value() == body_type::eight_bit_mime));
    BOOST_TEST((parse_body_param("BINARYMIME").error() == errc::bad_parameter));
    BOOST_TEST((parse_body_param("").error() == errc::bad_parameter));
}

BOOST_AUTO_TEST_CASE(length_limits)
{
    // RFC 5321 §4.5.3.1: 64 octets of local part and 256 of path are the
    // least a server takes, not a limit: SRS and VERP addresses pass them
    // (Postfix takes them). popgate takes paths of up to 900 octets.
    BOOST_TEST(parse_mail_from("<" + std::string(896, 'l') + "@x>").has_value());  // 900
    BOOST_TEST((parse_mail_from("<" + std::string(897, 'l') + "@x>").error() == errc::too_long));
    auto const local300 = std::string(300, 'l');
    BOOST_TEST(parse_mail_from("<" + local300 + "@x>").has_value());
    BOOST_TEST(parse_rcpt_to("<" + local300 + "@x>").value().path.local == local300);
    BOOST_TEST(parse_mail_from("<\"" + std::string(100, 'q') + "\"@x>").has_value());
    BOOST_TEST(parse_mail_from("<bounces+SRS=k5Ch0=TW=long-department-name.example.com=firstname.lastname"
                               "@contoso.onmicrosoft.com>").has_value());

    // 255-octet domain made of 63-octet labels: 4*63 + 3 dots = 255.
    std::string const label(63, 'd');
    auto const domain255 = label + "." + label + "." + label + "." + label;
    BOOST_TEST(domain255.size() == 255u);
    BOOST_TEST(parse_mail_from("<a@" + domain255 + ">").has_value());  // path 259
    // A 64-label is refused as syntax (RFC 1035), a 256 domain as too long.
    BOOST_TEST((parse_mail_from("<a@" + std::string(64, 'd') + ">").error() == errc::bad_address));
    BOOST_TEST((parse_mail_from("<a@" + domain255 + "d>").error() == errc::too_long));
}

BOOST_AUTO_TEST_CASE(from_command_line_to_path)
{
    auto cmd = parse_smtp("MAIL FROM: <\"john doe\"@example.com> SIZE=42");
    BOOST_TEST_REQUIRE(cmd.has_value());
    auto m = parse_mail_from(cmd->args);
    BOOST_TEST_REQUIRE(m.has_value());
    BOOST_TEST(m->path.local == "john doe");
    BOOST_TEST(parse_size_param(find(*m, "SIZE")->value).value() == 42u);
}

BOOST_AUTO_TEST_SUITE_END()

// ======================================================================
BOOST_AUTO_TEST_SUITE(smtp_data, *boost::unit_test::label("unit"))

namespace {

struct data_run {
    bool done = false;
    std::size_t consumed = 0;  // total input bytes used
    std::string out;
    std::optional<errc> error;
    std::uint64_t size = 0;
};

// Feeds `in` cut at the given offsets (ascending); stops at done.
data_run feed_cuts(std::string_view in, std::vector<std::size_t> const& cuts,
                   std::size_t max_size = 1 << 20, std::size_t max_line = 1000)
{
    data_reader reader{max_size, max_line};
    data_run r;
    std::size_t start = 0;
    auto points = cuts;
    points.push_back(in.size());
    for (auto end : points) {
        std::size_t used = 0;
        auto const st = reader.feed(in.substr(start, end - start), used, r.out);
        r.consumed += used;
        if (st == data_reader::status::done) {
            r.done = true;
            break;
        }
        BOOST_TEST_REQUIRE(used == end - start);  // more: everything consumed
        start = end;
    }
    r.error = reader.error();
    r.size = reader.size();
    return r;
}

data_run feed_whole(std::string_view in, std::size_t max_size = 1 << 20,
                    std::size_t max_line = 1000)
{
    return feed_cuts(in, {}, max_size, max_line);
}

data_run feed_bytes(std::string_view in, std::size_t max_size = 1 << 20,
                    std::size_t max_line = 1000)
{
    std::vector<std::size_t> cuts;
    for (std::size_t i = 1; i < in.size(); ++i) cuts.push_back(i);
    return feed_cuts(in, cuts, max_size, max_line);
}

bool same(data_run const& a, data_run const& b)
{
    return a.done == b.done && a.consumed == b.consumed && a.out == b.out
        && a.error == b.error && a.size == b.size;
}

}  // namespace

BOOST_AUTO_TEST_CASE(unstuffs_and_keeps_crlf)
{
    std::string_view const in = "Subject: x\r\n\r\n..leading dot\r\n.x\r\nend\r\n.\r\n";
    auto r = feed_whole(in);
    BOOST_TEST(r.done);
    BOOST_TEST(r.consumed == in.size());
    BOOST_TEST(!r.error.has_value());
    BOOST_TEST(r.out == "Subject: x\r\n\r\n.leading dot\r\nx\r\nend\r\n");
    BOOST_TEST(r.size == r.out.size());
}

BOOST_AUTO_TEST_CASE(lone_dots_inside_lines_are_data)
{
    std::string_view const in = "a.\r\n. \r\n...\r\nx.y\r\n.\r\n";
    auto r = feed_whole(in);
    BOOST_TEST(r.done);
    BOOST_TEST(!r.error.has_value());
    BOOST_TEST(r.out == "a.\r\n \r\n..\r\nx.y\r\n");
}

BOOST_AUTO_TEST_CASE(empty_message)
{
    auto r = feed_whole(".\r\n");
    BOOST_TEST(r.done);
    BOOST_TEST(r.consumed == 3u);
    BOOST_TEST(r.out == "");
    BOOST_TEST(r.size == 0u);
    BOOST_TEST(!r.error.has_value());

    auto blank = feed_whole("\r\n.\r\n");  // one empty line
    BOOST_TEST(blank.done);
    BOOST_TEST(blank.out == "\r\n");
}

BOOST_AUTO_TEST_CASE(pipelined_bytes_left_for_the_session)
{
    std::string_view const msg = "hello\r\n.\r\n";
    std::string const in = std::string{msg} + "QUIT\r\n";
    auto r = feed_whole(in);
    BOOST_TEST(r.done);
    BOOST_TEST(r.consumed == msg.size());
    BOOST_TEST(in.substr(r.consumed) == "QUIT\r\n");

    // Feeding again after done consumes nothing.
    data_reader reader{100};
    std::string out;
    std::size_t used = 0;
    BOOST_TEST((reader.feed(in, used, out) == data_reader::status::done));
    BOOST_TEST(reader.finished());
    BOOST_TEST((reader.feed("more", used, out) == data_reader::status::done));
    BOOST_TEST(used == 0u);
    reader.reset();
    out.clear();
    BOOST_TEST((reader.feed(".\r\n", used, out) == data_reader::status::done));
    BOOST_TEST(out == "");
}

BOOST_AUTO_TEST_CASE(any_chunking_gives_the_same_result)
{
    // Terminator, stuffing and pipelined bytes split at every boundary.
    std::string const in = "..a\r\n.b\r\nc\r\n.\r\nRSET\r\n";
    auto const whole = feed_whole(in);
    BOOST_TEST(whole.done);
    BOOST_TEST(whole.out == ".a\r\nb\r\nc\r\n");
    BOOST_TEST(in.substr(whole.consumed) == "RSET\r\n");

    BOOST_TEST(same(feed_bytes(in), whole));
    for (std::size_t cut = 0; cut <= in.size(); ++cut)
        BOOST_TEST(same(feed_cuts(in, {cut}), whole), "cut at " << cut);
    for (std::size_t a = 0; a <= in.size(); ++a)
        for (std::size_t b = a; b <= in.size(); ++b)
            BOOST_TEST_REQUIRE(same(feed_cuts(in, {a, b}), whole), "cuts at " << a << "," << b);
}

BOOST_AUTO_TEST_CASE(empty_chunks_are_harmless)
{
    data_reader reader{100};
    std::string out;
    std::size_t used = 1;
    BOOST_TEST((reader.feed("", used, out) == data_reader::status::more));
    BOOST_TEST(used == 0u);
    BOOST_TEST((reader.feed("a\r\n.", used, out) == data_reader::status::more));
    BOOST_TEST((reader.feed("", used, out) == data_reader::status::more));
    BOOST_TEST((reader.feed("\r", used, out) == data_reader::status::more));
    BOOST_TEST((reader.feed("\nX", used, out) == data_reader::status::done));
    BOOST_TEST(used == 1u);
    BOOST_TEST(out == "a\r\n");
}

struct smuggle_case {
    std::string_view name;
    std::string_view body;  // sent before the real terminator
};
std::ostream& operator<<(std::ostream& os, smuggle_case const& c) { return os << c.name; }

// Each would end DATA on a lax server and let "MAIL FROM..." after it be read
// as a second, forged transaction (CVE-2023-51764 class).
static smuggle_case const smuggling[]{
    {"LF.LF", "legit\r\n\n.\nMAIL FROM:<evil@x>\r\n"},
    {"CRLF.LF", "legit\r\n.\nMAIL FROM:<evil@x>\r\n"},
    {"LF.CRLF", "legit\n.\r\nMAIL FROM:<evil@x>\r\n"},
    {"CR.CR", "legit\r.\rMAIL FROM:<evil@x>\r\n"},
    {"CR.CRLF", "legit\r.\r\nMAIL FROM:<evil@x>\r\n"},
    {"CRLF.CR", "legit\r\n.\rMAIL FROM:<evil@x>\r\n"},
    {"CRLF.CRCR", "legit\r\n.\r\rMAIL FROM:<evil@x>\r\n"},
    {"CRLF.CRLF-with-bare-LF-first", "x\ny\r\n"},
    {"bare CR mid-line", "abc\rdef\r\n"},
    {"bare LF mid-line", "abc\ndef\r\n"},
    {"bare LF at start", "\nabc\r\n"},
    {"bare CR at start", "\rabc\r\n"},
    {"dot then LF", ".\nabc\r\n"},
    {"CRCRLF", "abc\r\r\n"},
    {"LF.LF as first line", "\n.\nabc\r\n"},
};

BOOST_DATA_TEST_CASE(smuggling_sequences_are_refused_after_the_real_end,
                     bdata::make(smuggling), c)
{
    std::string const terminator = ".\r\n";
    std::string const in = std::string{c.body} + terminator + "QUIT\r\n";
    auto const end = c.body.size() + terminator.size();

    for (auto const& r : {feed_whole(in), feed_bytes(in)}) {
        BOOST_TEST(r.done);
        BOOST_TEST(r.consumed == end);  // never an early done
        BOOST_TEST_REQUIRE(r.error.has_value());
        BOOST_TEST((*r.error == errc::bare_cr_or_lf));
    }
    for (std::size_t cut = 0; cut <= in.size(); ++cut) {
        auto const r = feed_cuts(in, {cut});
        BOOST_TEST(r.consumed == end, "cut at " << cut);
        BOOST_TEST((r.error == std::optional{errc::bare_cr_or_lf}), "cut at " << cut);
    }
}

BOOST_AUTO_TEST_CASE(a_smuggled_terminator_never_ends_data)
{
    // No input made only of smuggling sequences ends DATA.
    for (std::string_view s : {"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r"}) {
        std::string const in = "a" + std::string{s} + "b";
        auto r = feed_bytes(in);
        BOOST_TEST(!r.done, visible(s));
        BOOST_TEST(r.consumed == in.size());
        BOOST_TEST((r.error == std::optional{errc::bare_cr_or_lf}));
    }
}

BOOST_AUTO_TEST_CASE(line_length_limit)
{
    // RFC 5321 §4.5.3.1.6: 998 octets + CRLF.
    auto const ok = std::string(998, 'x') + "\r\n.\r\n";
    auto r = feed_whole(ok);
    BOOST_TEST(r.done);
    BOOST_TEST(!r.error.has_value());
    BOOST_TEST(r.out.size() == 1000u);

    auto const bad = std::string(999, 'x') + "\r\nnext\r\n.\r\n";
    for (auto const& b : {feed_whole(bad), feed_bytes(bad)}) {
        BOOST_TEST(b.done);
        BOOST_TEST(b.consumed == bad.size());
        BOOST_TEST((b.error == std::optional{errc::line_too_long}));
    }

    // The transparency dot does not count: a stuffed 998-octet line is fine.
    auto const stuffed = "." + std::string(998, '.') + "\r\n.\r\n";
    auto s = feed_whole(stuffed);
    BOOST_TEST(!s.error.has_value());
    BOOST_TEST(s.out == std::string(998, '.') + "\r\n");

    // Counting restarts on each line.
    std::string many;
    for (int i = 0; i < 5; ++i) many += std::string(998, 'y') + "\r\n";
    BOOST_TEST(!feed_bytes(many + ".\r\n").error.has_value());
}

BOOST_AUTO_TEST_CASE(size_limit)
{
    std::string_view const in = "0123456\r\n.\r\n";  // 9 octets of message
    auto ok = feed_whole(in, 9);
    BOOST_TEST(!ok.error.has_value());
    BOOST_TEST(ok.out == "0123456\r\n");

    for (auto const& r : {feed_whole(in, 8), feed_bytes(in, 8)}) {
        BOOST_TEST(r.done);
        BOOST_TEST(r.consumed == in.size());
        BOOST_TEST((r.error == std::optional{errc::too_long}));
        BOOST_TEST(r.size == 9u);
        BOOST_TEST(r.out.size() <= 8u);  // stopped appending once over
    }

    // Big input far over the limit: memory stays bounded.
    std::string lines;
    for (int i = 0; i < 100; ++i) lines += std::string(900, 'w') + "\r\n";
    auto b = feed_whole(lines + ".\r\n", 1000);
    BOOST_TEST((b.error == std::optional{errc::too_long}));
    BOOST_TEST(b.out.size() <= 1000u);
    BOOST_TEST(b.size == lines.size());
}

BOOST_AUTO_TEST_CASE(first_error_wins_independent_of_chunking)
{
    // Long line that also crosses the size limit: the line limit trips first.
    auto const in = std::string(1200, 'x') + "\r\n.\r\n";
    auto const whole = feed_whole(in, 999);
    BOOST_TEST((whole.error == std::optional{errc::line_too_long}));
    BOOST_TEST(same(feed_bytes(in, 999), whole));
    // Size limit reached before the line limit.
    auto const small = feed_whole(in, 500);
    BOOST_TEST((small.error == std::optional{errc::too_long}));
    BOOST_TEST(same(feed_bytes(in, 500), small));
    // Bare LF before any limit.
    auto const lf = "a\nb" + in;
    BOOST_TEST((feed_whole(lf, 500).error == std::optional{errc::bare_cr_or_lf}));
    BOOST_TEST(same(feed_bytes(lf, 500), feed_whole(lf, 500)));
}

BOOST_AUTO_TEST_CASE(random_inputs_match_a_reference)
{
    // Property check against a direct reading of RFC 5321 §4.1.1.4/§4.5.2:
    // data ends at the first CRLF "." CRLF (or "." CRLF at the start), any CR
    // or LF outside a CRLF pair before it is an error, and the chunking of the
    // input never matters.
    std::mt19937 rng{20231218};
    std::string_view const alphabet = "a..\r\r\n\n";
    for (int round = 0; round < 3000; ++round) {
        std::string in;
        auto const len = std::uniform_int_distribution<std::size_t>{0, 24}(rng);
        for (std::size_t i = 0; i < len; ++i)
            in.push_back(alphabet[std::uniform_int_distribution<std::size_t>{0, alphabet.size() - 1}(rng)]);
        if (round % 2 == 0) in += "\r\n.\r\n";

        std::size_t end = std::string::npos;
        if (in.starts_with(".\r\n")) end = 3;
        else if (auto const p = in.find("\r\n.\r\n"); p != in.npos) end = p + 5;
        auto const scan = std::string_view{in}.substr(0, end == in.npos ? in.size() : end);
        bool bare = false;
        for (std::size_t i = 0; i < scan.size(); ++i) {
            if (scan[i] == '\r' && (i + 1 == scan.size() || scan[i + 1] != '\n')) bare = true;
            if (scan[i] == '\n' && (i == 0 || scan[i - 1] != '\r')) bare = true;
        }
        // A CR just before the end of a partial input is not bare yet.
        if (end == in.npos && !scan.empty() && scan.back() == '\r') {
            bare = false;
            for (std::size_t i = 0; i + 1 < scan.size(); ++i) {
                if (scan[i] == '\r' && scan[i + 1] != '\n') bare = true;
                if (scan[i] == '\n' && (i == 0 || scan[i - 1] != '\r')) bare = true;
            }
        }

        auto const whole = feed_whole(in);
        BOOST_TEST_REQUIRE(whole.done == (end != in.npos), visible(in));
        BOOST_TEST_REQUIRE(whole.consumed == (end == in.npos ? in.size() : end), visible(in));
        BOOST_TEST_REQUIRE(whole.error.has_value() == bare, visible(in));
        if (end != in.npos && !bare) {
            // Expected message: lines up to the terminator with one leading dot removed.
            std::string expect;
            auto const body = std::string_view{in}.substr(0, end - 3);
            std::size_t start = 0;
            while (start < body.size()) {
                auto const crlf = body.find("\r\n", start);
                auto line = body.substr(start, crlf + 2 - start);
                if (line.starts_with('.')) line.remove_prefix(1);
                expect += line;
                start = crlf + 2;
            }
            BOOST_TEST_REQUIRE(whole.out == expect, visible(in));
        }
        std::vector<std::size_t> cuts;
        for (std::size_t i = 1; i < in.size(); ++i)
            if (rng() % 3 == 0) cuts.push_back(i);
        BOOST_TEST_REQUIRE(same(feed_cuts(in, cuts), whole), visible(in));
    }
}

BOOST_AUTO_TEST_CASE(rejects_silly_line_limit)
{
    BOOST_CHECK_THROW(data_reader(100, 2), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

// ======================================================================
BOOST_AUTO_TEST_SUITE(smtp_reply, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(formats_single_and_multi_line)
{
    BOOST_TEST(reply(250, "2.0.0", "Ok") == "250 2.0.0 Ok\r\n");
    BOOST_TEST(reply(354, "", "End data with <CR><LF>.<CR><LF>")
               == "354 End data with <CR><LF>.<CR><LF>\r\n");
    BOOST_TEST(reply(221, "2.0.0", "") == "221 2.0.0\r\n");
    BOOST_TEST(reply(250, "", "") == "250\r\n");

    popgate::proto::smtp_reply ehlo{250, "", {"gw.example", "PIPELINING", "SIZE 10240000", "8BITMIME"}};
    BOOST_TEST(format_reply(ehlo)
               == "250-gw.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n");

    popgate::proto::smtp_reply enh{550, "5.1.1", {"first", "second"}};
    BOOST_TEST(format_reply(enh) == "550-5.1.1 first\r\n550 5.1.1 second\r\n");

    popgate::proto::smtp_reply none{421, "4.3.2", {}};
    BOOST_TEST(format_reply(none) == "421 4.3.2\r\n");

    // Text quoted from a peer (an upstream's refusal) is RFC 5321's
    // textstring: HT and printable US-ASCII. Controls and 8-bit octets (a
    // UTF-8 sequence the 200-octet cut may have split) become '?'.
    BOOST_TEST(reply(550, "5.1.1", "a\x1b[31mred\x07 \xc3\xbf\xc3\xbe\x7f.") == "550 5.1.1 a?[31mred? ?????.\r\n");
}

BOOST_AUTO_TEST_CASE(peer_text_cannot_inject_lines)
{
    BOOST_TEST(reply(554, "5.7.1", "<a\r\n250 ok>: Relay access denied")
               == "554 5.7.1 <a??250 ok>: Relay access denied\r\n");
}

BOOST_AUTO_TEST_CASE(refuses_bad_codes)
{
    BOOST_CHECK_THROW(reply(99, "", "x"), std::invalid_argument);
    BOOST_CHECK_THROW(reply(600, "", "x"), std::invalid_argument);
    BOOST_CHECK_THROW(reply(199, "", "x"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(reply_classes)
{
    BOOST_TEST(reply_class(250) == 2);
    BOOST_TEST(reply_class(354) == 3);
    BOOST_TEST(reply_class(451) == 4);
    BOOST_TEST(reply_class(554) == 5);
    BOOST_TEST(reply_class(199) == 0);
    BOOST_TEST(reply_class(600) == 0);
}

BOOST_AUTO_TEST_CASE(parses_multi_line_upstream_reply)
{
    reply_parser p;
    BOOST_TEST((p.feed("250-mx.example Hello") == reply_parser::status::more));
    BOOST_TEST((p.feed("250-PIPELINING") == reply_parser::status::more));
    BOOST_TEST((p.feed("250-") == reply_parser::status::more));
    BOOST_TEST((p.feed("250 8BITMIME") == reply_parser::status::done));
    BOOST_TEST(p.reply().code == 250);
    BOOST_TEST(p.reply().enhanced == "");
    BOOST_TEST((p.reply().lines
                == std::vector<std::string>{"mx.example Hello", "PIPELINING", "", "8BITMIME"}));
    BOOST_TEST(!p.error().has_value());

    // The next feed starts a new reply.
    BOOST_TEST((p.feed("354 go ahead") == reply_parser::status::done));
    BOOST_TEST(p.reply().code == 354);
    BOOST_TEST(p.reply().lines.size() == 1u);

    BOOST_TEST((p.feed("221") == reply_parser::status::done));
    BOOST_TEST(p.reply().code == 221);
    BOOST_TEST((p.reply().lines == std::vector<std::string>{""}));
}

BOOST_AUTO_TEST_CASE(splits_enhanced_codes)
{
    reply_parser p;
    BOOST_TEST((p.feed("550-5.1.1 user unknown") == reply_parser::status::more));
    BOOST_TEST((p.feed("550 5.1.1 see https://x/") == reply_parser::status::done));
    BOOST_TEST(p.reply().enhanced == "5.1.1");
    BOOST_TEST((p.reply().lines == std::vector<std::string>{"user unknown", "see https://x/"}));
    BOOST_TEST(format_reply(p.reply()) == "550-5.1.1 user unknown\r\n550 5.1.1 see https://x/\r\n");

    BOOST_TEST((p.feed("250 2.0.0") == reply_parser::status::done));
    BOOST_TEST(p.reply().enhanced == "2.0.0");
    BOOST_TEST((p.reply().lines == std::vector<std::string>{""}));

    // Class mismatch, missing on one line, or differing codes: kept as text.
    BOOST_TEST((p.feed("550 4.1.1 odd") == reply_parser::status::done));
    BOOST_TEST(p.reply().enhanced == "");
    BOOST_TEST(p.reply().lines[0] == "4.1.1 odd");
    p.feed("451-4.3.0 a");
    p.feed("451 b");
    BOOST_TEST(p.reply().enhanced == "");
    BOOST_TEST(p.reply().lines[0] == "4.3.0 a");
    p.feed("451-4.3.0 a");
    p.feed("451 4.3.1 b");
    BOOST_TEST(p.reply().enhanced == "");
    BOOST_TEST((p.feed("250 2.0.0.0 x") == reply_parser::status::done));
    BOOST_TEST(p.reply().enhanced == "");
    BOOST_TEST((p.feed("250 2.1000.0 x") == reply_parser::status::done));
    BOOST_TEST(p.reply().enhanced == "");
}

struct bad_reply_case {
    std::vector<std::string_view> lines;  // the last one fails
    errc error;
};
std::ostream& operator<<(std::ostream& os, bad_reply_case const& c)
{
    for (auto l : c.lines) os << visible(l) << " | ";
    return os;
}

static bad_reply_case const bad_replies[]{
    {{""}, errc::bad_arguments},
    {{"25"}, errc::bad_arguments},
    {{"2x0 ok"}, errc::bad_arguments},
    {{"250ok"}, errc::bad_arguments},
    {{"250_ok"}, errc::bad_arguments},
    {{"199 hm"}, errc::bad_arguments},
    {{"600 hm"}, errc::bad_arguments},
    {{"abc"}, errc::bad_arguments},
    {{"250-a", "251 b"}, errc::bad_arguments},
    {{"250-a", "550-b"}, errc::bad_arguments},
    {{"250-a", "garbage"}, errc::bad_arguments},
    {{"250 a\rb"}, errc::bare_cr_or_lf},
    {{"250-a", "250 a\nb"}, errc::bare_cr_or_lf},
};

BOOST_DATA_TEST_CASE(rejects_malformed_upstream_replies, bdata::make(bad_replies), c)
{
    reply_parser p;
    for (std::size_t i = 0; i + 1 < c.lines.size(); ++i)
        BOOST_TEST_REQUIRE((p.feed(c.lines[i]) == reply_parser::status::more));
    BOOST_TEST((p.feed(c.lines.back()) == reply_parser::status::error));
    BOOST_TEST((p.error() == std::optional{c.error}));
}

BOOST_AUTO_TEST_CASE(upstream_limits)
{
    reply_parser p;
    using namespace std::string_literals;
    BOOST_TEST((p.feed("250 a\0b"s) == reply_parser::status::error));
    BOOST_TEST((p.error() == std::optional{errc::nul_byte}));

    BOOST_TEST((p.feed("250 " + std::string(506, 'x')) == reply_parser::status::done));
    BOOST_TEST((p.feed("250 " + std::string(507, 'x')) == reply_parser::status::error));
    BOOST_TEST((p.error() == std::optional{errc::line_too_long}));

    reply_parser few{512, 3};
    BOOST_TEST((few.feed("250-a") == reply_parser::status::more));
    BOOST_TEST((few.feed("250-b") == reply_parser::status::more));
    BOOST_TEST((few.feed("250-c") == reply_parser::status::more));
    BOOST_TEST((few.feed("250 d") == reply_parser::status::error));
    BOOST_TEST((few.error() == std::optional{errc::too_long}));

    // After an error the parser starts afresh.
    BOOST_TEST((few.feed("220 ready") == reply_parser::status::done));
    BOOST_TEST(!few.error().has_value());
    few.reset();
    BOOST_TEST(few.reply().lines.empty());
}

BOOST_AUTO_TEST_SUITE_END()
