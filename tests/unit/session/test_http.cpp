// The HTTP listener's pure parts: routing, replies, the Dovecot auth-policy
// request parser.
#include "popgate/session/http/dovecot_policy.hpp"
#include "popgate/session/http/http_route.hpp"

// GCC 12: the coroutine frames' operator new/delete (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <boost/beast/http/error.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <array>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

using namespace popgate::session;
namespace bdata = boost::unit_test::data;
using verb = boost::beast::http::verb;

namespace {

class fake_route final : public http_route {
public:
    fake_route(std::string_view p, std::span<verb const> m) : path_(p), methods_(m) {}
    std::string_view path() const noexcept override { return path_; }
    std::span<verb const> methods() const noexcept override { return methods_; }
    boost::asio::awaitable<http_reply> serve(http_exchange&) override { co_return http_text(200, "x"); }

private:
    std::string_view path_;
    std::span<verb const> methods_;
};

constexpr std::array get_only{verb::get};
constexpr std::array post_only{verb::post};

struct routes_fixture {
    fake_route health{"/healthz", get_only};
    fake_route policy{"/dovecot/auth-policy", post_only};
    std::array<http_route*, 2> all{&health, &policy};
};

struct bad_body {
    std::string_view body;
    std::string_view why;  // a word of the reason
};
std::ostream& operator<<(std::ostream& os, bad_body const& c) { return os << c.body; }

constexpr bad_body bad_bodies[]{
    {"", "JSON object"},
    {"not json", "JSON object"},
    {"[1,2]", "JSON object"},
    {R"({"login":"a","remote":"192.0.2.1"})", "protocol"},
    {R"({"login":7,"remote":"192.0.2.1","protocol":"imap"})", "login"},
    {R"({"login":"","remote":"192.0.2.1","protocol":"imap"})", "1 to 255"},
    {R"({"login":"a\nb","remote":"192.0.2.1","protocol":"imap"})", "control"},
    {R"({"login":"a","remote":"192.0.2.1","protocol":"imap","success":"yes"})", "success"},
    {R"({"login":"a","remote":"192.0.2.1","protocol":"imap",)", "JSON object"},
    {R"({"a":[[[[[[[[[[1]]]]]]]]]]})", "JSON object"},  // deeper than anything Dovecot sends
};

}  // namespace

BOOST_AUTO_TEST_SUITE(http_routing, *boost::unit_test::label("unit"))

BOOST_FIXTURE_TEST_CASE(finds_the_route_by_path, routes_fixture)
{
    auto const d = http_dispatch_of(all, verb::post, "/dovecot/auth-policy?command=report");
    BOOST_TEST(d.route == &policy);
    BOOST_TEST(!d.refusal.has_value());
    BOOST_TEST(d.path == "/dovecot/auth-policy");
    BOOST_TEST(d.query == "command=report");
    BOOST_TEST(http_dispatch_of(all, verb::get, "/healthz").route == &health);
    BOOST_TEST(http_dispatch_of(all, verb::head, "/healthz").route == &health);  // HEAD wherever GET
}

BOOST_FIXTURE_TEST_CASE(takes_the_absolute_form_as_the_path_it_names, routes_fixture)
{
    // RFC 9112 §3.2.2: a server MUST accept it; the authority is not checked.
    auto const d = http_dispatch_of(all, verb::post, "HTTP://example.org:8080/dovecot/auth-policy?command=report");
    BOOST_TEST(d.route == &policy);
    BOOST_TEST(d.path == "/dovecot/auth-policy");
    BOOST_TEST(d.query == "command=report");
    BOOST_TEST(http_dispatch_of(all, verb::get, "https://[::1]/healthz").route == &health);
    auto const root = http_dispatch_of(all, verb::get, "http://example.org?x=1");
    BOOST_TEST_REQUIRE(root.refusal.has_value());
    BOOST_TEST(root.refusal->status == 404u);  // the path "/", which is no route
    BOOST_TEST(root.path == "/");
    BOOST_TEST(root.query == "x=1");
}

BOOST_FIXTURE_TEST_CASE(refuses_unknown_paths_methods_and_targets, routes_fixture)
{
    auto const missing = http_dispatch_of(all, verb::get, "/nope");
    BOOST_TEST_REQUIRE(missing.refusal.has_value());
    BOOST_TEST(missing.refusal->status == 404u);
    BOOST_TEST(http_dispatch_of(all, verb::get, "/healthz/").refusal->status == 404u);  // exact paths only

    auto const wrong = http_dispatch_of(all, verb::get, "/dovecot/auth-policy?command=allow");
    BOOST_TEST_REQUIRE(wrong.refusal.has_value());
    BOOST_TEST(wrong.refusal->status == 405u);
    BOOST_TEST_REQUIRE(wrong.refusal->headers.size() == 1u);
    BOOST_TEST(wrong.refusal->headers[0].first == "Allow");
    BOOST_TEST(wrong.refusal->headers[0].second == "POST");
    auto const del = http_dispatch_of(all, verb::delete_, "/healthz");
    BOOST_TEST(del.refusal->headers[0].second == "GET, HEAD");
    BOOST_TEST(http_dispatch_of(all, verb::head, "/dovecot/auth-policy").refusal->status == 405u);

    for (auto const t : {"example.org:80", "*", "", "healthz", "ftp://example.org/healthz", "http:///healthz",
                         "http:/healthz", "/healthz#top", "http://example.org/healthz#top"}) {
        auto const d = http_dispatch_of(all, verb::get, t);
        BOOST_TEST_REQUIRE(d.refusal.has_value(), t);
        BOOST_TEST(d.refusal->status == 400u, t);
        BOOST_TEST(d.refusal->close, t);
    }
}

