# limits.max_bad_commands = 3: the fourth bad command still gets its own
# reply, then 421 4.7.0 and the server closes the connection (RFC 5321
# §3.8: 421 before closing).
@protocol smtp
@config limits.max_bad_commands = 3
S: 220 gw.test ESMTP popgate
C: XYZZY
S: 500 5.5.2 Error: command not recognized
C: MAIL FROM:<a@example.org>
S: 503 5.5.1 Error: send HELO/EHLO first
C: XYZZY
S: 500 5.5.2 Error: command not recognized
C: XYZZY
S: 500 5.5.2 Error: command not recognized
S: 421 4.7.0 gw.test Error: too many errors
=closed
