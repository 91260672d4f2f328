#pragma once
// TLS server contexts (OpenSSL 3 through Asio): TLS 1.2+ only, configurable
// ciphers, certificate and key checked at load, and a self-signed certificate
// made on first start for the embedded default.
#include "popgate/config/config.hpp"

#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string>

namespace popgate::io {

// Throws std::runtime_error with an administrator-readable message when the
// files are missing, unreadable, or the key does not match the certificate.
std::shared_ptr<boost::asio::ssl::context> make_server_tls(config::tls_settings const& t);

// Writes a self-signed certificate and key (0600) for `hostname` if neither
// file exists. Returns true if it made them.
bool ensure_self_signed(config::tls_settings const& t, std::string const& hostname);

// A client context for talking to the upstream MTA (TLS 1.2+).
std::shared_ptr<boost::asio::ssl::context> make_client_tls();

}  // namespace popgate::io
