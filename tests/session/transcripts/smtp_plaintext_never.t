# auth.plaintext = "never": EHLO offers only CRAM-MD5; AUTH PLAIN and LOGIN
# get 530 5.7.0 (RFC 4954 §4: the mechanism needs a secure channel first);
# CRAM-MD5 works.
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
S: 530 5.7.0 Must issue a STARTTLS command first
C: AUTH LOGIN
S: 530 5.7.0 Must issue a STARTTLS command first
C: AUTH CRAM-MD5
S~ 334 [A-Za-z0-9+/]+=*
C! cram bob secret
S: 235 2.7.0 Authentication successful
C: QUIT
S: 221 2.0.0 Bye
=closed
