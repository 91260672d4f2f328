# RFC 5321 §4.1.4: the session starts with EHLO/HELO; MAIL, AUTH and
# STARTTLS before it are out of sequence (503 5.5.1); RCPT and DATA ask for
# MAIL. NOOP, RSET and QUIT are valid at any time.
@protocol smtp
S: 220 gw.test ESMTP popgate
C: MAIL FROM:<a@example.org>
S: 503 5.5.1 Error: send HELO/EHLO first
C: RCPT TO:<alice@gw.test>
S: 503 5.5.1 Error: need MAIL command
C: DATA
S: 503 5.5.1 Error: need MAIL command
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 503 5.5.1 Error: send HELO/EHLO first
C: STARTTLS
S: 503 5.5.1 Error: send HELO/EHLO first
C: NOOP
S: 250 2.0.0 Ok
C: RSET
S: 250 2.0.0 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
