// The pure step functions of both sessions: the command tables' rules
// enforced in one place (phases, pre_tls, ends_group, junk, secret
// arguments), without a stream. The conversations themselves are in the
// transcript tests (tests/session).
#include "popgate/session/pop3/pop3_state.hpp"
#include "popgate/session/smtp/smtp_state.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>

using namespace popgate;
using namespace popgate::session;

namespace {

smtp_offer offer()
{
    smtp_offer o;
    o.host = "gw.test";
    o.ip = "192.0.2.7";
    o.starttls_port = true;
    o.can_start_tls = true;
    o.plaintext = true;
    o.max_message_size = 1000;
    o.max_recipients = 10;
    o.max_bad_commands = 20;
    o.max_junk_commands = 3;
    return o;
}

bool logged(std::vector<log_line> const& log, std::string const& needle)
{
    return std::any_of(log.begin(), log.end(), [&](auto const& l) { return l.text.find(needle) != std::string::npos; });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(smtp_steps, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(tls_required_refuses_what_the_table_does_not_mark_pre_tls)
{
    auto o = offer();
    o.tls_required = true;
    smtp_state st;
    BOOST_TEST(smtp_on_line(st, "EHLO client", o).reply.rfind("250-gw.test", 0) == 0);
    BOOST_TEST(smtp_on_line(st, "MAIL FROM:<a@b>", o).reply == "530 5.7.0 Must issue a STARTTLS command first\r\n");
    BOOST_TEST(smtp_on_line(st, "AUTH PLAIN", o).reply == "530 5.7.0 Must issue a STARTTLS command first\r\n");
    BOOST_TEST(smtp_on_line(st, "NOOP", o).reply == "250 2.0.0 Ok\r\n");
    auto const s = smtp_on_line(st, "STARTTLS", o);
    BOOST_TEST((s.effect == smtp_effect::starttls));
    o.tls_active = true;
    o.can_start_tls = false;
    BOOST_TEST(smtp_on_line(st, "MAIL FROM:<a@b>", o).reply == "250 2.1.0 Ok\r\n");
}

BOOST_AUTO_TEST_CASE(groups_end_where_the_table_says)
{
    auto const o = offer();
    smtp_state st;
    BOOST_TEST(smtp_on_line(st, "EHLO client", o).ends_group);
    BOOST_TEST(!smtp_on_line(st, "MAIL FROM:<a@b>", o).ends_group);
    auto const r = smtp_on_line(st, "RCPT TO:<x@example.org>", o);
    BOOST_TEST(!r.ends_group);
    BOOST_TEST((r.effect == smtp_effect::rcpt));
    BOOST_TEST(smtp_on_line(st, "NOOP", o).ends_group);
}

BOOST_AUTO_TEST_CASE(junk_past_the_limit_closes_with_421)
{
    auto const o = offer();
    smtp_state st;
    for (int i = 0; i < 3; ++i) BOOST_TEST((smtp_on_line(st, "NOOP", o).effect == smtp_effect::reply));
    auto const s = smtp_on_line(st, "RSET", o);
    BOOST_TEST((s.effect == smtp_effect::close));
    BOOST_TEST(s.reply == "421 4.7.0 gw.test Error: too many commands without progress\r\n");
    BOOST_TEST(s.end_reason == "too-many-junk-commands");
}

BOOST_AUTO_TEST_CASE(auth_arguments_are_never_logged)
{
    auto const o = offer();
    smtp_state st;
    smtp_on_line(st, "EHLO client", o);
    auto const s = smtp_on_line(st, "AUTH PLAIN AGFsaWNlAHNlY3JldA==", o);
    BOOST_TEST((s.effect == smtp_effect::auth));
    BOOST_TEST(logged(s.log, "cmd=AUTH"));
    BOOST_TEST(!logged(s.log, "AGFsaWNl"));
    BOOST_TEST(logged(smtp_on_line(st, "MAIL FROM:<a@b>", o).log, "args=<a@b>"));
}

BOOST_AUTO_TEST_CASE(relay_verdicts_become_replies)
{
    auto const o = offer();
    smtp_state st;
    smtp_on_line(st, "EHLO client", o);
    smtp_on_line(st, "MAIL FROM:<a@b>", o);
    auto const r = smtp_on_line(st, "RCPT TO:<x@example.org>", o);
    BOOST_TEST_REQUIRE(r.rcpt.has_value());
    relay::verdict deny{proto::relay_verdict::deny, "no-grant-or-network", std::nullopt, {}};
    BOOST_TEST(smtp_rcpt_decided(st, *r.rcpt, deny, o).reply == "554 5.7.1 <x@example.org>: Relay access denied\r\n");
    BOOST_TEST(st.rcpts.empty());
    relay::verdict temp{proto::relay_verdict::tempfail, "disk I/O error", std::nullopt, {}};
    BOOST_TEST(smtp_rcpt_decided(st, *r.rcpt, temp, o).reply ==
               "451 4.3.0 <x@example.org>: Temporary lookup failure\r\n");
    BOOST_TEST(st.rcpts.empty());
    relay::verdict quota{proto::relay_verdict::over_quota, "quota=messages", std::nullopt, "2 messages per hour"};
    BOOST_TEST(smtp_rcpt_decided(st, *r.rcpt, quota, o).reply ==
               "452 4.7.1 <x@example.org>: Relay quota exceeded for your address (2 messages per hour), "
               "try again later or use SMTP AUTH\r\n");
    BOOST_TEST(st.rcpts.empty());
    BOOST_TEST(!st.grant_message);
    relay::verdict grant{proto::relay_verdict::relay_grant, "grant_user=alice grant=192.0.2.7", std::nullopt, {}};
    BOOST_TEST(smtp_rcpt_decided(st, *r.rcpt, grant, o).reply == "250 2.1.5 Ok\r\n");
    BOOST_TEST(st.rcpts.size() == 1u);
    BOOST_TEST((st.phase == proto::smtp_phase::in_rcpt));
    // The message is counted once per transaction; RSET starts the next.
    BOOST_TEST(st.grant_message);
    smtp_on_line(st, "RSET", o);
    BOOST_TEST(!st.grant_message);
}

BOOST_AUTO_TEST_CASE(a_recipient_already_taken_is_not_decided_again)
{
    auto const o = offer();
    smtp_state st;
    smtp_on_line(st, "EHLO client", o);
    smtp_on_line(st, "MAIL FROM:<a@b>", o);
    auto const first = smtp_on_line(st, "RCPT TO:<x@example.org>", o);
    BOOST_TEST_REQUIRE(first.rcpt.has_value());
    relay::verdict deny{proto::relay_verdict::deny, "no-grant-or-network", std::nullopt, {}};
    smtp_rcpt_decided(st, *first.rcpt, deny, o);
    // Refused: a repeat is decided again (it may be refused again).
    BOOST_TEST(smtp_on_line(st, "RCPT TO:<x@example.org>", o).rcpt.has_value());
    relay::verdict grant{proto::relay_verdict::relay_grant, "grant_user=alice grant=192.0.2.7", std::nullopt, {}};
    smtp_rcpt_decided(st, *first.rcpt, grant, o);
    // Taken: the repeat gets 250 at once, with no decision to run.
    auto const again = smtp_on_line(st, "RCPT TO:<x@example.org>", o);
    BOOST_TEST(!again.rcpt.has_value());
    BOOST_TEST(again.reply == "250 2.1.5 Ok\r\n");
    BOOST_TEST(logged(again.log, "smtp rcpt to=<x@example.org> ip=192.0.2.7 decision=repeat"));
    BOOST_TEST(st.rcpts.size() == 1u);
    BOOST_TEST(smtp_on_line(st, "RCPT TO:<y@example.org>", o).rcpt.has_value());
    // RSET ends the transaction: the next one decides every recipient.
    smtp_on_line(st, "RSET", o);
    smtp_on_line(st, "MAIL FROM:<a@b>", o);
    BOOST_TEST(smtp_on_line(st, "RCPT TO:<x@example.org>", o).rcpt.has_value());
}

BOOST_AUTO_TEST_CASE(refused_senders_and_recipients_count_as_errors)
{
    auto o = offer();
    o.max_bad_commands = 3;
    smtp_state st;
    smtp_on_line(st, "EHLO client", o);
    BOOST_TEST(smtp_on_line(st, "MAIL FROM:<a@b> FOO=1", o).reply == "555 5.5.4 Unsupported option: FOO\r\n");
    smtp_on_line(st, "MAIL FROM:<a@b>", o);
    auto const r = smtp_on_line(st, "RCPT TO:<x@example.org>", o);
    BOOST_TEST_REQUIRE(r.rcpt.has_value());
    // 4xx is not the client's fault: not counted, however many.
    relay::verdict temp{proto::relay_verdict::tempfail, "disk I/O error", std::nullopt, {}};
    for (int i = 0; i < 5; ++i) BOOST_TEST((smtp_rcpt_decided(st, *r.rcpt, temp, o).effect == smtp_effect::reply));
    relay::verdict deny{proto::relay_verdict::deny, "no-grant-or-network", std::nullopt, {}};
    BOOST_TEST(smtp_rcpt_decided(st, *r.rcpt, deny, o).reply == "554 5.7.1 <x@example.org>: Relay access denied\r\n");
    BOOST_TEST(smtp_on_line(st, "RCPT TO:<bad", o).reply == "501 5.1.3 Bad recipient address syntax\r\n");
    BOOST_TEST(st.bad == 3u);
    // The fourth error: its reply, then 421, and the session ends.
    auto const last = smtp_rcpt_decided(st, *r.rcpt, deny, o);
    BOOST_TEST(last.reply == "554 5.7.1 <x@example.org>: Relay access denied\r\n"
                             "421 4.7.0 gw.test Error: too many errors\r\n");
    BOOST_TEST((last.effect == smtp_effect::close));
    BOOST_TEST(last.end_reason == "too-many-errors");
}

BOOST_AUTO_TEST_CASE(unparsable_lines_are_logged_by_keyword_only)
{
    auto const o = offer();
    smtp_state st;
    smtp_on_line(st, "EHLO client", o);
    auto const tab = smtp_on_line(st, "AUTH\tPLAIN c2VjcmV0", o);
    BOOST_TEST(logged(tab.log, "keyword=AUTH length=19"));
    BOOST_TEST(!logged(tab.log, "c2VjcmV0"));
    auto const b64 = smtp_on_line(st, "c2VjcmV0cGFzcw==", o);  // a password after a failed exchange
    BOOST_TEST(logged(b64.log, "keyword=- length=16"));
    BOOST_TEST(!logged(b64.log, "c2VjcmV0"));
    auto const lf = smtp_on_line(st, "AUTH PLAIN AHUAc2VjcmV0\n", o);
    BOOST_TEST(lf.reply == "500 5.5.2 Error: bare <LF> received\r\n");
    BOOST_TEST(logged(lf.log, "keyword=AUTH"));
    BOOST_TEST(!logged(lf.log, "AHUAc2VjcmV0"));
}

BOOST_AUTO_TEST_CASE(upstream_rcpt_verdicts_become_that_rcpts_reply)
{
    auto const o = offer();
    smtp_state st;
    smtp_on_line(st, "EHLO client", o);
    smtp_on_line(st, "MAIL FROM:<a@b>", o);
    auto const t0 = st.transaction;
    relay::verdict const grant{proto::relay_verdict::relay_grant, "grant_user=- grant=192.0.2.7", std::nullopt, {}};
    relay::verdict const local{proto::relay_verdict::local, "", relay::mailbox{"alice", "/m/alice"}, {}};
    relay::verdict const deny{proto::relay_verdict::deny, "no grant or network", std::nullopt, {}};
    BOOST_TEST(!smtp_asks_upstream(st, "alice@gw.test", local));
    BOOST_TEST(!smtp_asks_upstream(st, "x@example.org", deny));
    BOOST_TEST(smtp_asks_upstream(st, "x@example.org", grant));

    auto const bad = smtp_on_line(st, "RCPT TO:<x@example.org>", o);
    relay::upstream_verdict refused{relay::upstream_verdict::kind::permanent, 550, "5.1.1",
                                    "<x@example.org>: Error: upstream refused: no such user", "no such user"};
    auto const r1 = smtp_rcpt_decided(st, *bad.rcpt, grant, o, &refused);
    BOOST_TEST(r1.reply == "550 5.1.1 <x@example.org>: Error: upstream refused: no such user\r\n");
    BOOST_TEST(logged(r1.log, "decision=grant"));
    BOOST_TEST(logged(r1.log, "upstream_reply=550 upstream_status=5.1.1 result=refused upstream_detail=\"no such user\""));
    BOOST_TEST(st.rcpts.empty());  // not taken: DATA now is "no valid recipients"
    BOOST_TEST((st.phase == proto::smtp_phase::in_mail));
    BOOST_TEST(smtp_on_line(st, "DATA", o).reply == "554 5.5.1 Error: no valid recipients\r\n");

    relay::upstream_verdict busy{relay::upstream_verdict::kind::temporary, 450, "4.2.1", "<y@example.org>: busy", ""};
    auto const later = smtp_on_line(st, "RCPT TO:<y@example.org>", o);
    BOOST_TEST(smtp_rcpt_decided(st, *later.rcpt, grant, o, &busy).reply == "450 4.2.1 <y@example.org>: busy\r\n");
    BOOST_TEST(st.rcpts.empty());

    auto const good = smtp_on_line(st, "RCPT TO:<z@example.org>", o);
    relay::upstream_verdict ok{relay::upstream_verdict::kind::ok, 250, "2.1.5", "", "OK"};
    auto const r3 = smtp_rcpt_decided(st, *good.rcpt, grant, o, &ok);
    BOOST_TEST(r3.reply == "250 2.1.5 Ok\r\n");
    BOOST_TEST(logged(r3.log, "upstream_reply=250"));
    BOOST_TEST_REQUIRE(st.rcpts.size() == 1u);
    // Taken once: the same address again is not asked upstream again.
    BOOST_TEST(!smtp_asks_upstream(st, "z@example.org", grant));
    BOOST_TEST(st.transaction == t0);
    // RSET (and HELO/EHLO, STARTTLS) start the next transaction: the session
    // sees the number change and resets the upstream one.
    smtp_on_line(st, "RSET", o);
    BOOST_TEST(st.transaction == t0 + 1);
    BOOST_TEST(smtp_asks_upstream(st, "z@example.org", grant));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pop3_steps, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(phase_rules_and_secret_arguments)
{
    pop3_state st;
    pop3_offer const o{.stls = false, .plaintext = true, .cram_md5 = false};
    pop3_rules const r{20, 100, "192.0.2.7"};
    BOOST_TEST(pop3_on_line(st, "STAT", o, r).reply == "-ERR Command not valid in this state\r\n");
    auto const u = pop3_on_line(st, "USER alice", o, r);
    BOOST_TEST((u.effect == pop3_effect::user));
    BOOST_TEST(pop3_user_checked(st, "alice").reply == "+OK\r\n");
    auto const p = pop3_on_line(st, "PASS s3cret", o, r);
    BOOST_TEST((p.effect == pop3_effect::pass));
    BOOST_TEST(p.user == "alice");
    BOOST_TEST(!logged(p.log, "s3cret"));
    BOOST_TEST(st.pending_user.empty());
}

BOOST_AUTO_TEST_CASE(junk_and_progress)
{
    pop3_state st;
    pop3_offer const o{.stls = false, .plaintext = true, .cram_md5 = false};
    pop3_rules const r{20, 2, "192.0.2.7"};
    pop3_logged_in(st, {{"1.M1P1.h", "/m/cur/a", 10}});
    BOOST_TEST((pop3_on_line(st, "NOOP", o, r).effect == pop3_effect::reply));
    BOOST_TEST((pop3_on_line(st, "STAT", o, r).effect == pop3_effect::reply));
    BOOST_TEST((pop3_on_line(st, "RETR 1", o, r).effect == pop3_effect::retr));  // progress
    BOOST_TEST((pop3_on_line(st, "NOOP", o, r).effect == pop3_effect::reply));
    BOOST_TEST((pop3_on_line(st, "NOOP", o, r).effect == pop3_effect::reply));
    auto const s = pop3_on_line(st, "NOOP", o, r);
    BOOST_TEST((s.effect == pop3_effect::close));
    BOOST_TEST(s.end_reason == "too-many-junk-commands");
}

BOOST_AUTO_TEST_CASE(refused_mechanisms_count_as_errors)
{
    pop3_state st;
    pop3_offer const o{.stls = true, .plaintext = false, .cram_md5 = false};
    pop3_rules const r{4, 100, "192.0.2.7"};
    BOOST_TEST(pop3_on_line(st, "USER alice", o, r).reply.rfind("-ERR [AUTH]", 0) == 0);
    BOOST_TEST(pop3_on_line(st, "APOP alice 0123456789abcdef0123456789abcdef", o, r).reply ==
               "-ERR [AUTH] APOP is not available on this server\r\n");
    BOOST_TEST(pop3_on_line(st, "AUTH FOO", o, r).reply == "-ERR Unsupported authentication mechanism\r\n");
    BOOST_TEST(st.bad == 3u);
    auto const s = pop3_on_line(st, "AUTH PLAIN", o, r);
    BOOST_TEST((s.effect == pop3_effect::close));
    BOOST_TEST(s.reply == "-ERR too many errors\r\n");
}

BOOST_AUTO_TEST_CASE(the_list_of_mechanisms_is_junk)
{
    pop3_state st;
    pop3_offer const o{.stls = false, .plaintext = true, .cram_md5 = false};
    pop3_rules const r{20, 2, "192.0.2.7"};
    BOOST_TEST(pop3_on_line(st, "AUTH", o, r).reply.rfind("+OK", 0) == 0);
    BOOST_TEST(pop3_on_line(st, "AUTH", o, r).reply.rfind("+OK", 0) == 0);
    auto const s = pop3_on_line(st, "AUTH", o, r);
    BOOST_TEST((s.effect == pop3_effect::close));
    BOOST_TEST(s.end_reason == "too-many-junk-commands");
}

BOOST_AUTO_TEST_CASE(unparsable_lines_are_logged_by_keyword_only)
{
    pop3_state st;
    pop3_offer const o{.stls = false, .plaintext = true, .cram_md5 = false};
    pop3_rules const r{20, 100, "192.0.2.7"};
    auto const tab = pop3_on_line(st, "PASS\tsecretword", o, r);
    BOOST_TEST(logged(tab.log, "keyword=PASS length=15"));
    BOOST_TEST(!logged(tab.log, "secretword"));
    auto const b64 = pop3_on_line(st, "c2VjcmV0d29yZA==", o, r);
    BOOST_TEST(logged(b64.log, "keyword=- length=16"));
    BOOST_TEST(!logged(b64.log, "c2VjcmV0"));
}

BOOST_AUTO_TEST_CASE(a_message_number_that_is_no_number_is_an_error)
{
    pop3_state st;
    pop3_offer const o{.stls = false, .plaintext = true, .cram_md5 = false};
    pop3_rules const r{20, 100, "192.0.2.7"};
    pop3_logged_in(st, {{"1.M1P1.h", "/m/cur/a", 10}});
    // Out of range: the client's stale view, answered and not counted.
    BOOST_TEST(pop3_on_line(st, "RETR 2", o, r).reply.rfind("-ERR no such message", 0) == 0);
    BOOST_TEST(pop3_on_line(st, "DELE 5", o, r).reply.rfind("-ERR no such message", 0) == 0);
    BOOST_TEST(st.bad == 0u);
    for (auto const* line : {"RETR abc", "DELE x", "LIST 0", "UIDL -1"})
        BOOST_TEST(pop3_on_line(st, line, o, r).reply == "-ERR invalid message number\r\n", line);
    BOOST_TEST(st.bad == 4u);
}

BOOST_AUTO_TEST_CASE(too_many_errors_end_the_session)
{
    pop3_state st;
    pop3_offer const o{.stls = false, .plaintext = true, .cram_md5 = false};
    pop3_rules const r{3, 100, "192.0.2.7"};
    BOOST_TEST(pop3_on_line(st, "XYZZY", o, r).reply == "-ERR Unknown command\r\n");
    BOOST_TEST(pop3_on_too_long(st, r).reply == "-ERR line too long\r\n");
    auto const s = pop3_on_line(st, "", o, r);
    BOOST_TEST((s.effect == pop3_effect::close));
    BOOST_TEST(s.reply == "-ERR too many errors\r\n");
}

BOOST_AUTO_TEST_SUITE_END()
