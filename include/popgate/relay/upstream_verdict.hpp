#pragma once
// What the upstream MTA said to one step of a relayed transaction (MAIL and
// a RCPT, DATA, the end of data), already mapped to what the gateway tells
// its client: plain data, so that pure session code (smtp_rcpt_decided) can
// turn an upstream RCPT verdict into that RCPT's reply.
#include <string>

namespace popgate::relay {

struct upstream_verdict {
    enum class kind { ok, temporary, permanent } what = kind::temporary;
    int code = 451;           // the reply for the client
    std::string enhanced = "4.4.1";
    std::string text;         // reply text for the client
    std::string log;          // what happened, for the log line (peer bytes escaped)
    std::string said{};       // the upstream's reply text, when `code` is the upstream's own
    std::string tls{};        // the end of data: how the connection was protected ("no", "yes", "verified")
};

// The upstream could not be reached or broke off: the client tries again
// later (DESIGN: "upstream unavailable", 451 4.4.1); `why` is for the log.
inline upstream_verdict upstream_unavailable(std::string why)
{
    upstream_verdict v;
    v.text = "Error: upstream mail server unavailable, try again later";
    v.log = std::move(why);
    return v;
}

}  // namespace popgate::relay
