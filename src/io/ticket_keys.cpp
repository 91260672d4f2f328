#include "popgate/io/ticket_keys.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace popgate::io {
namespace {

ticket_key make_key()
{
    ticket_key k;
    // RAND_priv_bytes: the generator OpenSSL keeps for private values.
    if (RAND_bytes(k.name.data(), static_cast<int>(k.name.size())) != 1 ||
        RAND_priv_bytes(k.aes.data(), static_cast<int>(k.aes.size())) != 1 ||
        RAND_priv_bytes(k.hmac.data(), static_cast<int>(k.hmac.size())) != 1)
        throw std::runtime_error("tls: no random bytes for a session ticket key");
    return k;
}

void wipe(std::optional<ticket_key>& k)
{
    if (!k) return;
    OPENSSL_cleanse(&*k, sizeof(ticket_key));
    k.reset();
}

}  // namespace

ticket_keys::ticket_keys(std::chrono::seconds interval) : interval_(std::max(interval, std::chrono::seconds{1})) {}

ticket_keys::~ticket_keys()
{
    wipe(current_);
    wipe(previous_);
}

void ticket_keys::set_interval(std::chrono::seconds interval)
{
    std::lock_guard lock(m_);
    interval = std::max(interval, std::chrono::seconds{1});
    if (interval == interval_) return;
    interval_ = interval;
    period_ = -1;  // re-anchored to the new interval at the next use; current_ stays current
}

std::chrono::seconds ticket_keys::interval() const
{
    std::lock_guard lock(m_);
    return interval_;
}

std::uint64_t ticket_keys::generation() const
{
    std::lock_guard lock(m_);
    return made_;
}

void ticket_keys::rotate_locked(std::int64_t now)
{
    std::int64_t const period = now / interval_.count();
    if (current_ && period_ == -1) {  // after set_interval: keep the keys, adopt the new period
        period_ = period;
        return;
    }
    if (current_ && period == period_) return;
    if (current_ && period == period_ + 1) {
        wipe(previous_);
        previous_ = current_;
    } else {
        // First use, or idle for two periods or more: nothing held may still decrypt.
        wipe(previous_);
    }
    wipe(current_);
    current_ = make_key();
    period_ = period;
    ++made_;
}

ticket_key ticket_keys::encrypting(std::int64_t now)
{
    std::lock_guard lock(m_);
    rotate_locked(now);
    return *current_;
}

std::optional<ticket_keys::found> ticket_keys::decrypting(unsigned char const* name, std::int64_t now)
{
    std::lock_guard lock(m_);
    rotate_locked(now);
    auto const same = [&](std::optional<ticket_key> const& k) {
        return k && CRYPTO_memcmp(k->name.data(), name, ticket_key::name_size) == 0;
    };
    if (same(current_)) return found{*current_, age::current};
    if (same(previous_)) return found{*previous_, age::previous};
    return std::nullopt;
}

ticket_keys& server_ticket_keys()
{
    static ticket_keys keys{std::chrono::seconds{3600}};
    return keys;
}

}  // namespace popgate::io
