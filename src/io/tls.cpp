#include "popgate/io/tls.hpp"

#include "popgate/io/ticket_keys.hpp"

#include <boost/asio/ip/address.hpp>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

namespace popgate::io {
namespace {

std::string openssl_error()
{
    unsigned long const e = ERR_get_error();
    if (!e) return "unknown OpenSSL error";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

template <class T, void (*Free)(T*)>
struct ossl_deleter {
    void operator()(T* p) const noexcept { Free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, ossl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, ossl_deleter<X509, X509_free>>;
using bio_ptr = std::unique_ptr<BIO, ossl_deleter<BIO, BIO_free_all>>;

// PEM files are small; anything this big is not one.
constexpr std::size_t max_pem_size = 1 << 20;

std::string read_pem_file(std::filesystem::path const& p, char const* key, file_opener const& open = {},
                          std::size_t cap = max_pem_size)
{
    auto const fail = [&](std::string const& why) -> std::runtime_error {
        return std::runtime_error(std::string(key) + " " + p.string() + ": " + why);
    };
    std::string why;
    int fd = -1;
    if (open) {
        fd = open(p, why);
    } else {
        // A FIFO there must not hold the caller: a regular file only.
        fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        struct stat st {};
        why = fd < 0 ? std::strerror(errno) : ::fstat(fd, &st) != 0 ? std::strerror(errno) : "";
        if (fd >= 0 && why.empty() && !S_ISREG(st.st_mode)) why = "not a regular file";
        if (fd >= 0 && !why.empty()) {
            ::close(fd);
            fd = -1;
        }
    }
    if (fd < 0) throw fail(why);
    std::string out;
    char buf[16384];
    for (;;) {
        auto const n = ::read(fd, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            int const err = errno;
            ::close(fd);
            throw fail(std::strerror(err));
        }
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > cap) {
            ::close(fd);
            throw fail("larger than " + std::to_string(cap >> 20) + " MB, not a PEM file this needs");
        }
    }
    ::close(fd);
    return out;
}

bio_ptr memory_bio(std::string const& pem)
{
    bio_ptr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!b) throw std::runtime_error("out of memory: " + openssl_error());
    return b;
}

// An encrypted key would make OpenSSL ask for a passphrase on the terminal;
// a daemon has none to give: fail instead.
int no_passphrase(char*, int, int, void*) { return 0; }

// Every certificate and CRL in `pem` becomes trusted by `c`, as
// SSL_CTX_load_verify_locations(file) would make them; throws naming `file`
// when there is none or one is malformed. A file with CRLs has them
// checked for every certificate of the chain (the root's own CRL too): one
// is refused when its issuer's CRL revokes it, when that CRL has expired,
// or when the file holds no CRL of its issuer (an administrator who gives
// CRLs expects revocation to count, an intermediate CA's included, and a
// check that passes without one would not be a check).
void load_ca_pem(SSL_CTX* c, std::string const& pem, std::filesystem::path const& file)
{
    auto const fail = [&] {
        return std::runtime_error("relay.upstream_ca_file: cannot load " + file.string() + ": " + openssl_error());
    };
    auto const bio = memory_bio(pem);
    STACK_OF(X509_INFO)* infos = PEM_X509_INFO_read_bio(bio.get(), nullptr, no_passphrase, nullptr);
    if (!infos) throw fail();
    std::unique_ptr<STACK_OF(X509_INFO), void (*)(STACK_OF(X509_INFO)*)> const hold(
        infos, [](STACK_OF(X509_INFO)* p) { sk_X509_INFO_pop_free(p, X509_INFO_free); });
    X509_STORE* store = SSL_CTX_get_cert_store(c);
    int loaded = 0;
    bool crls = false;
    for (int i = 0; i < sk_X509_INFO_num(infos); ++i) {
        X509_INFO const* info = sk_X509_INFO_value(infos, i);
        if (info->x509) {
            if (X509_STORE_add_cert(store, info->x509) != 1) throw fail();
            ++loaded;
        }
        if (info->crl) {
            if (X509_STORE_add_crl(store, info->crl) != 1) throw fail();
            ++loaded;
            crls = true;
        }
    }
    if (loaded == 0) {
        ERR_clear_error();
        throw std::runtime_error("relay.upstream_ca_file: cannot load " + file.string() +
                                 ": no certificate or CRL in it");
    }
    if (crls) X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
}

}  // namespace

std::vector<std::string> expired_crls(config::settings const& s)
{
    std::vector<std::string> out;
    if (s.upstream_starttls != config::upstream_tls::verify || s.upstream_ca_file.empty()) return out;
    std::string pem;
    try {
        pem = read_pem_file(s.upstream_ca_file, "relay.upstream_ca_file: cannot load", {}, 256u << 20);
    } catch (std::exception const&) {
        return out;
    }
    auto const bio = memory_bio(pem);
    STACK_OF(X509_INFO)* infos = PEM_X509_INFO_read_bio(bio.get(), nullptr, no_passphrase, nullptr);
    ERR_clear_error();
    if (!infos) return out;
    std::unique_ptr<STACK_OF(X509_INFO), void (*)(STACK_OF(X509_INFO)*)> const hold(
        infos, [](STACK_OF(X509_INFO)* p) { sk_X509_INFO_pop_free(p, X509_INFO_free); });
    // An issuer with a CRL still in date is verified by that one (OpenSSL
    // prefers it): its older, expired ones are no problem.
    auto const in_date = [](X509_CRL* crl) {
        ASN1_TIME const* next = X509_CRL_get0_nextUpdate(crl);
        return !next || X509_cmp_current_time(next) > 0;  // -1: passed; 0: unreadable, not called expired
    };
    auto const issuer_of = [](X509_CRL* crl) {
        char name[256] = {};
        X509_NAME_oneline(X509_CRL_get_issuer(crl), name, sizeof name);
        return std::string(name);
    };
    std::vector<std::string> fresh;
    for (int i = 0; i < sk_X509_INFO_num(infos); ++i)
        if (X509_CRL* crl = sk_X509_INFO_value(infos, i)->crl; crl && in_date(crl)) fresh.push_back(issuer_of(crl));
    for (int i = 0; i < sk_X509_INFO_num(infos); ++i) {
        X509_CRL* crl = sk_X509_INFO_value(infos, i)->crl;
        if (!crl || in_date(crl) || X509_cmp_current_time(X509_CRL_get0_nextUpdate(crl)) == 0) continue;
        auto const issuer = issuer_of(crl);
        if (std::find(fresh.begin(), fresh.end(), issuer) != fresh.end()) continue;
        ASN1_TIME const* next = X509_CRL_get0_nextUpdate(crl);
        std::tm tm{};
        char when[32] = "?";
        if (ASN1_TIME_to_tm(next, &tm) == 1) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        out.push_back("relay.upstream_ca_file: the CRL of " + issuer + " expired " + when +
                      ": every upstream certificate it covers is refused until a fresh one is in the file");
    }
    return out;
}

std::optional<std::int64_t> not_after(std::string const& chain_pem)
{
    if (chain_pem.empty()) return std::nullopt;
    auto const bio = memory_bio(chain_pem);
    std::unique_ptr<X509, void (*)(X509*)> const x(PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr),
                                                   X509_free);
    ERR_clear_error();
    std::tm tm{};
    if (!x || ASN1_TIME_to_tm(X509_get0_notAfter(x.get()), &tm) != 1) return std::nullopt;
    return static_cast<std::int64_t>(::timegm(&tm));
}

namespace {

void write_pem(std::filesystem::path const& p, auto&& writer)
{
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    mode_t const old = ::umask(077);
    FILE* f = std::fopen(p.c_str(), "wx");
    ::umask(old);
    if (!f) throw std::runtime_error("cannot create " + p.string());
    bool const ok = writer(f);
    bool const closed = std::fclose(f) == 0;
    if (!ok || !closed) throw std::runtime_error("cannot write " + p.string() + ": " + openssl_error());
}

// OpenSSL's ticket callback (SSL_CTX_set_tlsext_ticket_key_evp_cb), for TLS
// 1.2 tickets and TLS 1.3 stateless tickets alike: encrypt with the current
// key; decrypt with the current one (1) or the previous one (2: the client
// gets a fresh ticket under the current key); anything else (0) means a full
// handshake. Keys are copied out of the ring and wiped after use.
int ticket_key_callback(SSL*, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                        int enc)
{
    auto const now = static_cast<std::int64_t>(std::time(nullptr));
    ticket_key k;
    int result = 1;
    if (enc) {
        k = server_ticket_keys().encrypting(now);
        std::memcpy(key_name, k.name.data(), ticket_key::name_size);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1) return -1;
    } else {
        auto f = server_ticket_keys().decrypting(key_name, now);
        if (!f) return 0;
        k = f->key;
        OPENSSL_cleanse(&f->key, sizeof f->key);
        result = f->which == ticket_keys::age::current ? 1 : 2;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac.data(), k.hmac.size()),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end(),
    };
    bool const ok = EVP_MAC_CTX_set_params(mac, params) == 1 &&
                    (enc ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv)
                         : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv)) == 1;
    OPENSSL_cleanse(&k, sizeof k);
    return ok ? result : -1;
}

