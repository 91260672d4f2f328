# RFC 4954 §4: "*" cancels the exchange (501); undecodable base64 is 501
# 5.5.2; an unknown mechanism 504; AUTH without mechanism 501.
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
C: AUTH LOGIN
S: 334 VXNlcm5hbWU6
C: *
S: 501 5.7.0 Authentication cancelled
C: AUTH PLAIN
S~ 334[ ]
C: !!!!
S: 501 5.5.2 Cannot decode response
C: AUTH GSSAPI
S: 504 5.5.4 Unrecognized authentication type
C: AUTH
S: 501 5.5.4 Syntax: AUTH mechanism
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: QUIT
S: 221 2.0.0 Bye
=closed
