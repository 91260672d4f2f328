# RFC 5321 §4.2.4: an unknown command is 500 5.5.2, as Postfix 3.7 answers
# (502 is a command known and not implemented, as EXPN);
# MAIL/RCPT without "FROM:"/"TO:" are syntax errors (501); an empty line is
# 500. The session goes on.
@protocol smtp
S: 220 gw.test ESMTP popgate
C: XYZZY
S: 500 5.5.2 Error: command not recognized
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL <a@example.org>
S: 501 5.5.4 Syntax error in parameters
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: RCPT <alice@gw.test>
S: 501 5.5.4 Syntax error in parameters
C:
S: 500 5.5.2 Error: bad syntax
C: QUIT
S: 221 2.0.0 Bye
=closed