// One certificate chain and its key into the context's slot for the key's
// type (RSA, ECDSA, ...): OpenSSL keeps one per type and picks per handshake.
void use_certificate(SSL_CTX* c, std::string const& chain_pem, std::string const& key_pem,
                     std::filesystem::path const& cert_file, char const* cert_key,
                     std::filesystem::path const& key_file, char const* key_key)
{
    auto const cert_error = [&](std::string const& why) {
        return std::runtime_error(std::string(cert_key) + " " + cert_file.string() + ": " + why);
    };
    // The chain as SSL_CTX_use_certificate_chain_file reads it: the leaf, then
    // the intermediates.
    ERR_clear_error();
    auto const cert_bio = memory_bio(chain_pem);
    x509_ptr leaf(PEM_read_bio_X509_AUX(cert_bio.get(), nullptr, no_passphrase, nullptr));
    if (!leaf || SSL_CTX_use_certificate(c, leaf.get()) != 1) throw cert_error(openssl_error());
    // Chain certificates attach to the slot just selected; a fresh slot starts empty.
    SSL_CTX_clear_chain_certs(c);
    for (;;) {
        x509_ptr ca(PEM_read_bio_X509(cert_bio.get(), nullptr, no_passphrase, nullptr));
        if (!ca) break;
        if (SSL_CTX_add0_chain_cert(c, ca.get()) != 1) throw cert_error(openssl_error());
        ca.release();  // add0: the context owns it now
    }
    // The loop ends at the end of the text ("no start line"); anything else is a broken PEM block.
    if (auto const e = ERR_peek_last_error(); ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
        ERR_clear_error();
    else if (e)
        throw cert_error(openssl_error());

    auto const key_bio = memory_bio(key_pem);
    pkey_ptr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_passphrase, nullptr));
    if (!key || SSL_CTX_use_PrivateKey(c, key.get()) != 1)
        throw std::runtime_error(std::string(key_key) + " " + key_file.string() + ": " + openssl_error());
    if (SSL_CTX_check_private_key(c) != 1)
        throw std::runtime_error(std::string(key_key) + " " + key_file.string() + " does not match " + cert_key +
                                 " " + cert_file.string());
}

