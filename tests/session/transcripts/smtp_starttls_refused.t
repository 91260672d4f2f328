# RFC 3207 §4: STARTTLS on a listener without TLS (tls=none) is not offered
# in EHLO and is answered 502.
@protocol smtp
@listener tls=none
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: STARTTLS
S: 502 5.5.1 Error: command not implemented
C: QUIT
S: 221 2.0.0 Bye
=closed
