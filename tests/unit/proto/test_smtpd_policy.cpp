// The Postfix policy delegation request parser and answer builder.
#include "popgate/proto/smtpd_policy.hpp"

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <ostream>
#include <string>
#include <vector>

using namespace popgate::proto;

namespace {

// Feeds whole lines; returns the last result.
result<policy_line> feed(policy_request& r, std::vector<std::string> const& lines)
{
    result<policy_line> last = policy_line::attribute;
    for (auto const& l : lines) {
        last = policy_add_line(r, l);
        if (!last) break;
    }
    return last;
}

// What Postfix 3.7 sends at RCPT (abridged from SMTPD_POLICY_README).
std::vector<std::string> const postfix_rcpt{
    "request=smtpd_access_policy", "protocol_state=RCPT", "protocol_name=ESMTP",
    "client_address=192.0.2.7", "client_name=another.domain.tld", "reverse_client_name=another.domain.tld",
    "helo_name=some.domain.tld", "sender=foo@bar.tld", "recipient=bar@foo.tld", "recipient_count=0",
    "queue_id=", "instance=123.456.7", "size=12345", "etrn_domain=", "stress=", "sasl_method=",
    "sasl_username=", "sasl_sender=", "ccert_subject=", "ccert_issuer=", "ccert_fingerprint=",
    "encryption_protocol=TLSv1.3", "encryption_cipher=TLS_AES_256_GCM_SHA384", "encryption_keysize=256",
    "policy_context=", "server_address=127.0.0.1", "server_port=25", "compatibility_level=3.6",
    "mail_version=3.7.11", ""};

struct state_case {
    std::string_view request;
    std::string_view state;
    policy_scope scope;
};
std::ostream& operator<<(std::ostream& os, state_case const& c) { return os << c.request << "/" << c.state; }
constexpr state_case scopes[]{
    {"smtpd_access_policy", "RCPT", policy_scope::relay},
    {"smtpd_access_policy", "rcpt", policy_scope::relay},
    {"", "", policy_scope::relay},  // a minimal client: only client_address
    {"", "RCPT", policy_scope::relay},
    {"smtpd_access_policy", "CONNECT", policy_scope::other_state},
    {"smtpd_access_policy", "DATA", policy_scope::other_state},
    {"smtpd_access_policy", "END-OF-MESSAGE", policy_scope::other_state},
    {"smtpd_access_policy", "RCPTX", policy_scope::other_state},
    {"something_else", "RCPT", policy_scope::other_request},
};

}  // namespace

