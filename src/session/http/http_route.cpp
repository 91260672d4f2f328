#include "popgate/session/http/http_route.hpp"

#include "popgate/proto/ascii.hpp"

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace popgate::session {

http_reply http_text(unsigned status, std::string body)
{
    http_reply r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

namespace {

bool takes(http_route const& r, beast_http::verb m)
{
    auto const ms = r.methods();
    if (std::find(ms.begin(), ms.end(), m) != ms.end()) return true;
    return m == beast_http::verb::head && std::find(ms.begin(), ms.end(), beast_http::verb::get) != ms.end();
}

std::string allow_of(http_route const& r)
{
    std::string out;
    bool get = false;
    for (auto const m : r.methods()) {
        if (!out.empty()) out += ", ";
        out += std::string(beast_http::to_string(m));
        get = get || m == beast_http::verb::get;
    }
    if (get) out += ", HEAD";
    return out;
}

// The path-and-query of a request target in origin-form ("/p?q") or
// absolute-form ("http://host:port/p?q", "https://host?q", where the path
// may be empty); nullopt for anything else.
std::optional<std::string_view> origin_form_of(std::string_view target)
{
    // RFC 9112 §3.2: no form of request-target has a fragment.
    if (target.find('#') != target.npos) return std::nullopt;
    if (target.starts_with('/')) return target;
    auto const colon = target.find("://");
    if (colon == target.npos) return std::nullopt;
    auto const scheme = target.substr(0, colon);
    if (!proto::iequals(scheme, "http") && !proto::iequals(scheme, "https")) return std::nullopt;
    auto const rest = target.substr(colon + 3);
    auto const end = rest.find_first_of("/?");
    if (end == 0) return std::nullopt;  // no authority
    return end == rest.npos ? std::string_view{} : rest.substr(end);
}

}  // namespace

http_dispatch http_dispatch_of(std::span<http_route* const> routes, beast_http::verb method, std::string_view target)
{
    http_dispatch d;
    // RFC 9112 §3.2: origin-form is what clients send to a server that is not
    // a proxy, but a server MUST accept the absolute-form too (§3.2.2); its
    // authority is not ours to check (Host is not either). Authority-form
    // and "*" name no resource here.
    if (auto const origin = origin_form_of(target)) {
        target = *origin;
    } else {
        d.refusal = http_text(400, "bad request: the target must be a path such as /healthz\n");
        d.refusal->close = true;
        return d;
    }
    auto const q = target.find('?');
    d.path = target.substr(0, q);
    if (d.path.empty()) d.path = "/";  // "http://host?x": the path is "/" (RFC 9112 §3.2.2)
    d.query = q == target.npos ? std::string_view{} : target.substr(q + 1);
    for (auto* r : routes) {
        if (r->path() != d.path) continue;
        if (!takes(*r, method)) {
            d.refusal = http_text(405, "method not allowed\n");
            d.refusal->headers.emplace_back("Allow", allow_of(*r));
            return d;
        }
        d.route = r;
        return d;
    }
    d.refusal = http_text(404, "not found\n");
    return d;
}

std::optional<std::string_view> http_query_value(std::string_view query, std::string_view name)
{
    while (!query.empty()) {
        auto const amp = query.find('&');
        auto const pair = query.substr(0, amp);
        auto const eq = pair.find('=');
        if (pair.substr(0, eq) == name) return eq == pair.npos ? std::string_view{} : pair.substr(eq + 1);
        if (amp == query.npos) break;
        query.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

std::string http_serialize(http_reply const& r, unsigned version, bool keep_alive, bool head)
{
    auto const reason = beast_http::obsolete_reason(beast_http::int_to_status(r.status));
    std::string out = version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    out += std::to_string(r.status) + " " + std::string(reason) + "\r\n";
    out += "Content-Type: " + r.content_type + "\r\n";
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    out += "Cache-Control: no-store\r\n";
    for (auto const& [k, v] : r.headers) out += k + ": " + v + "\r\n";
    // HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes it unless told.
    if (!keep_alive) out += "Connection: close\r\n";
    else if (version == 10) out += "Connection: keep-alive\r\n";
    out += "\r\n";
    if (!head) out += r.body;
    return out;
}

namespace {

// The request's transfer codings in order, over all its Transfer-Encoding
// fields (RFC 9110 5.3: one list), lowered, parameters and empty list
// elements left out.
std::vector<std::string> transfer_codings(http_request const& req)
{
    std::vector<std::string> out;
    auto const [first, last] = req.equal_range(beast_http::field::transfer_encoding);
    for (auto f = first; f != last; ++f) {
        std::string_view rest(f->value().data(), f->value().size());
        while (!rest.empty()) {
            auto const comma = rest.find(',');
            auto item = rest.substr(0, comma);
            item = item.substr(0, item.find(';'));
            if (auto const b = item.find_first_not_of(" \t"); b != item.npos)
                out.push_back(proto::ascii_lowered(item.substr(b, item.find_last_not_of(" \t") - b + 1)));
            if (comma == rest.npos) break;
            rest.remove_prefix(comma + 1);
        }
    }
    return out;
}

// The request line at the start of `unparsed` ends in " HTTP/d.d" CRLF
// (RFC 9112 2.3): a version, if not one popgate serves.
bool well_formed_version(std::string_view unparsed)
{
    auto const crlf = unparsed.find("\r\n");
    if (crlf == unparsed.npos) return false;
    auto const line = unparsed.substr(0, crlf);
    // method SP request-target SP version: a third word is no version.
    if (std::count(line.begin(), line.end(), ' ') != 2) return false;
    auto const sp = line.rfind(' ');
    auto const v = line.substr(sp + 1);
    auto const digit = [](char c) { return c >= '0' && c <= '9'; };
    return v.size() == 8 && v.starts_with("HTTP/") && digit(v[5]) && v[6] == '.' && digit(v[7]) &&
           line.find('\n') == line.npos;
}

}  // namespace

std::optional<http_reply> http_request_refusal(http_request const& req, bool chunked)
{
    std::optional<http_reply> r;
    auto const codings = transfer_codings(req);
    if (req.version() != 10 && req.version() != 11) {
        r = http_text(505, "HTTP version not supported: HTTP/1.1 and HTTP/1.0 only\n");
    } else if (auto const hosts = req.count(beast_http::field::host); hosts > 1) {
        r = http_text(400, "bad request: more than one Host header\n");
    } else if (req.version() == 11 && hosts == 0) {
        r = http_text(400, "bad request: Host header missing\n");
    } else if (req.find(beast_http::field::transfer_encoding) != req.end() &&
               (!chunked || req.version() == 10 || codings.empty() || codings.back() != "chunked" ||
                std::count(codings.begin(), codings.end(), "chunked") > 1)) {
        r = http_text(400, "bad request: a Transfer-Encoding other than chunked, or in HTTP/1.0\n");
    } else if (codings.size() > 1) {
        // RFC 9112 6.1: chunked last, framing sound, but a coding under it
        // (gzip, chunked) popgate does not decode.
        r = http_text(501, "transfer coding not implemented: only chunked\n");
    }
    if (r) r->close = true;
    return r;
}

http_reply http_refusal_of(boost::system::error_code parse_error, std::string_view unparsed)
{
    http_reply r;
    if (parse_error == beast_http::error::header_limit) {
        r = http_text(431, "request header fields too large (limit " + std::to_string(http_max_header) + " octets)\n");
    } else if (parse_error == beast_http::error::body_limit) {
        r = http_text(413, "request body too large (limit " + std::to_string(http_max_body) + " octets)\n");
    } else if (parse_error == beast_http::error::bad_version && !well_formed_version(unparsed)) {
        // Beast says bad_version for a version it does not serve and for
        // what is no version at all: words after it, a bare LF, HTTP/11.
        r = http_text(400, "bad request: the request line must end with HTTP/1.1 or HTTP/1.0 and CRLF\n");
    } else if (parse_error == beast_http::error::bad_version) {
        r = http_text(505, "HTTP version not supported: HTTP/1.1 and HTTP/1.0 only\n");
    } else {
        r = http_text(400, "bad request: " + parse_error.message() + "\n");
    }
    r.close = true;
    return r;
}

}  // namespace popgate::session
