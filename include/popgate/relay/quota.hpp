#pragma once
// Per-grant quotas (relay.grant_max_messages_per_hour and
// relay.grant_max_recipients_per_hour): how many messages and recipients
// have been relayed on a grant in the current clock hour (UTC), kept exact in
// memory on this node and added to the grant's row (sql/005) by the write
// queue once a second. At each decision the count is the larger of this
// node's and the row's, so nodes sharing the database see each other's use
// within about a second, and a restarted daemon starts from the row.
// A message is counted at the first recipient of a transaction relayed on
// the grant; each recipient relayed on it is counted.
#include "popgate/store/store.hpp"

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace popgate::relay {

struct quota_limits {
    std::size_t messages = 0;    // per hour; 0: no limit
    std::size_t recipients = 0;  // per hour; 0: no limit
};

enum class quota_result { ok, messages, recipients };

struct quota_use {
    quota_result result = quota_result::ok;
    store::unix_time hour = 0;      // the hour counted in
    std::int64_t messages = 0;      // counts after this use (or at the refusal)
    std::int64_t recipients = 0;
    bool new_message = false;       // this use counted a message
};

class quota_book {
public:
    static constexpr store::unix_time hour_seconds = 3600;
    // Entries of past hours are dropped when the book grows past this.
    static constexpr std::size_t prune_above = 65536;

    // One recipient relayed on grant `g` (its row as just read), and a
    // message when `new_message`, in the hour of `now`: counted, or refused
    // (nothing counted) when it would pass a limit. Thread-safe.
    quota_use take(store::grant const& g, bool new_message, quota_limits lim, store::unix_time now);

private:
    struct entry {
        store::unix_time hour = 0;
        std::int64_t messages = 0;
        std::int64_t recipients = 0;
    };
    std::mutex mutex_;
    std::unordered_map<std::string, entry> book_;  // by grant address
};

}  // namespace popgate::relay