int key_type(SSL_CTX* c)
{
    EVP_PKEY* k = SSL_CTX_get0_privatekey(c);
    return k ? EVP_PKEY_get_base_id(k) : EVP_PKEY_NONE;
}

}  // namespace

namespace {

struct key_and_certificate {
    pkey_ptr key;
    x509_ptr cert;
};

key_and_certificate make_self_signed(std::string const& hostname)
{
    // P-256: quick to make and accepted by every client we test with.
    pkey_ptr key(EVP_EC_gen("P-256"));
    if (!key) throw std::runtime_error("cannot make a key: " + openssl_error());
    x509_ptr cert(X509_new());
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), static_cast<long>(std::time(nullptr)));
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3650L * 86400);
    X509_set_pubkey(cert.get(), key.get());
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<unsigned char const*>("popgate self-signed"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<unsigned char const*>(hostname.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert.get(), name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
    std::string const san = "DNS:" + hostname + ",IP:127.0.0.1,IP:::1";
    if (X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san.c_str())) {
        X509_add_ext(cert.get(), ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (!X509_sign(cert.get(), key.get(), EVP_sha256())) throw std::runtime_error("cannot sign: " + openssl_error());
    return {std::move(key), std::move(cert)};
}

std::string pem_text(auto&& writer)
{
    bio_ptr b(BIO_new(BIO_s_mem()));
    if (!b || !writer(b.get())) throw std::runtime_error("cannot write PEM: " + openssl_error());
    char* data = nullptr;
    long const n = BIO_get_mem_data(b.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

// Where expect_alpn() keeps a session's ids.
int alpn_index()
{
    static int const index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

int select_alpn(SSL* ssl, unsigned char const** out, unsigned char* outlen, unsigned char const* offered,
                unsigned int offered_len, void*)
{
    auto const* wire = static_cast<std::string_view const*>(SSL_get_ex_data(ssl, alpn_index()));
    if (!wire || wire->empty()) return SSL_TLSEXT_ERR_NOACK;
    unsigned char* chosen = nullptr;
    // Ours first: the server's order decides (RFC 7301 §3.2).
    if (SSL_select_next_proto(&chosen, outlen, reinterpret_cast<unsigned char const*>(wire->data()),
                              static_cast<unsigned int>(wire->size()), offered,
                              offered_len) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

}  // namespace

void expect_alpn(SSL* ssl, std::string_view const* wire)
{
    SSL_set_ex_data(ssl, alpn_index(), const_cast<std::string_view*>(wire));
}

bool ensure_self_signed(config::tls_settings const& t, std::string const& hostname)
{
    namespace fs = std::filesystem;
    // Without the exception's bare "filesystem error: status: ...": the key
    // and the file name what could not be looked at.
    auto const exists = [](fs::path const& f, char const* key) {
        std::error_code ec;
        bool const there = fs::exists(f, ec);
        if (ec) throw std::runtime_error(std::string(key) + " " + f.string() + ": " + ec.message());
        return there;
    };
    bool const have_cert = exists(t.cert_file, "tls.cert_file"), have_key = exists(t.key_file, "tls.key_file");
    if (have_cert || have_key || !t.self_signed) return false;
    auto const made = make_self_signed(hostname);
    write_pem(t.key_file, [&](FILE* f) { return PEM_write_PrivateKey(f, made.key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1; });
    write_pem(t.cert_file, [&](FILE* f) { return PEM_write_X509(f, made.cert.get()) == 1; });
    return true;
}

tls_material self_signed_material(config::tls_settings const& t, std::string const& hostname, file_opener const& open)
{
    auto const made = make_self_signed(hostname);
    tls_material m;
    m.cert_chain_pem = pem_text([&](BIO* b) { return PEM_write_bio_X509(b, made.cert.get()) == 1; });
    m.key_pem = pem_text([&](BIO* b) {
        return PEM_write_bio_PrivateKey(b, made.key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
    });
    if (!t.second_cert_file.empty()) {
        m.second_cert_chain_pem = read_pem_file(t.second_cert_file, "tls.second_cert_file", open);
        m.second_key_pem = read_pem_file(t.second_key_file, "tls.second_key_file", open);
    }
    return m;
}

tls_material read_tls_material(config::tls_settings const& t, file_opener const& open)
{
    tls_material m{read_pem_file(t.cert_file, "tls.cert_file", open), read_pem_file(t.key_file, "tls.key_file", open),
                   {}, {}};
    if (!t.second_cert_file.empty()) {
        m.second_cert_chain_pem = read_pem_file(t.second_cert_file, "tls.second_cert_file", open);
        m.second_key_pem = read_pem_file(t.second_key_file, "tls.second_key_file", open);
    }
    return m;
}

std::shared_ptr<boost::asio::ssl::context> make_server_tls(config::tls_settings const& t, tls_material const& m)
{
    namespace ssl = boost::asio::ssl;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    SSL_CTX* c = ctx->native_handle();
    SSL_CTX_set_min_proto_version(c, t.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    // An idle session (a mail client between commands) holds no record
    // buffers: OpenSSL frees them when empty and takes them again for the
    // next record (see io/tls_socket.hpp). The upstream client keeps its own.
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    // "" is the AEAD-only default too: a file written when "" meant OpenSSL's
    // default (CBC and SHA-1 suites included) gets the safe list.
    std::string const ciphers = t.ciphers.empty() ? std::string(config::default_tls12_ciphers) : t.ciphers;
    if (SSL_CTX_set_cipher_list(c, ciphers.c_str()) != 1)
        throw std::runtime_error("tls.ciphers: no usable cipher in '" + ciphers + "'");
    if (!t.ciphersuites.empty() && SSL_CTX_set_ciphersuites(c, t.ciphersuites.c_str()) != 1)
        throw std::runtime_error("tls.ciphersuites: no usable suite in '" + t.ciphersuites + "'");

    SSL_CTX_set_alpn_select_cb(c, select_alpn, nullptr);

    use_certificate(c, m.cert_chain_pem, m.key_pem, t.cert_file, "tls.cert_file", t.key_file, "tls.key_file");
    if (!t.second_cert_file.empty()) {
        int const first = key_type(c);
        use_certificate(c, m.second_cert_chain_pem, m.second_key_pem, t.second_cert_file, "tls.second_cert_file",
                        t.second_key_file, "tls.second_key_file");
        // Same type: OpenSSL would replace the first certificate, not add one.
        if (key_type(c) == first)
            throw std::runtime_error("tls.second_cert_file " + t.second_cert_file.string() +
                                     ": the same key type as tls.cert_file; the second certificate is for the "
                                     "other type (RSA beside ECDSA)");
    }

    // Resumption by tickets only: the keys are in server_ticket_keys(), shared
    // by every context this process makes; no server-side session cache (it
    // would hold sessions in memory for clients that never come back). A
    // ticket decrypts for one to two rotation intervals; its lifetime hint
    // says the longer.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    static constexpr unsigned char sid_ctx[] = "popgate";
    SSL_CTX_set_session_id_context(c, sid_ctx, sizeof sid_ctx - 1);
    if (t.session_tickets) {
        server_ticket_keys().set_interval(t.ticket_key_rotation);
        SSL_CTX_set_timeout(c, static_cast<long>(2 * t.ticket_key_rotation.count()));
        SSL_CTX_set_tlsext_ticket_key_evp_cb(c, ticket_key_callback);
        // TLS 1.3: one ticket per handshake is enough for a mail client that
        // reconnects one connection at a time (OpenSSL's default sends two).
        SSL_CTX_set_num_tickets(c, 1);
    } else {
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(c, 0);
    }
    return ctx;
}

std::shared_ptr<boost::asio::ssl::context> make_client_tls(config::settings const& s)
{
    namespace ssl = boost::asio::ssl;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    SSL_CTX* c = ctx->native_handle();
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (s.upstream_starttls != config::upstream_tls::verify) {
        // The legacy MTA usually has a self-signed or internal certificate:
        // TLS to it protects against passive capture only.
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
        return ctx;
    }
    // The handshake fails unless the chain ends at one of these CAs; the
    // name is set per connection (set_upstream_name).
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
    ERR_clear_error();
    if (s.upstream_ca_file.empty()) {
        if (SSL_CTX_set_default_verify_paths(c) != 1)
            throw std::runtime_error("relay.upstream_starttls = verify: cannot load the system's CAs: " +
                                     openssl_error());
        return ctx;
    }
    // Read once through one descriptor (a regular file only: a FIFO swapped
    // in must not hold check-config or an I/O thread), then loaded from
    // memory, where OpenSSL would open the path again.
    // CAs and their CRLs: a large CA's CRL runs to megabytes.
    load_ca_pem(c, read_pem_file(s.upstream_ca_file, "relay.upstream_ca_file: cannot load", {}, 256u << 20),
                s.upstream_ca_file);
    return ctx;
}

bool set_upstream_name(SSL* ssl, config::settings const& s)
{
    std::string const& name = s.upstream_tls_name.empty() ? s.upstream_host : s.upstream_tls_name;
    boost::system::error_code not_address;
    boost::asio::ip::make_address(name, not_address);
    bool const is_address = !not_address;
    if (s.upstream_starttls == config::upstream_tls::verify) {
        // An address is matched against the certificate's IP entries, a name
        // against its DNS entries (a wildcard only as the whole leftmost label).
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (is_address ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1 : SSL_set1_host(ssl, name.c_str()) != 1)
            return false;
    }
    // SNI carries a host name, never an address (RFC 6066 §3).
    if (!is_address && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) return false;
    return true;
}

}  // namespace popgate::io
