// DATA: the message from the client to its recipients.
//
// - The upstream transaction was opened at the first relayed RCPT, and each
//   relayed recipient in it was taken by the upstream (smtp_session.cpp:
//   upstream_rcpt); a recipient the upstream refused got the refusal as its
//   RCPT reply and is not here. DATA goes upstream before the 354: an
//   upstream that is gone by now or refuses DATA fails the message (5xx
//   passed on, 4xx/unreachable -> 451 4.4.1) before the client sent it, so
//   nothing is lost and a retry cannot duplicate a copy.
// - Mixed local + relay recipients: local copies (and the relay-drop copy) are
//   written only after the relay part succeeded, all to tmp/ first and then
//   committed (fsync, rename to new/). A 451 therefore leaves nothing behind.
//   A local write failing after the upstream's 250 answers 451 (logged): the
//   retry may duplicate the relayed copy, which beats losing the local one.
// - A message is never held whole in memory: it streams to the upstream and
//   into the tmp/ files of its local copies as it arrives, through a buffer
//   of fixed size per session. A message that fails (client gone, too big,
//   smuggling, upstream refusal) leaves no tmp/ file behind.
// - limits.max_data_in_flight bounds the octets of all messages being
//   received at once (the tmp/ files and upstream transactions they hold):
//   past it the message gets 451 4.3.1 and the client tries later.
#include "smtp_session.hpp"

#include "popgate/io/blocking.hpp"
#include "popgate/log/log.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/mail/received.hpp"
#include "popgate/proto/ascii.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <system_error>

