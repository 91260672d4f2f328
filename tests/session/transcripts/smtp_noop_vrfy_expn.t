# RFC 5321 §4.1.1.9 NOOP (its argument is ignored), §3.5.3 VRFY answered 252
# without revealing users, §4.1.1.7 EXPN not supported (502).
@protocol smtp
@user alice secret
S: 220 gw.test ESMTP popgate
C: NOOP
S: 250 2.0.0 Ok
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: NOOP anything
S: 250 2.0.0 Ok
C: VRFY alice
S: 252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery
C: VRFY nosuch@gw.test
S: 252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery
C: VRFY
S: 501 5.5.4 Syntax: VRFY address
C: EXPN staff
S: 502 5.5.1 Error: EXPN not supported
C: QUIT
S: 221 2.0.0 Bye
=closed
