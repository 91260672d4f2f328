# RFC 5321 §4.1.1.5 RSET aborts the transaction (DATA then needs MAIL again)
# and keeps the EHLO; RSET takes no argument.
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
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: RSET
S: 250 2.0.0 Ok
C: DATA
S: 503 5.5.1 Error: need MAIL command
C: RSET now
S: 501 5.5.4 Syntax: RSET
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
