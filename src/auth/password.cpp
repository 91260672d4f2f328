#include "popgate/auth/password.hpp"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <memory>
#include <stdexcept>

namespace popgate::auth {

std::optional<hash_scheme> parse_scheme(std::string_view name)
{
    if (name == "yescrypt") return hash_scheme::yescrypt;
    if (name == "sha512-crypt" || name == "sha512") return hash_scheme::sha512_crypt;
    if (name == "bcrypt") return hash_scheme::bcrypt;
    return std::nullopt;
}

std::string hash_password(std::string_view password, hash_scheme scheme)
{
    char const* prefix = scheme == hash_scheme::yescrypt       ? "$y$"
                         : scheme == hash_scheme::sha512_crypt ? "$6$"
                                                               : "$2b$";
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    // count 0: libcrypt's default cost for the scheme; rbytes NULL: it reads
    // the kernel's random source itself.
    if (password.find('\0') != std::string_view::npos)
        throw std::invalid_argument("a password cannot hold a NUL byte");
    // libcrypt refuses longer ones ("crypt failed" said nothing of why).
    if (password.size() >= CRYPT_MAX_PASSPHRASE_SIZE)
        throw std::invalid_argument("a password is at most " + std::to_string(CRYPT_MAX_PASSPHRASE_SIZE - 1) +
                                    " bytes (libcrypt's limit); this one has " + std::to_string(password.size()));
    // bcrypt reads the first 72 bytes and ignores the rest: every password
    // that starts the same would log in.
    if (scheme == hash_scheme::bcrypt && password.size() > 72)
        throw std::invalid_argument("bcrypt reads only the first 72 bytes of a password and this one has " +
                                    std::to_string(password.size()) +
                                    ": use yescrypt (the default) or sha512-crypt for it");
    if (!crypt_gensalt_rn(prefix, 0, nullptr, 0, salt, sizeof salt))
        throw std::runtime_error("crypt_gensalt failed for scheme " + std::string(prefix));
    auto data = std::make_unique<crypt_data>();
    std::string const pw(password);
    char const* h = crypt_rn(pw.c_str(), salt, data.get(), sizeof *data);
    if (!h || h[0] == '*') throw std::runtime_error("crypt failed");
    return h;
}

bool verify_password(std::string_view password, std::string_view hash)
{
    if (!is_crypt_hash(hash) || password.find('\0') != std::string_view::npos) return false;
    auto data = std::make_unique<crypt_data>();
    std::string const pw(password), setting(hash);
    char const* h = crypt_rn(pw.c_str(), setting.c_str(), data.get(), sizeof *data);
    if (!h || h[0] == '*') return false;
    return equal_ct(h, hash);
}

bool is_crypt_hash(std::string_view hash)
{
    if (hash.size() < 13 || hash.front() != '$') return false;
    std::string const h(hash);
    // crypt_checksalt tells whether the prefix names a method this libcrypt can
    // compute; legacy DES ("ab...") is refused on purpose by the '$' test above.
    int const r = crypt_checksalt(h.c_str());
    return r == CRYPT_SALT_OK || r == CRYPT_SALT_METHOD_LEGACY;
}

std::string to_hex(unsigned char const* data, std::size_t n)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(n * 2, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 0xf];
    }
    return out;
}

std::string apop_digest(std::string_view timestamp, std::string_view secret)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx || !EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) ||
        !EVP_DigestUpdate(ctx.get(), timestamp.data(), timestamp.size()) ||
        !EVP_DigestUpdate(ctx.get(), secret.data(), secret.size()) || !EVP_DigestFinal_ex(ctx.get(), md, &len))
        throw std::runtime_error("MD5 unavailable");
    return to_hex(md, len);
}

std::string cram_md5_digest(std::string_view challenge, std::string_view secret)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(EVP_md5(), secret.data(), static_cast<int>(secret.size()),
              reinterpret_cast<unsigned char const*>(challenge.data()), challenge.size(), md, &len))
        throw std::runtime_error("HMAC-MD5 unavailable");
    return to_hex(md, len);
}

bool equal_ct(std::string_view a, std::string_view b) noexcept
{
    if (a.size() != b.size()) return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace popgate::auth
