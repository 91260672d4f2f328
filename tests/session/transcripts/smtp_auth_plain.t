# RFC 4954 AUTH PLAIN (RFC 4616): a wrong password (535 5.7.8), then the
# exchange without initial response (an empty "334 " challenge, matched as
# "334[ ]" so that no trailing space has to survive in this file).
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
C: AUTH PLAIN AGFsaWNlAHdyb25n
S: 535 5.7.8 Error: authentication failed
C: AUTH PLAIN
S~ 334[ ]
C: AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: QUIT
S: 221 2.0.0 Bye
=closed
