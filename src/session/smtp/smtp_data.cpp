// DATA: the message from the client to its recipients.
//
// - The upstream transaction is opened when the client sends DATA, before the
//   354. An upstream refusal of MAIL or of any relay recipient then fails the
//   whole message at DATA (upstream's 5xx passed on, 4xx/unreachable -> 451
//   4.4.1): the client has not sent the message yet, so nothing is lost and a
//   retry cannot duplicate a copy.
// - Mixed local + relay recipients: local copies (and the relay-drop copy) are
//   written only after the relay part succeeded, all to tmp/ first and then
//   committed (fsync, rename to new/). A 451 therefore leaves nothing behind.
//   A local write failing after the upstream's 250 answers 451 (logged): the
//   retry may duplicate the relayed copy, which beats losing the local one.
// - Message bodies are kept in memory only when a local or relay-drop copy is
//   needed (bounded by limits.max_message_size); relay-only mail is streamed.
#include "smtp_session.hpp"

#include "popgate/io/blocking.hpp"
#include "popgate/log/log.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/mail/received.hpp"

#include <algorithm>
#include <ctime>

namespace popgate::session {
namespace {

std::string make_queue_id()
{
    // 12 upper-case hex digits: unique enough to grep one message across logs
    // and the Received header.
    std::string id = log::new_session_id() + log::new_session_id().substr(0, 4);
    for (auto& c : id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return id;
}

// Dot-stuffing for the upstream (RFC 5321 §4.5.2); `in` has CRLF line ends only.
void stuff(std::string_view in, bool& at_line_start, std::string& out)
{
    for (char c : in) {
        if (at_line_start && c == '.') out.push_back('.');
        out.push_back(c);
        at_line_start = c == '\n';
    }
}

// Writes every copy that is kept here (local mailboxes, relay drop) to tmp/
// first and commits them only when all writes succeeded: all or nothing
// as far as the filesystem allows. Runs on the blocking pool.
void deliver_copies(std::vector<std::pair<std::filesystem::path, std::string>> const& copies, std::string const& host)
{
    std::vector<mail::delivery> ds;
    ds.reserve(copies.size());
    for (auto const& [dir, bytes] : copies) {
        mail::maildir(dir).ensure();
        ds.emplace_back(dir, host);
        ds.back().write(bytes);
    }
    for (auto& d : ds) d.commit();
}

}  // namespace

asio::awaitable<bool> smtp_session::do_data()
{
    auto const qid = make_queue_id();
    auto const& s = s_;
    auto& clock = c_.clock;
    std::vector<std::string> relay_rcpts;
    std::vector<smtp_recipient const*> locals;
    for (auto const& r : st_.rcpts) {
        if (r.local) locals.push_back(&r);
        else relay_rcpts.push_back(r.address);
    }
    bool const use_upstream = !relay_rcpts.empty() && !s.upstream_host.empty();
    bool const keep_copy = !locals.empty() || (!relay_rcpts.empty() && !use_upstream);
    bool const tls = c_.stream.tls_active();

    std::unique_ptr<relay::smtp_client> up;
    if (use_upstream) {
        if (!co_await ch_.flush()) co_return false;
        auto ex = co_await asio::this_coro::executor;
        up = std::make_unique<relay::smtp_client>(ex, s, c_.sid, svc_.upstreams);
        // The client waits for us meanwhile; the upstream's own timeouts bound this.
        clock.arm(s.smtp_idle_timeout + 8 * s.upstream_timeout);
        relay::upstream_envelope env{st_.mail_from, st_.declared_size, st_.eight_bit, relay_rcpts};
        auto v = co_await up->open(env);
        if (v.what != relay::upstream_verdict::kind::ok) {
            spdlog::warn("sid={} smtp upstream refused id={} ip={} reply={} {} detail={}", c_.sid, qid, c_.ip, v.code,
                         v.enhanced, v.log);
            ch_.queue(proto::reply(v.code, v.enhanced, v.text));
            st_.reset_transaction();
            co_return true;
        }
        spdlog::debug("sid={} smtp upstream open id={} {}", c_.sid, qid, v.log);
    }

    ch_.queue("354 End data with <CR><LF>.<CR><LF>\r\n");
    if (!co_await ch_.flush()) co_return false;

    std::string const header = mail::received_header(
        {st_.helo, c_.ip, host(), mail::received_protocol(st_.esmtp, tls, st_.authenticated), qid,
         std::time(nullptr)});
    std::string message;  // unstuffed, CRLF; only when a copy is kept here
    if (keep_copy) message = header;
    bool upstream_ok = up != nullptr;
    bool at_line_start = true;
    std::string stuffed;
    if (up) {
        stuff(header, at_line_start, stuffed);
        upstream_ok = co_await up->send(stuffed);
    }

    proto::data_reader dr(s.max_message_size, proto::smtp_max_text_line);
    std::string chunk_out;
    std::string& pending = ch_.reader().pending();
    std::string input = std::move(pending);  // pipelined bytes read with the DATA line come first
    pending.clear();
    // limits.data_timeout bounds the WHOLE message, not each read: a
    // slow-loris writer sending a byte now and then is cut off all the same.
    auto const data_deadline = io::clock::now() + s.data_timeout;
    char buf[16384];
    for (;;) {
        std::size_t consumed = 0;
        chunk_out.clear();
        auto const status = dr.feed(input, consumed, chunk_out);
        if (!chunk_out.empty()) {
            if (keep_copy) message += chunk_out;
            if (up && upstream_ok) {
                stuffed.clear();
                stuff(chunk_out, at_line_start, stuffed);
                clock.arm(s.data_timeout + s.upstream_timeout);
                upstream_ok = co_await up->send(stuffed);
            }
        }
        if (status == proto::data_reader::status::done) {
            // Whatever follows the terminator is the next pipelined command.
            pending.assign(input, consumed, std::string::npos);
            ch_.reader().restart_timing();  // a command after the message begins now
            break;
        }
        clock.set(data_deadline);
        // Nothing is queued for the client here (the 354 went out), so the
        // watchdog may tell it why it is cut off (421 4.4.2), as at a prompt.
        waiting_for_command_ = true;
        auto [ec, n] = co_await c_.stream.read_some(asio::buffer(buf));
        waiting_for_command_ = false;
        if (ec) {
            // Client gone mid-DATA: nothing is delivered anywhere.
            if (up) up->abort();
            c_.end_reason = clock.expired ? "timeout-in-data" : "eof-in-data";
            spdlog::warn("sid={} smtp data aborted id={} ip={} reason={} received={}", c_.sid, qid, c_.ip,
                         c_.end_reason, dr.size());
            co_return false;
        }
        input.assign(buf, n);
    }

    std::size_t const nrcpt = st_.rcpts.size();
    auto const done = [&](int code, std::string_view enh, std::string const& text, std::string_view result) {
        spdlog::info("sid={} smtp message id={} ip={} from=<{}> rcpts={} local={} relay={} size={} result={} reply={}",
                     c_.sid, qid, c_.ip, log::escape(st_.mail_from), nrcpt, locals.size(), relay_rcpts.size(),
                     dr.size(), result, code);
        ch_.queue(proto::reply(code, enh, text));
        st_.reset_transaction();
    };

    if (auto const e = dr.error()) {
        if (up) up->abort();
        switch (*e) {
        case proto::errc::too_long: done(552, "5.3.4", "Message size exceeds fixed limit", "too-big"); break;
        case proto::errc::line_too_long:
            done(550, "5.5.2", "Error: message line longer than 998 octets", "line-too-long");
            break;
        default: done(550, "5.5.2", "Error: bare <CR> or <LF> in message data", "bare-cr-lf"); break;
        }
        co_return true;
    }
    if (up && !upstream_ok) {
        up->abort();
        done(451, "4.4.1", "Error: upstream mail server unavailable, try again later", "upstream-lost");
        co_return true;
    }

    // Relay part first: its verdict decides whether local copies are kept.
    std::string upstream_note;
    if (up) {
        clock.arm(s.smtp_idle_timeout + 2 * s.upstream_timeout);
        auto v = co_await up->finish();
        if (v.what != relay::upstream_verdict::kind::ok) {
            spdlog::warn("sid={} smtp upstream refused id={} detail={}", c_.sid, qid, v.log);
            done(v.code, v.enhanced, v.text,
                 v.what == relay::upstream_verdict::kind::permanent ? "upstream-rejected" : "upstream-tempfail");
            co_return true;
        }
        upstream_note = " (" + v.text + ")";
        spdlog::info("sid={} smtp relayed id={} upstream={}:{} {}", c_.sid, qid, s.upstream_host, s.upstream_port,
                     v.log);
    }

    if (keep_copy) {
        std::vector<std::pair<std::filesystem::path, std::string>> copies;
        if (!relay_rcpts.empty() && !use_upstream) {
            // The drop folder stands in for the upstream: keep the envelope visible.
            std::string env = "X-Envelope-From: <" + st_.mail_from + ">\r\nX-Envelope-To: ";
            for (std::size_t i = 0; i < relay_rcpts.size(); ++i) env += (i ? ", <" : "<") + relay_rcpts[i] + ">";
            copies.emplace_back(s.relay_drop, env + "\r\n" + message);
        }
        std::vector<std::string> users;
        for (auto const* r : locals) {
            if (std::find(users.begin(), users.end(), r->user) != users.end()) continue;  // one copy per mailbox
            users.push_back(r->user);
            copies.emplace_back(r->maildir, message);
        }
        try {
            clock.arm(s.smtp_idle_timeout + s.data_timeout);
            // Named first: g++ 12 mishandles closures owning strings as temporaries in co_await.
            auto job = [&copies, &s] { deliver_copies(copies, s.hostname); };
            co_await io::run_blocking(svc_.blocking, job);
        } catch (std::exception const& e) {
            spdlog::error("sid={} smtp delivery failed id={} error={}{}", c_.sid, qid, log::escape(e.what()),
                          up ? " note=relayed copy already accepted upstream" : "");
            done(451, "4.3.0", "Error: local delivery failed, try again later", "delivery-failed");
            co_return true;
        }
    }
    ++st_.messages;
    done(250, "2.0.0", "Ok: queued as " + qid + upstream_note, "ok");
    co_return true;
}

}  // namespace popgate::session
