# The relay decision at RCPT (DESIGN "Data flow"): an outside recipient from
# a client with no SMTP AUTH, no grant and no allowed network (fresh
# database) is refused as Postfix does; a local recipient is still accepted.
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
C: RCPT TO:<x@example.org>
S: 554 5.7.1 <x@example.org>: Relay access denied
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
