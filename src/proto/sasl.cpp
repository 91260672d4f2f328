#include "popgate/proto/sasl.hpp"

#include "popgate/proto/ascii.hpp"

#include <array>
#include <cctype>

namespace popgate::proto {
namespace {

constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> decode_table()
{
    std::array<std::int8_t, 256> t{};
    for (auto& v : t) v = -1;
    for (std::size_t i = 0; i < alphabet.size(); ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
    return t;
}
constexpr auto table = decode_table();

}  // namespace

std::optional<sasl_mech> parse_sasl_mech(std::string_view name) noexcept
{
    if (iequals(name, "PLAIN")) return sasl_mech::plain;
    if (iequals(name, "LOGIN")) return sasl_mech::login;
    if (iequals(name, "CRAM-MD5")) return sasl_mech::cram_md5;
    return std::nullopt;
}

std::string_view sasl_mech_name(sasl_mech m) noexcept
{
    switch (m) {
    case sasl_mech::plain: return "PLAIN";
    case sasl_mech::login: return "LOGIN";
    case sasl_mech::cram_md5: return "CRAM-MD5";
    }
    return "?";
}

result<std::string> base64_decode(std::string_view in)
{
    if (in.size() % 4 != 0) return errc::bad_base64;
    std::string out;
    out.reserve(in.size() / 4 * 3);
    for (std::size_t i = 0; i < in.size(); i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; ++k) {
            char const c = in[i + static_cast<std::size_t>(k)];
            if (c == '=') {
                // Padding only at the very end, and at most two.
                if (i + 4 != in.size() || k < 2) return errc::bad_base64;
                ++pad;
                v[k] = 0;
                continue;
            }
            if (pad) return errc::bad_base64;  // data after '='
            v[k] = table[static_cast<unsigned char>(c)];
            if (v[k] < 0) return errc::bad_base64;
        }
        // RFC 4648 §3.5: the bits under the padding must be zero, so every
        // byte string has exactly one encoding.
        if ((pad == 1 && (v[2] & 3)) || (pad == 2 && (v[1] & 15))) return errc::bad_base64;
        std::uint32_t const n = (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
                                (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
        out += static_cast<char>((n >> 16) & 0xff);
        if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
        if (pad < 1) out += static_cast<char>(n & 0xff);
    }
    return out;
}

std::string base64_encode(std::string_view in)
{
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        std::uint32_t const n = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                                static_cast<unsigned char>(in[i + 2]);
        out += alphabet[(n >> 18) & 63];
        out += alphabet[(n >> 12) & 63];
        out += alphabet[(n >> 6) & 63];
        out += alphabet[n & 63];
    }
    if (i < in.size()) {
        std::uint32_t n = static_cast<unsigned char>(in[i]) << 16;
        if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
        out += alphabet[(n >> 18) & 63];
        out += alphabet[(n >> 12) & 63];
        out += i + 1 < in.size() ? alphabet[(n >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

result<plain_credentials> parse_plain(std::string_view decoded)
{
    auto const first = decoded.find('\0');
    if (first == std::string_view::npos) return errc::bad_arguments;
    auto const second = decoded.find('\0', first + 1);
    if (second == std::string_view::npos || decoded.find('\0', second + 1) != std::string_view::npos)
        return errc::bad_arguments;
    auto const authzid = decoded.substr(0, first);
    auto const authcid = decoded.substr(first + 1, second - first - 1);
    auto const passwd = decoded.substr(second + 1);
    if (authcid.empty() || passwd.empty()) return errc::bad_arguments;
    // Proxy authorization ("log in as bob, act as alice") is not offered.
    if (!authzid.empty() && authzid != authcid) return errc::bad_arguments;
    return plain_credentials{std::string(authcid), std::string(passwd)};
}

sasl_server::sasl_server(sasl_mech m, std::string cram_challenge) : mech_(m), cram_challenge_(std::move(cram_challenge)) {}

sasl_step sasl_server::fail(errc e)
{
    sasl_step s;
    s.what = sasl_step::kind::failed;
    s.error = e;
    stage_ = -1;
    return s;
}

sasl_step sasl_server::start(std::optional<std::string_view> initial)
{
    stage_ = 0;
    if (initial) {
        if (mech_ == sasl_mech::cram_md5) return fail(errc::bad_arguments);  // server speaks first
        // RFC 4954 §4 / RFC 5034 §4: "=" is an empty initial response.
        return next(*initial == "=" ? std::string_view{} : *initial);
    }
    sasl_step s;
    s.what = sasl_step::kind::challenge;
    switch (mech_) {
    case sasl_mech::plain: s.challenge = ""; break;
    case sasl_mech::login: s.challenge = "Username:"; break;
    case sasl_mech::cram_md5: s.challenge = cram_challenge_; break;
    }
    return s;
}

sasl_step sasl_server::next(std::string_view line)
{
    if (line == "*") {
        stage_ = -1;
        sasl_step s;
        s.what = sasl_step::kind::cancelled;
        return s;
    }
    if (stage_ < 0) return fail(errc::bad_arguments);
    if (line.size() > max_response * 4 / 3 + 4) return fail(errc::too_long);
    auto decoded = base64_decode(line);
    if (!decoded) return fail(errc::bad_base64);
    // The length check above is a cheap bound only: 4097 and 4098 octets
    // encode to as many characters as 4096.
    if (decoded->size() > max_response) return fail(errc::too_long);
    return on_response(*decoded);
}

sasl_step sasl_server::on_response(std::string const& d)
{
    sasl_step s;
    switch (mech_) {
    case sasl_mech::plain: {
        auto c = parse_plain(d);
        if (!c) return fail(errc::bad_arguments);
        s.what = sasl_step::kind::check_password;
        s.authcid = std::move(c->authcid);
        s.password = std::move(c->password);
        stage_ = -1;
        return s;
    }
    case sasl_mech::login:
        if (d.find('\0') != std::string::npos) return fail(errc::nul_byte);
        if (stage_ == 0) {
            if (d.empty()) return fail(errc::bad_arguments);
            login_user_ = d;
            stage_ = 1;
            s.what = sasl_step::kind::challenge;
            s.challenge = "Password:";
            return s;
        }
        if (d.empty()) return fail(errc::bad_arguments);
        s.what = sasl_step::kind::check_password;
        s.authcid = login_user_;
        s.password = d;
        stage_ = -1;
        return s;
    case sasl_mech::cram_md5: {
        // As PLAIN and LOGIN: no user name holds a NUL (and PostgreSQL's
        // text cannot take one to look it up).
        if (d.find('\0') != std::string::npos) return fail(errc::nul_byte);
        // RFC 2195: "user SP 32-lowercase-hex"; the user name may hold spaces,
        // so split at the last one.
        auto const sp = d.rfind(' ');
        if (sp == std::string::npos || sp == 0 || d.size() - sp - 1 != 32) return fail(errc::bad_arguments);
        std::string digest = d.substr(sp + 1);
        for (auto& c : digest) {
            c = ascii_lower(c);
            if (!std::isxdigit(static_cast<unsigned char>(c))) return fail(errc::bad_arguments);
        }
        s.what = sasl_step::kind::check_cram;
        s.authcid = d.substr(0, sp);
        s.digest = std::move(digest);
        stage_ = -1;
        return s;
    }
    }
    return fail(errc::bad_arguments);
}

}  // namespace popgate::proto
