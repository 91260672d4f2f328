# auth.plaintext = "never": EHLO offers only CRAM-MD5; AUTH PLAIN and LOGIN
# get 504 5.5.4, as a mechanism not offered (STARTTLS would not allow them:
# no 538); CRAM-MD5 with an initial response is a syntax error (501,
# RFC 4954 §4), and works as it should.
@protocol smtp
@config auth.plaintext = "never"
@user bob secret shared
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH CRAM-MD5
C: AUTH PLAIN AGJvYgBzZWNyZXQ=
S: 504 5.5.4 Unrecognized authentication type
C: AUTH LOGIN
S: 504 5.5.4 Unrecognized authentication type
C: AUTH CRAM-MD5 =
S: 501 5.5.2 CRAM-MD5 takes no initial response
C: AUTH CRAM-MD5
S~ 334 [A-Za-z0-9+/]+=*
C! cram bob secret
S: 235 2.7.0 Authentication successful
C: QUIT
S: 221 2.0.0 Bye
=closed
