#include "popgate/session/auth_flow.hpp"

#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/proto/ascii.hpp"
#include "popgate/proto/pop3.hpp"

#include <openssl/rand.h>
#include <unistd.h>

#include <ctime>
#include <stdexcept>

namespace popgate::session {

namespace {

// Failures are counted per client as admission counts sessions: an IPv6
// client by its relay.ipv6_prefix (its grant's key), so that a host with a
// /64 cannot take a fresh address for every guess.
net::ip_address counted_as(server::connection const& c)
{
    return net::limit_key(c.peer, c.settings->ipv6_prefix);
}

}  // namespace

std::string unique_challenge(std::string_view host)
{
    std::uint64_t r = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&r), sizeof r) != 1) throw std::runtime_error("RAND_bytes failed");
    return proto::make_apop_timestamp(static_cast<std::uint64_t>(::getpid()),
                                      static_cast<std::uint64_t>(std::time(nullptr)), r, host);
}

asio::awaitable<sasl_outcome> sasl_exchange(channel& ch, proto::sasl_server& sasl,
                                            std::optional<std::string_view> initial, std::string_view prompt,
                                            std::size_t max_line, bool& at_prompt)
{
    sasl_outcome out;
    out.step = sasl.start(initial);
    auto& reader = ch.reader();
    auto const normal_max = reader.max();
    reader.set_max(std::max(normal_max, max_line));
    std::string line;
    // The whole exchange, not each response, has limits.command_timeout.
    auto const limit = io::clock::now() + ch.conn().settings->command_timeout;
    while (out.step.what == proto::sasl_step::kind::challenge) {
        ch.queue(std::string(prompt) + proto::base64_encode(out.step.challenge) + "\r\n");
        if (!co_await ch.flush()) {
            out.status = io::read_status::error;
            break;
        }
        at_prompt = true;
        out.status = co_await ch.read_line(line, limit);
        at_prompt = false;
        if (out.status != io::read_status::ok) break;
        if (!line.empty() && line.back() == '\n') line.pop_back();
        out.step = sasl.next(line);
    }
    reader.set_max(normal_max);
    co_return out;
}

auth::failure_tracker::failure_verdict record_auth_failure(auth_guard& g, server::connection const& c,
                                                           std::string const& user, auth::name_kind kind,
                                                           std::string audit_detail)
{
    // A name no user can have is kept to the column's 255 octets: a client
    // must not write kilobytes per failure into the audit log.
    g.writes.post(store::audit_record{"auth-fail", c.ip, user.substr(0, 255), std::move(audit_detail)});
    // The delay grows with this name's recent failures; past the thresholds
    // the name at this address, or the whole address, is blocked.
    auto v = g.failures.record_failure(counted_as(c), user, kind, std::chrono::steady_clock::now());
    if (v.now_blocked != auth::block_scope::none)
        metrics::auth_blocks.with({v.now_blocked == auth::block_scope::user ? "user" : "address"}).inc();
    return v;
}

void count_login(std::string_view protocol, std::string_view mech, std::string_view result)
{
    if (mech.starts_with("sasl-")) mech.remove_prefix(5);
    char lower[16] = {};
    std::size_t n = 0;
    for (; n < mech.size() && n < sizeof lower; ++n)
        lower[n] = proto::ascii_lower(mech[n]);
    std::string_view const name = n == 0 ? std::string_view("none") : std::string_view(lower, n);
    metrics::logins.with({protocol, name, result}).inc();
}

asio::awaitable<void> pause_after_failure(channel& ch, std::chrono::milliseconds delay, io::clock::time_point started)
{
    auto const left = std::chrono::ceil<std::chrono::milliseconds>(started + delay - io::clock::now());
    if (left.count() <= 0) co_return;
    ch.conn().clock.arm(ch.idle() + left);
    co_await pause(left);
}

std::string_view blocked_what(auth::failure_tracker::block const& b) noexcept
{
    return b.scope == auth::block_scope::user ? "for this user from your address" : "from your address";
}

std::string block_fields(auth::block_scope scope, std::string const& user)
{
    if (scope != auth::block_scope::user) return "scope=address";
    // Names no user can have share one count (failure_tracker::counted_name):
    // the block is theirs, not this one name's, which may never have failed.
    if (&auth::failure_tracker::counted_name(user) != &user) return "scope=user user=- names=invalid";
    return "scope=user user=" + log::field(user, 64);
}

std::optional<auth::failure_tracker::block> auth_blocked(auth_guard& g, server::connection const& c,
                                                         std::string const& user)
{
    return g.failures.blocked(counted_as(c), user, std::chrono::steady_clock::now());
}

asio::awaitable<std::optional<auth::failure_tracker::block>> auth_admit(auth_guard& g, server::connection const& c,
                                                                        std::string const& user,
                                                                        auth::failure_tracker::attempt& reserve)
{
    constexpr auto step = std::chrono::milliseconds(20);
    constexpr int tries = 250;  // 5 s: checks under way take a crypt(3) each
    for (int i = 0;; ++i) {
        auto b = g.failures.blocked(counted_as(c), user, std::chrono::steady_clock::now(), &reserve);
        if (!b || !b->busy || i == tries) co_return b;
        co_await pause(step);
    }
}

}  // namespace popgate::session