namespace popgate::session {
namespace {

std::string make_queue_id()
{
    // 12 upper-case hex digits: unique enough to grep one message across logs
    // and the Received header.
    std::string id = log::new_session_id() + log::new_session_id().substr(0, 4);
    std::transform(id.begin(), id.end(), id.begin(), proto::ascii_upper);
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

constexpr std::size_t spool_chunk = 64 * 1024;  // written to the copies at this size

// The copies kept here (local mailboxes, relay drop), each a tmp/ file that
// grows as the message arrives and is moved to new/ only by commit(). Every
// member blocks on the filesystem: call them on the blocking pool.
class local_copies {
public:
    struct destination {
        std::filesystem::path maildir;
        std::string head;  // written first (Received:, and the envelope for the drop)
    };
    void open(std::vector<destination> const& dests, std::string const& host)
    {
        files_.reserve(dests.size());
        for (auto const& d : dests) {
            mail::maildir(d.maildir).ensure();
            files_.emplace_back(d.maildir, host);
            files_.back().write(d.head);
        }
    }
    void write(std::string_view bytes)
    {
        for (auto& f : files_) f.write(bytes);
    }
    // All tmp/ files fsynced and renamed into new/, or (on a throw) none.
    void commit() { mail::commit_all(files_); }
    void abort() noexcept
    {
        for (auto& f : files_) f.abort();
    }
    bool empty() const noexcept { return files_.empty(); }

private:
    std::vector<mail::delivery> files_;
};

// Why a local copy failed, and what the client is told: a full disk or
// quota is "insufficient system storage" (RFC 3463 4.3.1), as the in-flight
// limit is; anything else 4.3.0. Both temporary: the client sends again.
struct copy_failure {
    std::string error;  // "" = none
    bool out_of_storage = false;
    void note(std::exception const& e)
    {
        error = e.what();
        auto const* se = dynamic_cast<std::system_error const*>(&e);
        out_of_storage = se && (se->code() == std::errc::no_space_on_device ||
                                se->code() == std::error_code(EDQUOT, std::generic_category()));
    }
};

// Writes what the spool holds to every copy (blocking pool); a failure is
// kept in `failed`, and nothing more is written.
asio::awaitable<void> write_spool(asio::thread_pool& pool, local_copies& copies, std::string& spool,
                                  copy_failure& failed)
{
    if (spool.empty() || copies.empty() || !failed.error.empty()) co_return;
    try {
        auto job = [&copies, &spool] { copies.write(spool); };
        co_await io::run_blocking(pool, job);
    } catch (std::exception const& e) {
        failed.note(e);
    }
    spool.clear();
}

// The octets of one message counted against limits.max_data_in_flight, given
// back when the message is done, however it ends.
class in_flight {
public:
    in_flight(std::atomic<std::uint64_t>& total, std::uint64_t cap) : total_(total), cap_(cap) {}
    ~in_flight() { total_.fetch_sub(held_, std::memory_order_relaxed); }
    in_flight(in_flight const&) = delete;
    in_flight& operator=(in_flight const&) = delete;
    // false: past the cap (nothing taken).
    bool take(std::uint64_t n)
    {
        auto const before = total_.fetch_add(n, std::memory_order_relaxed);
        if (before + n > cap_) {
            total_.fetch_sub(n, std::memory_order_relaxed);
            return false;
        }
        held_ += n;
        return true;
    }
    bool exhausted() const noexcept { return total_.load(std::memory_order_relaxed) >= cap_; }

private:
    std::atomic<std::uint64_t>& total_;
    std::uint64_t cap_;
    std::uint64_t held_ = 0;
};

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
    bool const tls = c_.stream.tls_active();
    std::size_t const nrcpt = st_.rcpts.size();
    std::uint64_t received = 0;  // the message's size for the log line, once read
    auto const done = [&](int code, std::string_view enh, std::string const& text, std::string_view result) {
        spdlog::info("sid={} smtp message id={} ip={} from={} rcpts={} local={} relay={} size={} result={} reply={}",
                     c_.sid, qid, c_.ip, log::field("<" + st_.mail_from + ">"), nrcpt, locals.size(), relay_rcpts.size(),
                     received, result, code);
        ch_.queue(proto::reply(code, enh, text));
        st_.reset_transaction();
        // Errors count "without delivering mail" (Postfix's words): a client
        // that sends its Outbox, a few refused recipients in each message,
        // keeps its session.
        if (code / 100 == 2) st_.bad = 0;
    };

    in_flight budget(svc_.data_in_flight, s.max_data_in_flight);
    if (budget.exhausted()) {
        spdlog::warn("sid={} smtp data refused id={} ip={} reason=max-data-in-flight limit={}", c_.sid, qid, c_.ip,
                     s.max_data_in_flight);
        done(451, "4.3.1", "Error: insufficient system storage, try again later", "in-flight-limit");
        co_return true;
    }

    // The upstream transaction is this message's from here on: however the
    // message ends, it is finished, aborted or closed with `up`.
    std::unique_ptr<relay::smtp_client> up;
    if (use_upstream) {
        if (up_txn_ == st_.transaction) up = std::move(up_);
        if (!co_await ch_.flush()) co_return false;
        // The client waits for us meanwhile; the upstream's own timeout bounds this.
        clock.arm(s.smtp_idle_timeout + 2 * s.upstream_timeout);
        // Each relayed RCPT taken opened the transaction, so `up` is there.
        auto v = relay::upstream_unavailable("no upstream transaction");
        if (up) {
            v = co_await up->data();
        }
        if (v.what != relay::upstream_verdict::kind::ok) {
            spdlog::warn("sid={} smtp upstream refused id={} ip={} stage=data {}", c_.sid, qid, c_.ip,
                         upstream_fields(v, "refused"));
            ch_.queue(proto::reply(v.code, v.enhanced, v.text));
            st_.reset_transaction();
            co_return true;
        }
        spdlog::debug("sid={} smtp upstream open id={} detail={}", c_.sid, qid, log::field(v.log, 200));
    }

    std::string const header = mail::received_header(
        {st_.helo, c_.ip, host(), mail::received_protocol(st_.esmtp, tls, st_.authenticated), qid,
         std::time(nullptr)});

    // The copies kept here, opened before the 354 so that a Maildir that
    // cannot be written is known before the client sends the message.
    std::vector<local_copies::destination> dests;
    if (!relay_rcpts.empty() && !use_upstream) {
        // The drop folder stands in for the upstream: keep the envelope visible.
        // Folded before 78 octets where it can be (RFC 5322 §2.1.1: a line
        // is at most 998), so that a hundred recipients fit.
        std::string env = "X-Envelope-From: <" + st_.mail_from + ">\r\nX-Envelope-To: ";
        std::size_t line = env.size() - env.rfind('\n') - 1;
        for (std::size_t i = 0; i < relay_rcpts.size(); ++i) {
            std::string const path = "<" + relay_rcpts[i] + ">";
            if (i > 0) {
                bool const fold = line + 2 + path.size() > 78;
                env += fold ? ",\r\n " : ", ";
                line = fold ? 1 : line + 2;
            }
            env += path;
            line += path.size();
        }
        dests.push_back({s.relay_drop, env + "\r\n" + header});
    }
    std::vector<std::string> users;
    for (auto const* r : locals) {
        if (std::find(users.begin(), users.end(), r->user) != users.end()) continue;  // one copy per mailbox
        users.push_back(r->user);
        dests.push_back({r->maildir, header});
    }
    local_copies copies;  // destroyed before return: an unfinished tmp/ file is removed
    copy_failure copy_error;
    // The upstream is the caller's to abort: after its 250 there is nothing left to abort.
    auto const copy_failed = [&](copy_failure const& f, std::string_view note) {
        spdlog::error("sid={} smtp delivery failed id={} error={}{}", c_.sid, qid, log::field(f.error), note);
        copies.abort();
        if (f.out_of_storage)
            done(452, "4.3.1", "Error: insufficient system storage, try again later", "no-storage");
        else
            done(451, "4.3.0", "Error: local delivery failed, try again later", "delivery-failed");
    };
    if (!dests.empty()) {
        try {
            clock.arm(s.smtp_idle_timeout + s.data_timeout);
            auto job = [&copies, &dests, &s] { copies.open(dests, s.hostname); };
            co_await io::run_blocking(svc_.blocking, job);
        } catch (std::exception const& e) {
            copy_error.note(e);
        }
    }
    if (!copy_error.error.empty()) {  // no tmp/ file or Maildir could be made: before the 354
        if (up) up->abort();
        copy_failed(copy_error, "");
        co_return true;
    }

    ch_.queue("354 End data with <CR><LF>.<CR><LF>\r\n");
    if (!co_await ch_.flush()) {
        if (up) up->abort();
        copies.abort();
        co_return false;
    }

    bool upstream_ok = up != nullptr;
    // RFC 6152 §3: 8-bit data declared BODY=8BITMIME may not be relayed to
    // an upstream that does not offer 8BITMIME, and popgate converts nothing.
    // The message is cut off upstream at its first 8-bit octet (no final
    // dot: the upstream discards it) and refused whole. Data that turns out
    // 7-bit goes as it is; undeclared 8-bit data is passed on, as Postfix does.
    bool const seven_bit_only = up && st_.eight_bit && !up->takes_8bit();
    bool eight_bit_cut = false;
    bool at_line_start = true;
    bool over_budget = false;
    std::string stuffed;
    if (up) {
        stuff(header, at_line_start, stuffed);
        upstream_ok = co_await up->send(stuffed);
    }
    std::string spool;  // for the copies, written at spool_chunk
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
        if (!chunk_out.empty() && !over_budget) {
            if (!budget.take(chunk_out.size())) {
                // Read on to the terminator (the session stays in step), keep nothing.
                over_budget = true;
                spdlog::warn("sid={} smtp data refused id={} ip={} reason=max-data-in-flight limit={}", c_.sid, qid,
                             c_.ip, s.max_data_in_flight);
            }
        }
        if (!chunk_out.empty() && !over_budget) {
            if (!copies.empty()) {
                spool += chunk_out;
                if (spool.size() >= spool_chunk) co_await write_spool(svc_.blocking, copies, spool, copy_error);
            }
            if (seven_bit_only && upstream_ok &&
                std::any_of(chunk_out.begin(), chunk_out.end(), [](char ch) { return (ch & 0x80) != 0; })) {
                up->abort();
                upstream_ok = false;
                eight_bit_cut = true;
            }
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
            copies.abort();
            c_.end_reason = clock.shutdown ? "shutdown-in-data" : clock.expired ? "timeout-in-data" : "eof-in-data";
            spdlog::warn("sid={} smtp data aborted id={} ip={} reason={} received={}", c_.sid, qid, c_.ip,
                         c_.end_reason, dr.size());
            co_return false;
        }
        input.assign(buf, n);
    }
    received = dr.size();

