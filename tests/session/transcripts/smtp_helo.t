# RFC 5321 §4.1.1.1 HELO: a one-line 250 with no extensions; HELO without a
# domain is 501; a transaction works after HELO.
@protocol smtp
@user alice secret
S: 220 gw.test ESMTP popgate
C: HELO
S: 501 5.5.4 Syntax: HELO hostname
C: HELO client.example
S: 250 gw.test
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