BOOST_AUTO_TEST_SUITE(smtpd_policy, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(reads_a_postfix_request)
{
    policy_request r;
    auto const res = feed(r, postfix_rcpt);
    BOOST_TEST_REQUIRE(res.has_value());
    BOOST_TEST((*res == policy_line::end));
    BOOST_TEST(r.request == "smtpd_access_policy");
    BOOST_TEST(r.protocol_state == "RCPT");
    BOOST_TEST(r.client_address == "192.0.2.7");
    BOOST_TEST(r.recipient == "bar@foo.tld");
    BOOST_TEST(r.sasl_username == "");
    BOOST_TEST(r.attributes == postfix_rcpt.size() - 1);
    BOOST_TEST((policy_scope_of(r) == policy_scope::relay));
}

BOOST_AUTO_TEST_CASE(value_keeps_everything_after_the_first_equals)
{
    policy_request r;
    BOOST_TEST_REQUIRE(policy_add_line(r, "sasl_username=a=b c").has_value());
    BOOST_TEST(r.sasl_username == "a=b c");
    BOOST_TEST_REQUIRE(policy_add_line(r, "recipient=").has_value());
    BOOST_TEST(r.recipient == "");
    BOOST_TEST(r.attributes == 2u);
}

BOOST_AUTO_TEST_CASE(an_empty_line_alone_is_an_empty_request)
{
    policy_request r;
    auto const res = policy_add_line(r, "");
    BOOST_TEST_REQUIRE(res.has_value());
    BOOST_TEST((*res == policy_line::end));
    BOOST_TEST(r.attributes == 0u);
}

BOOST_AUTO_TEST_CASE(refuses_a_line_without_a_name)
{
    policy_request r;
    BOOST_TEST((policy_add_line(r, "no equals sign").error() == errc::bad_attribute));
    BOOST_TEST((policy_add_line(r, "=value").error() == errc::bad_attribute));
    BOOST_TEST((policy_add_line(r, std::string("a=b\0c", 5)).error() == errc::nul_byte));
}

BOOST_AUTO_TEST_CASE(refuses_an_attribute_it_reads_sent_twice)
{
    policy_request r;
    BOOST_TEST_REQUIRE(policy_add_line(r, "client_address=192.0.2.7").has_value());
    BOOST_TEST((policy_add_line(r, "client_address=198.51.100.1").error() == errc::bad_attribute));
    BOOST_TEST(r.client_address == "192.0.2.7");
    // Attributes popgate does not read may repeat.
    BOOST_TEST(policy_add_line(r, "x_custom=1").has_value());
    BOOST_TEST(policy_add_line(r, "x_custom=2").has_value());
}

BOOST_AUTO_TEST_CASE(bounds_the_number_of_attributes)
{
    policy_request r;
    for (std::size_t i = 0; i < policy_max_attributes; ++i)
        BOOST_TEST_REQUIRE(policy_add_line(r, "a" + std::to_string(i) + "=x").has_value());
    BOOST_TEST((policy_add_line(r, "one_more=x").error() == errc::too_many_attributes));
    // The empty line still ends the request that fitted.
    BOOST_TEST(policy_add_line(r, "").has_value());
}

BOOST_AUTO_TEST_CASE(bounds_the_line_length)
{
    policy_request r;
    std::string const fits = "ccert_subject=" + std::string(policy_max_line - 1 - 14, 'x');
    BOOST_TEST_REQUIRE(fits.size() + 1 == policy_max_line);
    BOOST_TEST(policy_add_line(r, fits).has_value());
    BOOST_TEST((policy_add_line(r, fits + "x").error() == errc::line_too_long));
}

BOOST_DATA_TEST_CASE(scope_is_the_relay_question_only_at_rcpt, boost::unit_test::data::make(scopes), c)
{
    policy_request r;
    r.request = c.request;
    r.protocol_state = c.state;
    BOOST_TEST((policy_scope_of(r) == c.scope));
}

BOOST_AUTO_TEST_CASE(actions_for_each_verdict)
{
    BOOST_TEST(policy_action(relay_verdict::relay_grant, "OK") == "OK");
    BOOST_TEST(policy_action(relay_verdict::relay_network, "PERMIT") == "PERMIT");
    BOOST_TEST(policy_action(relay_verdict::relay_auth, "OK") == "OK");
    // No grant is no opinion: never a REJECT, never an OK.
    BOOST_TEST(policy_action(relay_verdict::deny, "OK") == "DUNNO");
    BOOST_TEST(policy_action(relay_verdict::local, "OK") == "DUNNO");
    auto const t = policy_action(relay_verdict::tempfail, "OK");
    BOOST_TEST(t.rfind("DEFER_IF_REJECT 4.3.0 ", 0) == 0u);
}

BOOST_AUTO_TEST_CASE(violations_are_tempfails)
{
    BOOST_TEST(policy_violation_action(errc::line_too_long) ==
               "DEFER_IF_REJECT 4.3.5 Policy request refused: request line too long");
    BOOST_TEST(policy_violation_action(errc::too_many_attributes) ==
               "DEFER_IF_REJECT 4.3.5 Policy request refused: too many attributes in the request");
    BOOST_TEST(policy_violation_action(errc::bad_attribute) ==
               "DEFER_IF_REJECT 4.3.5 Policy request refused: malformed request");
}

BOOST_AUTO_TEST_CASE(answer_is_one_line_and_an_empty_line)
{
    BOOST_TEST(policy_answer("DUNNO") == "action=DUNNO\n\n");
}

BOOST_AUTO_TEST_CASE(configured_action_must_be_one_printable_line)
{
    BOOST_TEST(policy_action_valid("OK"));
    BOOST_TEST(policy_action_valid("ok"));
    BOOST_TEST(policy_action_valid("OK granted by popgate"));
    BOOST_TEST(policy_action_valid("PERMIT"));
    BOOST_TEST(policy_action_valid("Permit"));
    BOOST_TEST(policy_action_valid("250"));
    // Postfix goes on after these, to reject_unauth_destination: refused.
    BOOST_TEST(!policy_action_valid("PREPEND X-Relay: popgate"));
    BOOST_TEST(!policy_action_valid("DUNNO"));
    BOOST_TEST(!policy_action_valid("OKAY"));
    BOOST_TEST(!policy_action_valid("FILTER smtp:[127.0.0.1]:10025"));
    BOOST_TEST(!policy_action_valid("250 ok"));
    BOOST_TEST(!policy_action_valid(""));
    BOOST_TEST(!policy_action_valid("OK\nREJECT"));
    BOOST_TEST(!policy_action_valid(" OK"));
    BOOST_TEST(!policy_action_valid("OK "));
    BOOST_TEST(!policy_action_valid(std::string(201, 'A')));
    BOOST_TEST(!policy_action_valid("caf\xc3\xa9"));
}

BOOST_AUTO_TEST_SUITE_END()