BOOST_AUTO_TEST_CASE(query_values)
{
    BOOST_TEST(http_query_value("command=report", "command").value() == "report");
    BOOST_TEST(http_query_value("a=1&command=allow", "command").value() == "allow");  // url ending in '&'
    BOOST_TEST(!http_query_value("commands=allow", "command").has_value());
    BOOST_TEST(http_query_value("command", "command").value() == "");
    BOOST_TEST(!http_query_value("", "command").has_value());
}

BOOST_AUTO_TEST_CASE(serializes_replies)
{
    auto r = http_text(200, "ok\n");
    BOOST_TEST(http_serialize(r, 11, true, false) ==
               "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n"
               "Cache-Control: no-store\r\n\r\nok\n");
    // HEAD: the same header, no body. HTTP/1.0 keep-alive is said aloud.
    BOOST_TEST(http_serialize(r, 10, true, true) ==
               "HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n"
               "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n");
    r = http_text(405, "method not allowed\n");
    r.headers.emplace_back("Allow", "POST");
    auto const s = http_serialize(r, 11, false, false);
    BOOST_TEST(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    BOOST_TEST(s.find("\r\nAllow: POST\r\n") != std::string::npos);
    BOOST_TEST(s.find("\r\nConnection: close\r\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(parse_errors_become_4xx_and_close)
{
    namespace he = boost::beast::http;
    auto const big = http_refusal_of(he::error::header_limit);
    BOOST_TEST(big.status == 431u);
    BOOST_TEST(big.close);
    BOOST_TEST(http_refusal_of(he::error::body_limit).status == 413u);
    // Beast's bad_version: a version popgate does not serve, or none at all.
    BOOST_TEST(http_refusal_of(he::error::bad_version, "GET / HTTP/2.0\r\nHost: a\r\n\r\n").status == 505u);
    BOOST_TEST(http_refusal_of(he::error::bad_version, "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n").status == 400u);
    BOOST_TEST(http_refusal_of(he::error::bad_version, "GET / HTTP/1.1\nHost: a\r\n\r\n").status == 400u);
    BOOST_TEST(http_refusal_of(he::error::bad_version, "GET / HTTP/11\r\n\r\n").status == 400u);
    BOOST_TEST(http_refusal_of(he::error::bad_version, "GET /a b HTTP/1.1\r\n\r\n").status == 400u);
    BOOST_TEST(http_refusal_of(he::error::bad_version, "GET /a b HTTP/2.0\r\n\r\n").status == 400u);
    BOOST_TEST(http_refusal_of(he::error::bad_version).status == 400u);
    auto const bad = http_refusal_of(he::error::bad_method);
    BOOST_TEST(bad.status == 400u);
    BOOST_TEST(bad.close);
}

BOOST_AUTO_TEST_CASE(requests_whose_framing_or_host_cannot_be_trusted_are_refused)
{
    namespace he = boost::beast::http;
    auto const request = [](unsigned version, std::initializer_list<std::pair<he::field, std::string_view>> fields) {
        http_request r{he::verb::post, "/x", version};
        for (auto const& [f, v] : fields) r.insert(f, v);
        return r;
    };
    auto const status = [](std::optional<http_reply> const& r) { return r ? r->status : 0u; };
    BOOST_TEST(!http_request_refusal(request(11, {{he::field::host, "a"}}), false));
    BOOST_TEST(!http_request_refusal(request(10, {}), false));
    BOOST_TEST(!http_request_refusal(request(11, {{he::field::host, "a"}, {he::field::transfer_encoding, "chunked"}}), true));
    BOOST_TEST(status(http_request_refusal(request(20, {{he::field::host, "a"}}), false)) == 505u);
    BOOST_TEST(status(http_request_refusal(request(11, {}), false)) == 400u);
    BOOST_TEST(status(http_request_refusal(request(10, {{he::field::host, "a"}, {he::field::host, "b"}}), false)) == 400u);
    BOOST_TEST(status(http_request_refusal(request(11, {{he::field::host, "a"}, {he::field::transfer_encoding, "gzip"}}),
                                           false)) == 400u);
    BOOST_TEST(status(http_request_refusal(request(10, {{he::field::transfer_encoding, "chunked"}}), true)) == 400u);
    auto const refused = http_request_refusal(request(11, {{he::field::host, "a"}, {he::field::host, "b"}}), false);
    BOOST_TEST_REQUIRE(refused.has_value());
    BOOST_TEST(refused->close);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(dovecot_policy_parser, *boost::unit_test::label("unit"))

// What Dovecot 2.3.19 sends with the attributes deploy/dovecot/ recommends.
BOOST_AUTO_TEST_CASE(parses_a_report)
{
    std::string why;
    auto const r = parse_dovecot_policy(
        R"({"login":"dave","protocol":"imap","remote":"127.0.0.1","nologin":"no","proxy":"no","proxy_maybe":"no",)"
        R"("mech":"PLAIN","success":true,"policy_reject":false,"tls":true})",
        why);
    BOOST_TEST_REQUIRE(r.has_value(), why);
    BOOST_TEST(r->login == "dave");
    BOOST_TEST(r->remote == "127.0.0.1");
    BOOST_TEST(r->protocol == "imap");
    BOOST_TEST((r->success == std::optional<bool>(true)));
    BOOST_TEST(r->tls);
    BOOST_TEST((r->mech == std::optional<std::string>("PLAIN")));
    BOOST_TEST(dovecot_report_refusal(*r).empty());
}

// Each passdb field reads "" when the passdb set it (Dovecot keeps it as a
// bare flag) and "no" when it did not; a template without them cannot tell.
BOOST_AUTO_TEST_CASE(a_report_grants_only_what_a_password_proved)
{
    auto const shipped = [] {
        dovecot_policy_request r;
        r.nologin = r.proxy = r.proxy_maybe = "no";
        r.mech = "PLAIN";
        return r;
    };
    BOOST_TEST(dovecot_report_refusal(shipped()).empty());
    auto r = shipped();
    r.nologin = "";
    BOOST_TEST(dovecot_report_refusal(r) == "nologin");
    r = shipped();
    r.nologin = "y";  // a template spelling it otherwise still refuses
    BOOST_TEST(dovecot_report_refusal(r) == "nologin");
    r = shipped();
    r.proxy = "";
    BOOST_TEST(dovecot_report_refusal(r) == "proxy");
    r = shipped();
    r.proxy_maybe = "";
    BOOST_TEST(dovecot_report_refusal(r) == "proxy");
    for (auto const m : {"ANONYMOUS", "anonymous"}) {
        r = shipped();
        r.mech = m;
        BOOST_TEST(dovecot_report_refusal(r) == "anonymous", m);
    }
    r = shipped();
    r.mech = "CRAM-MD5";
    BOOST_TEST(dovecot_report_refusal(r).empty());
    for (int missing = 0; missing < 4; ++missing) {
        r = shipped();
        auto& field = missing == 0 ? r.nologin : missing == 1 ? r.proxy : missing == 2 ? r.proxy_maybe : r.mech;
        field.reset();
        BOOST_TEST(dovecot_report_refusal(r) == "attributes", missing);
    }
}

// "allow" carries no success; unknown fields (a password hash, nested
// attributes, a password someone put in the template) are ignored.
BOOST_AUTO_TEST_CASE(parses_an_allow_and_ignores_other_fields)
{
    std::string why;
    auto const r = parse_dovecot_policy(R"({"login":"a@example.org","pwhash":"8f4c","password":"hunter2",)"
                                        R"("protocol":"pop3","remote":"2001:db8::7","x":{"y":"z"},"tls":false})",
                                        why);
    BOOST_TEST_REQUIRE(r.has_value(), why);
    BOOST_TEST(!r->success.has_value());
    BOOST_TEST(r->login == "a@example.org");
    BOOST_TEST(!r->tls);
}

BOOST_DATA_TEST_CASE(refuses_malformed_bodies, bdata::make(bad_bodies), c)
{
    std::string why;
    BOOST_TEST(!parse_dovecot_policy(c.body, why).has_value());
    BOOST_TEST(why.find(c.why) != std::string::npos, why);
}

BOOST_AUTO_TEST_CASE(refuses_a_login_over_255_octets)
{
    std::string why;
    auto const body = R"({"login":")" + std::string(256, 'a') + R"(","remote":"192.0.2.1","protocol":"imap"})";
    BOOST_TEST(!parse_dovecot_policy(body, why).has_value());
    auto const fits = R"({"login":")" + std::string(255, 'a') + R"(","remote":"192.0.2.1","protocol":"imap"})";
    BOOST_TEST(parse_dovecot_policy(fits, why).has_value());
}

BOOST_AUTO_TEST_CASE(only_pop3_and_imap_grant)
{
    BOOST_TEST(dovecot_grant_method("pop3") == "dovecot-pop3");
    BOOST_TEST(dovecot_grant_method("imap") == "dovecot-imap");
    for (auto const p : {"submission", "sieve", "lmtp", "IMAP", "", "pop3s"})
        BOOST_TEST(dovecot_grant_method(p).empty(), p);
}

BOOST_AUTO_TEST_SUITE_END()