    auto const fail = [&](int code, std::string_view enh, std::string const& text, std::string_view result) {
        if (up) up->abort();
        copies.abort();
        done(code, enh, text, result);
    };
    if (auto const e = dr.error()) {
        switch (*e) {
        case proto::errc::too_long: fail(552, "5.3.4", "Message size exceeds fixed limit", "too-big"); break;
        case proto::errc::line_too_long:
            fail(550, "5.5.2", "Error: message line longer than 998 octets", "line-too-long");
            break;
        default: fail(550, "5.5.2", "Error: bare <CR> or <LF> in message data", "bare-cr-lf"); break;
        }
        co_return true;
    }
    if (over_budget) {
        fail(451, "4.3.1", "Error: insufficient system storage, try again later", "in-flight-limit");
        co_return true;
    }
    co_await write_spool(svc_.blocking, copies, spool, copy_error);
    if (!copy_error.error.empty()) {
        if (up) up->abort();
        copy_failed(copy_error, "");
        co_return true;
    }
    if (eight_bit_cut) {
        spdlog::warn("sid={} smtp data refused id={} ip={} reason=8bit-to-7bit-upstream upstream={}:{}", c_.sid, qid,
                     c_.ip, s.upstream_host, s.upstream_port);
        fail(554, "5.6.3", "Error: 8-bit message data, and the upstream mail server does not accept 8BITMIME",
             "8bit-not-accepted");
        co_return true;
    }
    if (up && !upstream_ok) {
        fail(451, "4.4.1", "Error: upstream mail server unavailable, try again later", "upstream-lost");
        co_return true;
    }

