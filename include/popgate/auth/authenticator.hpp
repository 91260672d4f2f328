#pragma once
// Credential checks shared by POP3 (USER/PASS, APOP, AUTH) and SMTP AUTH.
// check_password runs crypt(3), slow on purpose: call it through
// io::run_blocking. check_apop and check_cram_md5 are an indexed read and one
// MD5, cheaper than the hop to the pool: sessions call them in place. Policy that depends on the connection
// (plaintext over TLS only, APOP on/off) is the session's; per-user policy
// (disabled, apop-only, shared secret present) is decided here.
#include "popgate/auth/failure_tracker.hpp"
#include "popgate/store/store.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace popgate::auth {

enum class outcome {
    ok,
    failed,           // unknown user, wrong password or digest: one answer for all (no enumeration)
    apop_required,    // apop-only user tried another mechanism
    no_secret,        // APOP / CRAM-MD5 for a user without a shared secret
    unavailable,      // the store failed: a temporary error
};

struct result {
    outcome what = outcome::failed;
    std::string user;    // canonical name when ok
    std::string reason;  // for the log: "wrong password", "disabled", "no such user", ...
    // The name is a user of this site (whatever else failed): the brute-force
    // defence counts only unknown names toward a spray. Never in a reply.
    bool known_user = false;
    // When ok: the user's password hash and shared secret as checked (the
    // grant is written only while they are still these).
    store::credentials checked{};
};

inline name_kind name_kind_of(result const& r) noexcept
{
    return r.known_user ? name_kind::known : name_kind::unknown;
}

class authenticator {
public:
    explicit authenticator(store::store& db) : db_(db) {}

    // SIGHUP: read by other threads at the same time, hence atomic.
    void set_cache_ttl(std::chrono::seconds ttl) noexcept { cache_ttl_.store(ttl, std::memory_order_relaxed); }

    // Whether its reads of the store may run on an I/O thread: false when
    // they cross the network (PostgreSQL), and callers go through the pool.
    bool in_place() const noexcept { return !db_.crosses_network(); }

    result check_password(std::string_view user, std::string_view password);
    result check_apop(std::string_view user, std::string_view timestamp, std::string_view digest_hex);
    result check_cram_md5(std::string_view user, std::string_view challenge, std::string_view digest_hex);

private:
    bool cached(std::string const& user, std::string const& hash, std::string_view password);
    // A user without a password hash (unknown, or none set) is checked
    // against the last real hash seen (its salt, scheme and cost): the
    // answer is thrown away, the time it takes is what matters.
    std::string timing_reference() const;
    void set_timing_reference(std::string const& hash);
    void remember(std::string const& user, std::string const& hash, std::string_view password);

    struct cache_entry {
        std::string hash;    // the crypt(3) hash it was verified against: a changed password misses
        std::string tag;     // HMAC-SHA256(process key, password)
        std::chrono::steady_clock::time_point until;
    };
    store::store& db_;
    std::atomic<std::chrono::seconds> cache_ttl_{std::chrono::seconds{0}};
    mutable std::mutex mutex_;
    std::string reference_hash_;
    std::unordered_map<std::string, cache_entry> cache_;
};

}  // namespace popgate::auth
