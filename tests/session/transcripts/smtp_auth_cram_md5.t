# RFC 4954 AUTH CRAM-MD5 (RFC 2195): a wrong secret fails (535 5.7.8), the
# shared secret succeeds; an initial response is not allowed (the server
# speaks first): a syntax error, 501 (RFC 4954 §4), not a failure counted.
@protocol smtp
@user bob secret shared
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: AUTH CRAM-MD5
S~ 334 [A-Za-z0-9+/]+=*
C! cram bob wrong
S: 535 5.7.8 Error: authentication failed
C: AUTH CRAM-MD5 Ym9i
S: 501 5.5.2 CRAM-MD5 takes no initial response
C: AUTH CRAM-MD5
S~ 334 [A-Za-z0-9+/]+=*
C! cram bob secret
S: 235 2.7.0 Authentication successful
C: QUIT
S: 221 2.0.0 Bye
=closed
