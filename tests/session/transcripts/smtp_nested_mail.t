# RFC 5321 §3.3 / §4.1.4: a second MAIL inside a transaction is refused
# (503 5.5.1), before and after a recipient; the transaction is kept.
@protocol smtp
@user alice secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: MAIL FROM:<b@example.org>
S: 503 5.5.1 Error: nested MAIL command
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: MAIL FROM:<b@example.org>
S: 503 5.5.1 Error: nested MAIL command
C: QUIT
S: 221 2.0.0 Bye
=closed
