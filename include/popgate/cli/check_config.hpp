#pragma once
// `popgate check-config [FILE]`: the file parses and validates (errors with
// their line), and what the daemon would use at start is there and usable:
// the certificate and key (unless tls.self_signed will make them), the
// directories it writes, checked with the ids of server.user.
#include <string>

namespace popgate::cli {

// Prints "configuration OK (N listeners)" or one line per problem on stderr.
// Returns 0 when the daemon could start on it, 1 otherwise.
int check_config(std::string const& file);

}  // namespace popgate::cli
