#pragma once
// spdlog setup and the helpers every log line uses: one line per event,
// key=value, session id first, peer bytes escaped and capped.
#include <spdlog/spdlog.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace popgate::log {

enum class destination {
    stderr_stream,  // what systemd's journal (and any supervisor) reads: "<N>message" lines
                    // when JOURNAL_STREAM names stderr, else "<time> <level> message"
    file,           // appended to; reopen() opens the path again after rotation
    syslog,         // facility mail, ident "popgate", as Postfix and Dovecot
};

// Level "trace".."error"; `file` is the path for destination::file. Replaces
// the default logger; call once, before any thread logs.
// `opened`: with destination::file, a descriptor of `file` opened for
// appending (the daemon started as root opens it through a directory it
// walked itself), taken over; -1: the path is opened here.
void setup(std::string_view level, destination to, std::string const& file, int opened = -1);

// Opens the log file's path again (SIGHUP, SIGUSR1): after `mv popgate.log
// popgate.log.1` new lines go to a new popgate.log. When the path cannot be
// opened the old file is kept and false is returned with the reason in `why`.
// Nothing to do (true) for stderr and syslog.
bool reopen(std::string& why);

// The value of one key=value field whose bytes came from outside (a client,
// a peer, the database, an error text). Written bare when it has only
// printable ASCII other than space, `"`, `\\` and `=`; otherwise in double
// quotes with `\"` and `\\`, and `=`, control and non-ASCII bytes as \xNN.
// Either way it cannot contain the text " key=" of a field of its own, so a
// parser of the line (fail2ban, a log shipper) always finds the true fields.
// Cut at `cap` bytes of the value with "...". Empty: "".
std::string field(std::string_view value, std::size_t cap = 120);

// What a log may say of a client's line that did not parse:
// "keyword=KW length=N", KW being the command keyword the protocol found at
// its start ("-" when none); never the rest, which may be a password or a
// SASL response (the client's next line after a failed AUTH exchange).
std::string line_shape(std::string_view keyword, std::size_t length);

// A short random session id (8 hex digits), unique enough to grep one session.
std::string new_session_id();

}  // namespace popgate::log
