#pragma once
// Password hashes (crypt(3) via libxcrypt) and the MD5-based digests of APOP
// and CRAM-MD5. All comparisons are constant-time. Hashing is slow on purpose:
// the daemon calls these on its blocking pool, never on an I/O thread.
#include <optional>
#include <string>
#include <string_view>

namespace popgate::auth {

enum class hash_scheme { yescrypt, sha512_crypt, bcrypt };

std::optional<hash_scheme> parse_scheme(std::string_view name);  // "yescrypt", "sha512-crypt", "bcrypt"

// A new salted hash of `password`. Throws std::invalid_argument for a
// password holding a NUL byte (crypt(3) would hash only what comes before
// it, and no login could send it), std::runtime_error if libcrypt fails.
std::string hash_password(std::string_view password, hash_scheme scheme = hash_scheme::yescrypt);

// True iff `password` matches the crypt(3) `hash` (any scheme libcrypt knows).
bool verify_password(std::string_view password, std::string_view hash);

// True iff libcrypt recognises `hash` as a usable hash (not "*", "!", "x"...).
bool is_crypt_hash(std::string_view hash);

// RFC 1939 §7: lowercase hex MD5(timestamp + secret).
std::string apop_digest(std::string_view timestamp, std::string_view secret);
// RFC 2195: lowercase hex HMAC-MD5(secret, challenge).
std::string cram_md5_digest(std::string_view challenge, std::string_view secret);

// Constant-time equality for equal lengths; different lengths are unequal.
bool equal_ct(std::string_view a, std::string_view b) noexcept;

std::string to_hex(unsigned char const* data, std::size_t n);

}  // namespace popgate::auth