    // Relay part first: its verdict decides whether local copies are kept.
    std::string upstream_note;
    if (up) {
        // The dot and its reply (upstream_data_done_timeout each), then QUIT.
        clock.arm(s.smtp_idle_timeout + 2 * s.upstream_data_done_timeout + s.upstream_timeout);
        struct awaiting {
            io::session_clock& c;
            explicit awaiting(io::session_clock& sc) : c(sc) { c.awaiting_verdict = true; }
            ~awaiting() { c.awaiting_verdict = false; }
            awaiting(awaiting const&) = delete;
            awaiting& operator=(awaiting const&) = delete;
        };
        std::optional<awaiting> spared(std::in_place, clock);  // by the drain's cut, until the verdict is in
        auto v = co_await up->finish();
        spared.reset();
        if (v.what != relay::upstream_verdict::kind::ok) {
            spdlog::warn("sid={} smtp upstream refused id={} ip={} stage=end-of-data {}", c_.sid, qid, c_.ip,
                         upstream_fields(v, "refused"));
            copies.abort();
            done(v.code, v.enhanced, v.text,
                 v.what == relay::upstream_verdict::kind::permanent ? "upstream-rejected" : "upstream-tempfail");
            co_return true;
        }
        if (!v.text.empty()) upstream_note = " (" + v.text + ")";  // a bare "250" has none
        spdlog::info("sid={} smtp relayed id={} ip={} upstream={} {}", c_.sid, qid, c_.ip,
                     log::field(s.upstream_host + ":" + std::to_string(s.upstream_port)), upstream_fields(v, "ok"));
    }

    if (!copies.empty()) {
        try {
            clock.arm(s.smtp_idle_timeout + s.data_timeout);
            auto job = [&copies] { copies.commit(); };
            co_await io::run_blocking(svc_.blocking, job);
        } catch (std::exception const& e) {
            copy_failure f;
            f.note(e);
            copy_failed(f, up ? " note=relayed copy already accepted upstream" : "");
            co_return true;
        }
    }
    ++st_.messages;
    done(250, "2.0.0", "Ok: queued as " + qid + upstream_note, "ok");
    co_return true;
}

}  // namespace popgate::session
