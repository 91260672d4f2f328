#pragma once
// TLS server contexts (OpenSSL 3 through Asio): TLS 1.2+ only, AEAD-only TLS 1.2
// ciphers unless configured otherwise, certificate and key checked at load
// (optionally a second one of the other key type), session tickets under keys
// rotated in memory (ticket_keys.hpp), and a self-signed certificate made on
// first start for the embedded default.
#include "popgate/config/config.hpp"

#include <boost/asio/ssl/context.hpp>

#include <cstdint>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct ssl_st;

namespace popgate::io {

// The PEM text of tls.cert_file and tls.key_file. Read apart from building the
// context so that a daemon that switches users after start can keep what it
// read as root (the key need not be readable by the service user).
struct tls_material {
    std::string cert_chain_pem;  // leaf first
    std::string key_pem;
    // tls.second_cert_file and tls.second_key_file; empty when not configured.
    std::string second_cert_chain_pem;
    std::string second_key_pem;
};

// How a file is opened to be read: a descriptor, or -1 with `why` set. The
// daemon started as root passes one that does not follow what the service
// account could put in a file's way (daemon::open_to_read); empty: open(2)
// by path.
using file_opener = std::function<int(std::filesystem::path const& file, std::string& why)>;

// With relay.upstream_starttls = "verify": each CRL of relay.upstream_ca_file
// whose nextUpdate has passed, as "the CRL of <issuer> expired <when>"
// (every certificate it covers is then refused). Empty when none, or when
// the file cannot be read (make_client_tls says why).
std::vector<std::string> expired_crls(config::settings const& s);

// The notAfter of a PEM chain's first certificate, Unix seconds; nullopt
// when there is none or it cannot be read.
std::optional<std::int64_t> not_after(std::string const& chain_pem);

// Throws std::runtime_error naming the key and file when one cannot be read.
tls_material read_tls_material(config::tls_settings const& t, file_opener const& open = {});

// A server context from material read earlier (t's file names appear only in
// messages). Throws std::runtime_error with an administrator-readable message
// when the PEM is not a certificate or key, or the key does not match.
std::shared_ptr<boost::asio::ssl::context> make_server_tls(config::tls_settings const& t, tls_material const& m);

// ALPN (RFC 7301) against cross-protocol attacks (ALPACA): `wire` lists the
// ids the session on `ssl` answers (server::protocol::alpn()) and must
// outlive `ssl`. A client that offers ALPN without one of them gets a fatal
// no_application_protocol alert; one that offers none is served, as mail
// clients offer none. A session that states no ids takes any offer.
void expect_alpn(ssl_st* ssl, std::string_view const* wire);

// Writes a self-signed certificate and key (0600) for `hostname` if neither
// file exists. Returns true if it made them.
bool ensure_self_signed(config::tls_settings const& t, std::string const& hostname);

// What ensure_self_signed would make, in memory and written nowhere, with
// tls.second_cert_file and second_key_file read when set: for check-config,
// which must try the TLS settings before the daemon has made its files.
tls_material self_signed_material(config::tls_settings const& t, std::string const& hostname,
                                  file_opener const& open = {});

// A client context for talking to the upstream MTA (TLS 1.2+). With
// relay.upstream_starttls = "verify" it checks the upstream's chain against
// relay.upstream_ca_file (empty: the system's CAs); throws std::runtime_error
// naming the file when those cannot be loaded. Otherwise nothing is verified.
std::shared_ptr<boost::asio::ssl::context> make_client_tls(config::settings const& s);

// Per upstream connection: SNI, and with "verify" the name the certificate
// must carry (relay.upstream_tls_name, else relay.upstream_host; an address
// is matched against its IP entries). false if OpenSSL refused the name.
bool set_upstream_name(ssl_st* ssl, config::settings const& s);

}  // namespace popgate::io
