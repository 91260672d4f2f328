#include "popgate/auth/authenticator.hpp"

#include "popgate/auth/password.hpp"
#include "popgate/proto/ascii.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace popgate::auth {
namespace {

// Unknown users cost one crypt(3) too, so timing does not tell which names
// exist. A SHA512-crypt of a random string generated once per process.
// Before any real hash was checked: one of the scheme `popgate user add` writes.
std::string const& default_dummy_hash()
{
    static std::string const h = hash_password("popgate-no-such-user", hash_scheme::yescrypt);
    return h;
}

std::string const& process_key()
{
    static std::string const k = [] {
        std::string key(32, '\0');
        RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size()));
        return key;
    }();
    return k;
}

std::string tag_of(std::string_view password)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    auto const& key = process_key();
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<unsigned char const*>(password.data()), password.size(), md, &len);
    return std::string(reinterpret_cast<char*>(md), len);
}

// APOP and CRAM-MD5 share one rule: HMAC or digest over a challenge with the
// user's shared secret, compared in constant time.
template <class Digest>
result check_shared_secret(store::store& db, std::string_view user, bool apop, Digest digest_of,
                           std::string_view digest_hex)
{
    std::optional<store::user_record> u;
    try {
        u = db.find_user(user);
    } catch (store::store_error const& e) {
        return {outcome::unavailable, {}, e.what()};
    }
    if (!u) return {outcome::failed, {}, "no such user"};
    if (!apop && u->apop_only) return {outcome::apop_required, {}, "apop-only user", true};
    if (!u->shared_secret) return {outcome::no_secret, {}, "no shared secret", true};
    if (!equal_ct(digest_of(*u->shared_secret), proto::ascii_lowered(digest_hex)))
        return {outcome::failed, {}, "wrong digest", true};
    if (u->disabled) return {outcome::failed, {}, "disabled", true};
    return {outcome::ok, u->name, {}, true, {u->password_hash, u->shared_secret}};
}

}  // namespace

bool authenticator::cached(std::string const& user, std::string const& hash, std::string_view password)
{
    if (cache_ttl_.load(std::memory_order_relaxed).count() == 0) return false;
    std::lock_guard lock(mutex_);
    auto it = cache_.find(user);
    if (it == cache_.end()) return false;
    if (it->second.until < std::chrono::steady_clock::now() || it->second.hash != hash) {
        cache_.erase(it);
        return false;
    }
    return equal_ct(it->second.tag, tag_of(password));
}

void authenticator::remember(std::string const& user, std::string const& hash, std::string_view password)
{
    auto const ttl = cache_ttl_.load(std::memory_order_relaxed);
    if (ttl.count() == 0) return;
    std::lock_guard lock(mutex_);
    if (cache_.size() > 100000) cache_.clear();  // bounded: a flood of names cannot grow it forever
    cache_[user] = {hash, tag_of(password), std::chrono::steady_clock::now() + ttl};
}

std::string authenticator::timing_reference() const
{
    std::lock_guard lock(mutex_);
    return reference_hash_.empty() ? default_dummy_hash() : reference_hash_;
}

void authenticator::set_timing_reference(std::string const& hash)
{
    // Every password check passes here: the usual case, the same hash as
    // last time, costs a comparison.
    std::lock_guard lock(mutex_);
    if (reference_hash_ == hash || !is_crypt_hash(hash)) return;
    reference_hash_ = hash;
}

result authenticator::check_password(std::string_view user, std::string_view password)
{
    std::optional<store::user_record> u;
    try {
        u = db_.find_user(user);
    } catch (store::store_error const& e) {
        return {outcome::unavailable, {}, e.what()};
    }
    // Before the password check: an apop-only user (who usually has no
    // password at all) is refused, as check_cram_md5 does; the sessions
    // answer it as a wrong password and log the reason.
    if (u && u->apop_only) {
        // As costly as a password check: the reply's timing must not set
        // apop-only names apart (with no failure delay, it would).
        (void)verify_password(password, timing_reference());
        return {outcome::apop_required, {}, "apop-only user", true};
    }
    if (!u || !u->password_hash) {
        // No enumeration by timing: as costly as checking a real user's
        // password, whatever scheme and cost the site's hashes use.
        (void)verify_password(password, timing_reference());
        return {outcome::failed, {}, u ? "no password set" : "no such user", u.has_value()};
    }
    set_timing_reference(*u->password_hash);
    bool const ok = cached(u->name, *u->password_hash, password) || verify_password(password, *u->password_hash);
    if (!ok) return {outcome::failed, {}, "wrong password", true};
    // A disabled user learns nothing the wrong-password answer would not say.
    if (u->disabled) return {outcome::failed, {}, "disabled", true};
    remember(u->name, *u->password_hash, password);
    return {outcome::ok, u->name, {}, true, {u->password_hash, u->shared_secret}};
}

result authenticator::check_apop(std::string_view user, std::string_view timestamp, std::string_view digest_hex)
{
    return check_shared_secret(db_, user, true, [&](std::string const& secret) { return apop_digest(timestamp, secret); },
                               digest_hex);
}

result authenticator::check_cram_md5(std::string_view user, std::string_view challenge, std::string_view digest_hex)
{
    return check_shared_secret(db_, user, false,
                               [&](std::string const& secret) { return cram_md5_digest(challenge, secret); }, digest_hex);
}

}  // namespace popgate::auth
