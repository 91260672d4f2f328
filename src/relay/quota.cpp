#include "popgate/relay/quota.hpp"

#include <algorithm>

namespace popgate::relay {

quota_use quota_book::take(store::grant const& g, bool new_message, quota_limits lim, store::unix_time now)
{
    quota_use u;
    u.hour = now - now % hour_seconds;
    std::lock_guard lock(mutex_);
    if (book_.size() > prune_above)
        std::erase_if(book_, [&](auto const& kv) { return kv.second.hour != u.hour; });
    auto& e = book_[g.address];
    if (e.hour != u.hour) e = entry{u.hour, 0, 0};
    // What other nodes (or this one before a restart) wrote for this hour.
    if (g.quota_hour == u.hour) {
        e.messages = std::max(e.messages, g.quota_messages);
        e.recipients = std::max(e.recipients, g.quota_recipients);
    }
    u.messages = e.messages;
    u.recipients = e.recipients;
    if (new_message && lim.messages > 0 && e.messages >= static_cast<std::int64_t>(lim.messages)) {
        u.result = quota_result::messages;
        return u;
    }
    if (lim.recipients > 0 && e.recipients >= static_cast<std::int64_t>(lim.recipients)) {
        u.result = quota_result::recipients;
        return u;
    }
    u.new_message = new_message;
    u.messages = e.messages += new_message ? 1 : 0;
    u.recipients = ++e.recipients;
    return u;
}

}  // namespace popgate::relay
